"""The end-to-end suite's deployment: separate ``clipstream`` processes over HTTP, on a single
Redis and on a local Redis Cluster of three masters with one replica each.

One deployment per topology for the whole session (``deployment``, parametrized ``single`` and
``cluster``): two API processes, two workers, a projector and two schedulers, as compose would run
them, on their own private Redis (never the session's shared test server, which other tests
flush). On the cluster the processes run with ``CLIPSTREAM_REDIS_CLUSTER=1`` and
``CLIPSTREAM_WAIT_REPLICAS=1``: no 202 before a replica has the request. Tests share a deployment
but never an account, so they cannot see each other's data (the tenancy tests check exactly that).
Skipped without redis-server/redis-cli, unless CLIPSTREAM_REQUIRE_REDIS=1.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.e2e.deployment import Deployment, start_deployment
from tests.servers import (
    redis_cluster,
    redis_cluster_available,
    redis_server,
    unavailable,
)

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def _require_redis() -> None:
    if not redis_cluster_available():
        unavailable("redis-server or redis-cli is not on PATH")


@pytest.fixture(scope="session", params=["single", "cluster"])
def deployment(request: pytest.FixtureRequest) -> Iterator[Deployment]:
    """A running deployment on one topology, for every e2e test of the session."""
    _require_redis()
    with ExitStack() as stack:
        logs = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cs-e2e-")))
        if request.param == "single":
            server = stack.enter_context(redis_server())
            deployed = stack.enter_context(start_deployment("single", server.url, [server], logs))
        else:
            nodes = stack.enter_context(redis_cluster(3, replicas=1))
            url = f"redis://127.0.0.1:{nodes[0].port}/0"
            deployed = stack.enter_context(start_deployment("cluster", url, nodes, logs))
        yield deployed
