"""Archive stores: where segments and manifests live, behind one small interface.

    file:///var/lib/clipstream/archive   a directory (obstore's LocalStore, plus an fsync)
    s3://bucket/prefix                   any S3-compatible bucket; the endpoint, region and
                                         credentials come from the usual AWS_* environment
                                         (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_ALLOW_HTTP, …)
    memory://                            this process's memory (the embedded store of ``serve``)

Every object is written create-only (``put_new``): a name, once written, never changes, so a
second writer of the same name learns it was there first instead of overwriting it. obstore makes
that one call on every backend (a conditional PUT on S3, a hard link on a directory). Every
failure of the store becomes :class:`engine.errors.ArchiveUnavailable`: the archiver then stops
archiving and trimming until the store answers again.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from engine.errors import ArchiveUnavailable, ConfigError


class ArchiveStore(Protocol):
    """The four operations the archive needs of an object store."""

    @property
    def url(self) -> str:
        """Where the archive is, for banners and status (no credentials in it)."""
        ...

    async def put_new(self, name: str, data: bytes) -> bool:
        """Write ``data`` under ``name`` unless it exists: True when written, False when the name
        already held an object (which is left as it was)."""
        ...

    async def get(self, name: str) -> bytes | None:
        """The object ``name``, or None when there is none."""
        ...

    async def list(self, prefix: str, after: str | None = None) -> list[str]:
        """The names under ``prefix`` (only those sorting after ``after``, when given), in name
        order."""
        ...

    async def delete(self, name: str) -> None:
        """Remove ``name`` (no error when it is already gone)."""
        ...


class ObjectArchive:
    """An :class:`ArchiveStore` on an obstore store (a directory, S3, or memory)."""

    def __init__(self, store: Any, url: str, *, directory: Path | None = None) -> None:
        import obstore  # (here, not above: ~4 MiB that a process without an archive never loads)

        self._obstore = obstore
        self._store = store
        self._url = url
        self._directory = directory  # set for a directory: written objects are fsynced

    @property
    def url(self) -> str:
        return self._url

    async def put_new(self, name: str, data: bytes) -> bool:
        try:
            await self._obstore.put_async(self._store, name, data, mode="create")
        except self._obstore.exceptions.AlreadyExistsError:
            return False
        except Exception as exc:
            raise _unavailable("write", name, exc) from exc
        if self._directory is not None:
            try:
                await asyncio.to_thread(_fsync, self._directory / name)
            except OSError as exc:
                raise _unavailable("fsync", name, exc) from exc
        return True

    async def get(self, name: str) -> bytes | None:
        try:
            result = await self._obstore.get_async(self._store, name)
            return bytes(await result.bytes_async())
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise _unavailable("read", name, exc) from exc

    async def list(self, prefix: str, after: str | None = None) -> list[str]:
        names: list[str] = []
        try:
            async for batch in self._obstore.list(self._store, prefix=prefix, offset=after):
                names.extend(str(meta["path"]) for meta in batch)
        except FileNotFoundError:
            return []
        except Exception as exc:
            raise _unavailable("list", prefix, exc) from exc
        return sorted(names)

    async def delete(self, name: str) -> None:
        try:
            await self._obstore.delete_async(self._store, name)
        except FileNotFoundError:
            return
        except Exception as exc:
            raise _unavailable("delete", name, exc) from exc


def _unavailable(what: str, name: str, exc: Exception) -> ArchiveUnavailable:
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ArchiveUnavailable(f"archive {what} of {name} failed: {detail[:300]}")


def _fsync(path: Path) -> None:
    """Make a written object durable: obstore renames a staged file into place but does not
    fsync it or its directory."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# S3 calls give up after a few quick retries: a failing store must show in `clipstream archive
# status` within seconds, and the archiver's own loop is the long retry.
_RETRY: Any = {"max_retries": 2, "retry_timeout": dt.timedelta(seconds=15)}


def _client_options() -> Any:
    # Client options given replace the ones obstore would read from the environment: carry
    # AWS_ALLOW_HTTP over (a local S3-compatible server without TLS).
    allow_http = os.environ.get("AWS_ALLOW_HTTP", "").lower() in ("1", "true", "yes")
    return {"connect_timeout": "5s", "timeout": "30s", "allow_http": allow_http}


def open_archive(url: str) -> ObjectArchive:
    """The archive store ``url`` names (ConfigError for a URL it cannot use)."""
    from obstore.store import LocalStore, MemoryStore, S3Store

    parsed = urlparse(url)
    if parsed.scheme == "file":
        directory = Path(parsed.path)
        if not directory.is_absolute():
            raise ConfigError(f"CLIPSTREAM_ARCHIVE_URL={url!r}: the path must be absolute")
        try:
            store = LocalStore(prefix=directory, mkdir=True)
        except Exception as exc:
            raise ConfigError(f"CLIPSTREAM_ARCHIVE_URL={url!r}: {exc}") from exc
        return ObjectArchive(store, url, directory=directory)
    if parsed.scheme == "memory":
        return ObjectArchive(MemoryStore(), "memory://")
    if parsed.scheme == "s3":
        try:
            s3 = S3Store.from_url(url, retry_config=_RETRY, client_options=_client_options())
        except Exception as exc:
            raise ConfigError(f"CLIPSTREAM_ARCHIVE_URL={url!r}: {exc}") from exc
        return ObjectArchive(s3, f"s3://{parsed.netloc}{parsed.path}")
    raise ConfigError(f"CLIPSTREAM_ARCHIVE_URL={url!r}: expected file://, s3:// or memory://")
