"""Archive fixtures: archive stores of every kind (memory, a directory, S3 on a moto server started
by the tests) and a runtime with an archive and a zero hot window.

The S3 server is moto's ``ThreadedMotoServer`` on a free port for the whole session (offline);
each test gets its own bucket, created with boto3.
"""

from __future__ import annotations

import functools
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from engine.archive.archiver import Archiver
from engine.archive.copy import Cut
from engine.archive.stores import ArchiveStore, open_archive
from engine.connection import RedisClient
from engine.errors import ArchiveUnavailable
from engine.runtime import Runtime
from engine.settings import Settings
from projections.namespace import checkpoint_positions

S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": "us-east-1",
    "AWS_ALLOW_HTTP": "true",
}


@dataclass
class S3Server:
    """moto's S3 on 127.0.0.1:``port``; ``env`` is what a client (or a role process) needs."""

    server: object
    port: int

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return {**S3_ENV, "AWS_ENDPOINT_URL": self.endpoint}

    def bucket(self) -> str:
        """A new empty bucket; its name."""
        import boto3

        name = f"cs-test-{secrets.token_hex(6)}"
        boto3.client("s3", endpoint_url=self.endpoint, **_boto_credentials()).create_bucket(
            Bucket=name
        )
        return name

    def stop(self) -> None:
        self.server.stop()  # type: ignore[attr-defined]

    def start(self) -> None:
        """Start again on the same port (moto keeps its buckets in this process)."""
        from moto.server import ThreadedMotoServer

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        server.start()
        self.server = server


def _boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": S3_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": S3_ENV["AWS_SECRET_ACCESS_KEY"],
        "region_name": S3_ENV["AWS_REGION"],
    }


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server for the session, and the AWS_* environment pointing at it."""
    from moto.server import ThreadedMotoServer

    from tests.servers import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    s3 = S3Server(server, port)
    saved = {k: os.environ.get(k) for k in s3.env}
    os.environ.update(s3.env)
    try:
        yield s3
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        s3.stop()


def archive_url(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if kind == "memory":
        return "memory://"
    if kind == "file":
        return f"file://{tmp_path / 'archive'}"
    s3: S3Server = request.getfixturevalue("s3_server")
    return f"s3://{s3.bucket()}/clipstream"


@pytest.fixture(params=["memory", "file", "s3"])
def archive_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
def archive(archive_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> ArchiveStore:
    """An empty archive store of each kind."""
    return open_archive(archive_url(archive_kind, tmp_path, request))


@pytest.fixture
def archived_settings(settings: Settings) -> Settings:
    """Test settings with an archive and a hot window of zero: everything archivable at once."""
    return replace(settings, archive_url="memory://", hot_seconds=0)


@pytest.fixture
async def arch_runtime(redis: RedisClient, archived_settings: Settings) -> Runtime:
    """A runtime whose archive is a fresh memory store (tests swap in another kind)."""
    return await Runtime.open(archived_settings, redis)


def new_archiver(runtime: Runtime, **kwargs: object) -> Archiver:
    """An archiver on ``runtime`` that cuts a segment of any size at once."""
    consumers = functools.partial(checkpoint_positions, runtime.redis, runtime.store.keys)
    kwargs.setdefault("cut", Cut(min_entries=1, max_wait_ms=0))
    return Archiver(runtime.store, runtime.archive, consumers, **kwargs)  # type: ignore[arg-type]


class FaultyArchive:
    """An archive store whose operations fail on demand, as a store that is down or full does:
    ``failing`` names the operations that raise (``put``, ``get``, ``list``, ``delete``);
    ``manifests_fail`` fails only manifest writes (a crash between a segment and its manifest)."""

    def __init__(self, inner: ArchiveStore) -> None:
        self.inner = inner
        self.failing: set[str] = set()
        self.manifests_fail = False
        self.calls = 0

    @property
    def url(self) -> str:
        return self.inner.url

    def _check(self, op: str, name: str) -> None:
        self.calls += 1
        if op in self.failing or (op == "put" and self.manifests_fail and "/manifest/" in name):
            raise ArchiveUnavailable(f"archive {op} of {name} failed: injected fault")

    async def put_new(self, name: str, data: bytes) -> bool:
        self._check("put", name)
        return await self.inner.put_new(name, data)

    async def get(self, name: str) -> bytes | None:
        self._check("get", name)
        return await self.inner.get(name)

    async def list(self, prefix: str, after: str | None = None) -> list[str]:
        self._check("list", prefix)
        return await self.inner.list(prefix, after)

    async def delete(self, name: str) -> None:
        self._check("delete", name)
        await self.inner.delete(name)
