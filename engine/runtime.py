"""The objects every role shares: settings, the Redis client, the store and resolved secrets.

``Runtime.open`` connects, fixes the partition count, and resolves the admin token and JWT
secret (engine.credentials): on the embedded store a missing one is generated for the life of the
process; on Redis a weak one refuses to start, and a missing one refuses to start the roles that
need it (:meth:`Runtime.require_secrets`, called by ``api`` and ``serve``). Nothing secret is ever
written to Redis, and the admin token is kept only as its hash. It also opens the archive store
when ``CLIPSTREAM_ARCHIVE_URL`` names one (``archive``; None without: engine.archive).
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.archive.stores import ArchiveStore, open_archive
from engine.connection import RedisClient, connect
from engine.credentials import AdminToken, JwtKeys, Resolved, resolve
from engine.errors import ConfigError
from engine.log.store import EventStore
from engine.settings import Settings


@dataclass(slots=True)
class Runtime:
    settings: Settings
    redis: RedisClient
    store: EventStore
    secrets: Resolved
    archive: ArchiveStore | None = None

    @classmethod
    async def open(cls, settings: Settings, redis: RedisClient | None = None) -> Runtime:
        """Resolve the secrets (ConfigError for a weak one), connect (or use ``redis``) and open
        the store."""
        resolved = resolve(
            admin_token=settings.admin_token,
            jwt_secret=settings.jwt_secret,
            previous_secret=settings.jwt_previous_secret,
            previous_until=settings.jwt_previous_until,
            embedded=settings.embedded,
        )
        client = connect(settings) if redis is None else redis
        store = EventStore(client, settings)
        await store.open()
        archive = open_archive(settings.archive_url) if settings.archive_url else None
        return cls(settings, client, store, resolved, archive)

    def require_secrets(self) -> None:
        """ConfigError unless both secrets are set: the API refuses to start without them."""
        self.secrets.require()

    @property
    def admin_token(self) -> AdminToken:
        """The admin token, as its hash (ConfigError when it is not set)."""
        if self.secrets.admin is None:
            raise ConfigError("CLIPSTREAM_ADMIN_TOKEN must be set on Redis to guard /admin")
        return self.secrets.admin

    @property
    def jwt_keys(self) -> JwtKeys:
        """The keys session JWTs are signed and verified with (ConfigError when not set)."""
        if self.secrets.jwt is None:
            raise ConfigError("CLIPSTREAM_JWT_SECRET must be set on Redis to mint or check tokens")
        return self.secrets.jwt

    @property
    def generated_admin_token(self) -> str | None:
        """The admin token itself, only when this process generated it (the embedded store)."""
        return self.secrets.generated_admin_token

    @property
    def generated_jwt_secret(self) -> str | None:
        """The JWT secret itself, only when this process generated it (the embedded store)."""
        return self.secrets.generated_jwt_secret

    async def close(self) -> None:
        await self.redis.aclose()
