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
    """True when the redis-server binary is on PATH."""
    return shutil.which("redis-server") is not None


def redis_cluster_available() -> bool:
    """True when a local cluster can be built: redis-server, and redis-cli to assign the slots."""
    return redis_server_available() and shutil.which("redis-cli") is not None


def require_real_redis() -> bool:
    """CI sets CLIPSTREAM_REQUIRE_REDIS=1: a missing redis-server then fails instead of skipping."""
    return os.environ.get("CLIPSTREAM_REQUIRE_REDIS") == "1"


CLUSTER_BUS_OFFSET = 10_000  # a cluster node also listens on its port + 10000


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port(*, cluster: bool = False) -> int:
    """A port free right now on 127.0.0.1; for a cluster node, its bus port must be free too
    (and exist: ephemeral ports above 55535 have no bus port, so redis-server would refuse)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if not cluster:
            return port
        bus = port + CLUSTER_BUS_OFFSET
        if bus <= 65_535 and _bindable(bus):
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

    def __init__(
        self,
        directory: Path,
        *,
        appendonly: bool = False,
        cluster: bool = False,
        replica_of: RedisServer | None = None,
    ) -> None:
        self.directory = directory
        self.port = free_port(cluster=cluster)
        self.appendonly = appendonly
        self.cluster = cluster
        self.replica_of = replica_of
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
            # A replica's first sync starts at once (Redis waits 5 s for more replicas by default).
            "--repl-diskless-sync-delay", "0",
        ]  # fmt: skip
        if self.replica_of is not None:
            args += ["--replicaof", "127.0.0.1", str(self.replica_of.port)]
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
def redis_replicated() -> Iterator[tuple[RedisServer, RedisServer]]:
    """A primary and one replica of it, the replica's first sync done."""
    with tempfile.TemporaryDirectory(prefix="cs-repl-") as tmp:
        primary = RedisServer(Path(tmp) / "primary")
        replica = RedisServer(Path(tmp) / "replica", replica_of=primary)
        try:
            for server in (primary, replica):
                server.directory.mkdir()
                server.start()
            _wait_replica_synced(replica.port)
            yield primary, replica
        finally:
            replica.stop()
            primary.stop()


def _wait_replica_synced(port: int, deadline_s: float = 20.0) -> None:
    client = redis.Redis(port=port)
    end = time.monotonic() + deadline_s
    try:
        while client.info("replication").get("master_link_status") != "up":
            if time.monotonic() > end:
                raise RuntimeError("the replica did not sync with its primary")
            time.sleep(0.05)
    finally:
        client.close()


@contextmanager
def redis_cluster(masters: int = 3) -> Iterator[list[RedisServer]]:
    """A local cluster of ``masters`` masters, no replicas, all 16384 slots assigned."""
    with tempfile.TemporaryDirectory(prefix="cs-cluster-") as tmp:
        nodes: list[RedisServer] = []
        taken: set[int] = set()
        while len(nodes) < masters:
            node = RedisServer(Path(tmp), cluster=True)
            ports = {node.port, node.port + CLUSTER_BUS_OFFSET}
            if not ports & taken:  # free_port can hand out the same port twice in a row
                taken |= ports
                nodes.append(node)
        try:
            for node in nodes:
                node.start()
            addresses = [f"127.0.0.1:{n.port}" for n in nodes]
            create = ["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas", "0"]
            done = subprocess.run(
                [*create, "--cluster-yes"], capture_output=True, text=True, timeout=30
            )
            if done.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed: {done.stdout}{done.stderr}")
            # Every node must agree before a client may route by any of them.
            for node in nodes:
                _wait_cluster_ok(node.port)
            yield nodes
        finally:
            for node in nodes:
                node.stop()


def _wait_cluster_ok(port: int, deadline_s: float = 20.0) -> None:
    """Until the node at ``port`` sees every slot served (``cluster_state:ok``)."""
    client = redis.Redis(port=port)
    end = time.monotonic() + deadline_s
    try:
        while True:
            info = client.cluster("INFO")
            state = info.get("cluster_state") if isinstance(info, dict) else info
            if state in ("ok", b"ok"):
                return
            if time.monotonic() > end:
                raise RuntimeError(f"cluster did not become ready: {info!r}")
            time.sleep(0.05)
    finally:
        client.close()
