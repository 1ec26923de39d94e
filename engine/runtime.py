"""The objects every role shares: settings, the Redis client, the store and resolved secrets.

``Runtime.open`` connects, fixes the partition count, and resolves the admin token and JWT secret:
a configured value wins; otherwise one is generated once and kept in the store's meta hash, so
every process of a deployment agrees on it without extra configuration.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from engine.connection import RedisClient, as_str, connect
from engine.log.store import EventStore
from engine.settings import Settings


@dataclass(slots=True)
class Runtime:
    settings: Settings
    redis: RedisClient
    store: EventStore
    admin_token: str
    jwt_secret: str
    admin_token_generated: bool

    @classmethod
    async def open(cls, settings: Settings, redis: RedisClient | None = None) -> Runtime:
        """Connect (or use ``redis``), open the store and resolve the secrets."""
        client = connect(settings) if redis is None else redis
        store = EventStore(client, settings)
        await store.open()
        admin, generated = await _secret(store, "admin_token", settings.admin_token, "adm_")
        jwt_secret, _ = await _secret(store, "jwt_secret", settings.jwt_secret, "")
        return cls(settings, client, store, admin, jwt_secret, generated)

    async def close(self) -> None:
        await self.redis.aclose()


async def _secret(
    store: EventStore, name: str, configured: str | None, prefix: str
) -> tuple[str, bool]:
    if configured is not None:
        return configured, False
    await store.redis.hsetnx(store.keys.meta, name, prefix + secrets.token_urlsafe(32))
    value = await store.redis.hget(store.keys.meta, name)
    return as_str(value), True
