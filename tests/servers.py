"""Private redis-server processes for the tests: a single server and a 3-master cluster.

Never the shared server on 6379: each test session starts its own on free ports, in a temp
directory, and stops it at the end.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis


def redis_server_available() -> bool:
    return shutil.which("redis-server") is not None


def require_real_redis() -> bool:
    """CI sets CLIPSTREAM_REQUIRE_REDIS=1: a missing redis-server then fails instead of skipping."""
    return os.environ.get("CLIPSTREAM_REQUIRE_REDIS") == "1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_ready(port: int, deadline_s: float = 10.0) -> None:
    client = redis.Redis(port=port)
    end = time.monotonic() + deadline_s
    while True:
        try:
            if client.ping():
                client.close()
                return
        except redis.ConnectionError:
            if time.monotonic() > end:
                raise
            time.sleep(0.02)


class RedisServer:
    """One redis-server on a free port; ``restart`` keeps its data directory (AOF restarts)."""

    def __init__(self, directory: Path, *, appendonly: bool = False, cluster: bool = False) -> None:
        self.directory = directory
        self.port = free_port()
        self.appendonly = appendonly
        self.cluster = cluster
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [
            "redis-server",
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "always",
            "--daemonize", "no",
            "--loglevel", "warning",
        ]  # fmt: skip
        if self.cluster:
            args += [
                "--cluster-enabled", "yes",
                "--cluster-config-file", f"nodes-{self.port}.conf",
                "--cluster-node-timeout", "5000",
            ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_ready(self.port)

    def stop(self, *, kill: bool = False) -> None:
        if self.proc is None:
            return
        if kill:
            self.proc.kill()
        else:
            self.proc.terminate()
        self.proc.wait(timeout=10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


@contextmanager
def redis_server(*, appendonly: bool = False) -> Iterator[RedisServer]:
    with tempfile.TemporaryDirectory(prefix="cs-redis-") as tmp:
        server = RedisServer(Path(tmp), appendonly=appendonly)
        server.start()
        try:
            yield server
        finally:
            server.stop()


@contextmanager
def redis_cluster(masters: int = 3) -> Iterator[list[RedisServer]]:
    """A local cluster of ``masters`` masters, no replicas, all 16384 slots assigned."""
    with tempfile.TemporaryDirectory(prefix="cs-cluster-") as tmp:
        nodes = [RedisServer(Path(tmp), cluster=True) for _ in range(masters)]
        try:
            for node in nodes:
                node.start()
            subprocess.run(
                [
                    "redis-cli", "--cluster", "create",
                    *(f"127.0.0.1:{n.port}" for n in nodes),
                    "--cluster-replicas", "0", "--cluster-yes",
                ],  # fmt: skip
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=30,
            )
            _wait_cluster_ok(nodes[0].port)
            yield nodes
        finally:
            for node in nodes:
                node.stop()


def _wait_cluster_ok(port: int, deadline_s: float = 20.0) -> None:
    client = redis.Redis(port=port)
    end = time.monotonic() + deadline_s
    while True:
        info = client.execute_command("CLUSTER", "INFO")
        text = info.decode() if isinstance(info, bytes) else str(info)
        if "cluster_state:ok" in text:
            client.close()
            return
        if time.monotonic() > end:
            raise RuntimeError(f"cluster did not become ready: {text}")
        time.sleep(0.05)
