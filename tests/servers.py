"""Private redis-server processes for the tests: a single server, a primary with a replica, and
a local cluster (3 masters, with or without a replica each, for the failover tests).

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
from typing import NoReturn

import pytest
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


def unavailable(message: str) -> NoReturn:
    """Skip for want of ``message``'s tool; fail under CLIPSTREAM_REQUIRE_REDIS=1 (CI), where
    every tool is installed and a skip would hide a broken setup."""
    if require_real_redis():
        pytest.fail(f"CLIPSTREAM_REQUIRE_REDIS=1 but {message}")
    pytest.skip(message)


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
        node_timeout_ms: int = 5_000,
    ) -> None:
        self.directory = directory
        self.port = free_port(cluster=cluster)
        self.node_timeout_ms = node_timeout_ms
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
                "--cluster-node-timeout", str(self.node_timeout_ms),
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
def redis_cluster(
    masters: int = 3, *, replicas: int = 0, node_timeout_ms: int = 5_000
) -> Iterator[list[RedisServer]]:
    """A local cluster of ``masters`` masters, each with ``replicas`` replicas, all 16384 slots
    assigned, every replica in sync. Nodes keep their ``nodes-{port}.conf`` in one directory, so
    a node stopped and started again rejoins the cluster it knew."""
    with tempfile.TemporaryDirectory(prefix="cs-cluster-") as tmp:
        nodes: list[RedisServer] = []
        taken: set[int] = set()
        while len(nodes) < masters * (1 + replicas):
            node = RedisServer(Path(tmp), cluster=True, node_timeout_ms=node_timeout_ms)
            ports = {node.port, node.port + CLUSTER_BUS_OFFSET}
            if not ports & taken:  # free_port can hand out the same port twice in a row
                taken |= ports
                nodes.append(node)
        try:
            for node in nodes:
                node.start()
            addresses = [f"127.0.0.1:{n.port}" for n in nodes]
            create = [
                "redis-cli", "--cluster", "create", *addresses,
                "--cluster-replicas", str(replicas), "--cluster-yes",
            ]  # fmt: skip
            done = subprocess.run(create, capture_output=True, text=True, timeout=60)
            if done.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed: {done.stdout}{done.stderr}")
            # Every node must agree before a client may route by any of them.
            for node in nodes:
                _wait_cluster_ok(node.port)
            if replicas:
                wait_cluster_settled(nodes, masters=masters)
            yield nodes
        finally:
            for node in nodes:
                node.stop(kill=True)


def cluster_roles(node: RedisServer) -> dict[str, str]:
    """What ``node`` knows of the cluster: ``{"127.0.0.1:port": "master" | "slave" | "fail"}``
    for every node it sees (a failed node is ``fail`` whatever it was)."""
    client = redis.Redis(port=node.port, socket_timeout=5)
    try:
        text = client.execute_command("CLUSTER", "NODES")  # type: ignore[no-untyped-call]
    finally:
        client.close()
    if isinstance(text, bytes):
        text = text.decode()
    roles: dict[str, str] = {}
    for line in str(text).splitlines():
        fields = line.split()
        address = fields[1].split("@", 1)[0]
        flags = fields[2].split(",")
        if "fail" in flags or "fail?" in flags:
            roles[address] = "fail"
        else:
            roles[address] = "master" if "master" in flags else "slave"
    return roles


def role_of(node: RedisServer) -> tuple[str, str]:
    """The node's own replication view: (``master`` | ``slave``, its master's link status)."""
    client = redis.Redis(port=node.port, socket_timeout=5)
    try:
        info = client.info("replication")
    finally:
        client.close()
    return str(info.get("role")), str(info.get("master_link_status", ""))


def replicas_of(master: RedisServer, nodes: list[RedisServer]) -> list[RedisServer]:
    """The nodes replicating ``master`` now."""
    client = redis.Redis(port=master.port, socket_timeout=5)
    try:
        info = client.info("replication")
    finally:
        client.close()
    ports = {
        int(value["port"])
        for key, value in info.items()
        if key.startswith("slave") and isinstance(value, dict)
    }
    return [n for n in nodes if n.port in ports]


def wait_failover(
    nodes: list[RedisServer], killed: RedisServer, replica: RedisServer, deadline_s: float = 60.0
) -> None:
    """After the master ``killed`` died: until ``replica`` has been promoted, every live node sees
    ``killed`` failed, and every live node serves all slots again (``cluster_state:ok``)."""
    end = time.monotonic() + deadline_s
    gone = f"127.0.0.1:{killed.port}"
    live = [n for n in nodes if n.proc is not None and n is not killed]
    while True:
        try:
            promoted = role_of(replica)[0] == "master"
            seen = all(cluster_roles(n).get(gone) == "fail" for n in live)
        except redis.RedisError:
            promoted = seen = False
        if promoted and seen:
            for node in live:
                _wait_cluster_ok(node.port, max(1.0, end - time.monotonic()))
            return
        if time.monotonic() > end:
            raise RuntimeError(f"no failover of {gone} to 127.0.0.1:{replica.port}")
        time.sleep(0.1)


def wait_cluster_settled(
    nodes: list[RedisServer], *, masters: int, deadline_s: float = 60.0
) -> None:
    """Until the live nodes agree on ``masters`` masters, no node is seen failed, and every
    replica's link to its master is up (its first sync done)."""
    end = time.monotonic() + deadline_s
    while True:
        live = [n for n in nodes if n.proc is not None]
        try:
            views = [cluster_roles(n) for n in live]
            synced = all(role_of(n) in {("master", ""), ("slave", "up")} for n in live)
        except redis.RedisError:
            views, synced = [], False
        settled = (
            bool(views)
            and synced
            and all(
                list(v.values()).count("master") == masters and "fail" not in v.values()
                for v in views
            )
        )
        if settled:
            return
        if time.monotonic() > end:
            raise RuntimeError(f"the cluster did not settle: {views}")
        time.sleep(0.1)


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
