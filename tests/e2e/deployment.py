"""A clipstream deployment for end-to-end tests: role processes over one Redis topology, and what a
test needs to drive and inspect it (the API's base URLs, a Redis client, the key names)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from redis.cluster import RedisCluster

from engine.log.keys import Keys
from tests.processes import Role, role_env, wait_http
from tests.servers import RedisServer, free_port

# What compose runs, scaled out: every role twice but the projector.
ROLES = ["api", "api", "worker", "worker", "projector", "scheduler", "scheduler"]
PARTITIONS = 16  # on a cluster, spread over every master


@dataclass
class Deployment:
    """Role processes over ``nodes`` (one server, or a cluster's nodes)."""

    topology: str
    url: str
    nodes: list[RedisServer]
    env: dict[str, str]
    logs: Path
    roles: list[Role] = field(default_factory=list)
    api_bases: list[str] = field(default_factory=list)

    @property
    def cluster(self) -> bool:
        return self.topology == "cluster"

    @property
    def keys(self) -> Keys:
        return Keys(self.env["CLIPSTREAM_PREFIX"], PARTITIONS)

    def redis(self) -> Any:
        """A synchronous client of the deployment's Redis (a cluster client on a cluster)."""
        if self.cluster:
            live = next(n for n in self.nodes if n.proc is not None)
            return RedisCluster(host="127.0.0.1", port=live.port)
        return redis.Redis.from_url(self.url)

    def start(self, role: str, **overrides: str) -> Role:
        """One more role process (``api`` gets a free port and is waited for)."""
        env = {**self.env, **overrides}
        args = [role]
        port = 0
        if role == "api":
            port = free_port()
            args += ["--port", str(port)]
        started = Role(args, env, self.logs / f"{len(self.roles)}-{role}.log")
        self.roles.append(started)
        if role == "api":
            base = f"http://127.0.0.1:{port}"
            wait_http(f"{base}/healthz", role=started)
            self.api_bases.append(base)
        else:  # its store opened, its loop running: a fault from now on meets a running role
            _wait_output(started, f"{role} ")
        return started

    def stop(self, role: Role) -> None:
        """Stop one role process started for a test (SIGTERM) and forget it."""
        role.terminate()
        self.roles.remove(role)

    def check_alive(self) -> None:
        """AssertionError with its log when a role process has exited."""
        for role in self.roles:
            code = role.proc.poll()
            if code is not None and role.args[0] in ("api", "worker", "projector", "scheduler"):
                raise AssertionError(f"{role.args} exited with {code}:\n{role.output()[-4000:]}")

    def logs_of(self, name: str) -> str:
        return "\n".join(r.output() for r in self.roles if r.args[0] == name)


def _wait_output(role: Role, text: str, deadline_s: float = 60.0) -> None:
    """Until the role has logged ``text`` followed by ``started``."""
    end = time.monotonic() + deadline_s
    while not any(text in line and "started" in line for line in role.output().splitlines()):
        if role.proc.poll() is not None or time.monotonic() > end:
            raise RuntimeError(f"{role.args} did not start:\n{role.output()[-4000:]}")
        time.sleep(0.05)


def deployment_env(url: str, *, cluster: bool, **overrides: str) -> dict[str, str]:
    """The environment of every role: a prefix of its own, short leases, fast providers and
    schedulers; on a cluster, no 202 before a replica has the request."""
    env = role_env(
        url,
        CLIPSTREAM_PREFIX=f"e2e{secrets.token_hex(3)}:",
        CLIPSTREAM_PARTITIONS=str(PARTITIONS),
        CLIPSTREAM_SIM_LATENCY_MS="20",
        CLIPSTREAM_SCHEDULER_INTERVAL_MS="100",
    )
    if cluster:
        env.update(
            CLIPSTREAM_REDIS_CLUSTER="1",
            CLIPSTREAM_WAIT_REPLICAS="1",
            CLIPSTREAM_WAIT_TIMEOUT_MS="2000",
        )
    env.update(overrides)
    return env


@contextmanager
def start_deployment(
    topology: str,
    url: str,
    nodes: list[RedisServer],
    logs: Path,
    roles: list[str] = ROLES,
    **overrides: str,
) -> Iterator[Deployment]:
    """Start ``roles`` over the Redis at ``url``; stop them all at the end (SIGTERM)."""
    env = deployment_env(url, cluster=topology == "cluster", **overrides)
    deployment = Deployment(topology, url, nodes, env, logs)
    with ExitStack() as stack:
        stack.callback(lambda: [r.terminate() for r in reversed(deployment.roles)])
        # The first API process creates the store (partitions, groups) before the others start.
        deployment.start(roles[0])
        for role in roles[1:]:
            deployment.start(role)
        yield deployment
