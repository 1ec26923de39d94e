"""What the parts of the event store share: the Redis client, the settings, the key names, and
the three ways they run a Lua script.

Every part (engine.log.event_log, admission, leases, blobs) holds the one :class:`StoreContext` of
its :class:`engine.log.store.EventStore`, so the key names that ``EventStore.open`` settles are the
ones every part uses. A Redis error never leaves a part as itself: it becomes StoreUnavailable
here (or, for one call of a pipeline, the reply that call failed with).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import NoScriptError, RedisError

from engine.connection import RedisClient
from engine.errors import StoreUnavailable
from engine.log.keys import Keys
from engine.settings import Settings

# One script call: its KEYS and its ARGV.
ScriptCall = tuple[list[str], list[Any]]


@dataclass(slots=True)
class StoreContext:
    """The client, the settings and the key names of one store.

    ``keys`` is fixed by :meth:`engine.log.store.EventStore.open` (the partition count a store was
    created with wins over the configured default), before any part uses it.
    """

    redis: RedisClient
    settings: Settings
    keys: Keys

    def script(self, text: str) -> Any:
        """``text`` registered with the client: callable as ``script(keys=…, args=…)``, and its
        ``sha`` is what :meth:`pipelined` sends."""
        return self.redis.register_script(text)

    async def run(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        """Run a registered script once: its reply. StoreUnavailable when Redis fails it."""
        try:
            return await script(keys=keys, args=args)
        except RedisError as exc:
            raise StoreUnavailable(f"Redis script failed: {exc}") from exc

    async def pipelined(self, script: Any, calls: Sequence[ScriptCall]) -> list[Any]:
        """Run ``script`` once per ``(keys, args)`` in one pipelined round trip: each call's reply,
        or the RedisError it failed with. StoreUnavailable when the round trip itself failed."""
        pipe = self.redis.pipeline(transaction=False)
        for keys, args in calls:
            # EVALSHA straight into the pipeline: redis-py's Script in a pipeline would first
            # ask SCRIPT EXISTS on every execute (one more round trip each time). A NOSCRIPT
            # answer (after a restart or SCRIPT FLUSH) is retried below through the Script.
            pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
        try:
            replies = await pipe.execute(raise_on_error=False)
        except RedisError as exc:
            raise StoreUnavailable(f"Redis pipeline failed: {exc}") from exc
        out: list[Any] = []
        for (keys, args), reply in zip(calls, replies, strict=True):
            if isinstance(reply, NoScriptError):
                try:
                    reply = await script(keys=keys, args=args)
                except RedisError as exc:
                    reply = exc
            out.append(reply)
        return out

    async def run_and_wait(self, text: str, keys: list[str], args: list[Any]) -> tuple[Any, int]:
        """Run the script ``text``, then WAIT for replicas on the same connection: (reply, how
        many replicas confirmed it). StoreUnavailable when Redis fails either.

        WAIT only covers the writes of the connection it is sent on, so the script and the WAIT
        go in one pipeline: redis-py runs a pipeline on one connection, and a cluster pipeline on
        one connection per node, with WAIT pinned to the node that owns the keys' slot (left to
        itself RedisCluster would send WAIT to every primary and add the answers up).
        """
        pipe = self.redis.pipeline(transaction=False)
        pipe.execute_command("EVAL", text, len(keys), *keys, *args)
        wait: list[Any] = ["WAIT", self.settings.wait_replicas, self.settings.wait_timeout_ms]
        if hasattr(self.redis, "get_node_from_key"):  # RedisCluster
            pipe.execute_command(*wait, target_nodes=self.redis.get_node_from_key(keys[0]))
        else:
            pipe.execute_command(*wait)
        try:
            reply, replicas = await pipe.execute()
        except RedisError as exc:
            raise StoreUnavailable(f"Redis script failed: {exc}") from exc
        return reply, int(replicas)

    def check_replicas(self, replicated: int) -> None:
        """StoreUnavailable when fewer replicas than ``wait_replicas`` confirmed a write."""
        n = self.settings.wait_replicas
        if replicated < n:
            raise StoreUnavailable(f"only {replicated} of {n} replicas confirmed the write")
