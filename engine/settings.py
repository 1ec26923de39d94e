"""Settings: read once from ``CLIPSTREAM_*`` at start into one frozen object.

Every value is parsed strictly; a bad one raises :class:`ConfigError` naming the variable, so a
misconfigured process fails at start instead of misbehaving later.

    CLIPSTREAM_REDIS_URL          redis://… or rediss://…; unset: the embedded in-memory store
    CLIPSTREAM_REDIS_CLUSTER      1: connect with RedisCluster                         (0)
    CLIPSTREAM_PREFIX             key prefix, so deployments can share one Redis        (cs:)
    CLIPSTREAM_PARTITIONS         partitions when the store is first created (1-1024)   (16)
    CLIPSTREAM_ADMIN_TOKEN        admin token (32+ random characters; kept as its sha256 only).
                                  On Redis the API refuses to start without it, and every role
                                  refuses a weak one; on the embedded store, unset: generated
                                  for the life of the process and printed by `serve`
    CLIPSTREAM_JWT_SECRET         HS256 secret of session tokens, same rules (never printed)
    CLIPSTREAM_ADMIN_TOKEN_FILE, CLIPSTREAM_JWT_SECRET_FILE
                                  read the secret from a file instead (Docker secrets); setting
                                  both a variable and its _FILE is an error
    CLIPSTREAM_JWT_PREVIOUS_SECRET  the JWT secret before a rotation: tokens it signed stay
                                  valid until CLIPSTREAM_JWT_PREVIOUS_UNTIL (an ISO 8601 time
                                  with its zone, or Unix seconds), required with it
    CLIPSTREAM_SESSION_MAX_TTL    the longest a session token may live, in seconds: longer
                                  ones are neither minted nor accepted (60-2592000)    (86400)
    CLIPSTREAM_RATE_KEY           requests per credential (API key; session: the account),
                                  all API processes together; N/second|minute|hour|day or off
                                                                                       (1200/minute)
    CLIPSTREAM_RATE_IP            requests per client address                          (2400/minute)
    CLIPSTREAM_RATE_AUTH_FAILURES failed authentications per client address           (30/minute)
    CLIPSTREAM_FORWARDED_ALLOW_IPS  proxies whose X-Forwarded-For names the client address
                                  (comma-separated addresses or networks); unset: the TCP peer
                                  is the client
    CLIPSTREAM_ACCESS_LOG         1: the API logs a line per request (uvicorn's access log;
                                  the request meters count them either way)             (0)
    CLIPSTREAM_QUOTA_ITEMS        items one account may hold                            (10000)
    CLIPSTREAM_QUOTA_COLLECTIONS  collections one account may hold                      (1000)
    CLIPSTREAM_QUOTA_REPORTERS    reporters one account may hold                        (100)
    CLIPSTREAM_QUOTA_WORKFLOWS    workflows one reporter may hold                       (100)
    CLIPSTREAM_QUOTA_SCHEDULES    schedules one reporter may hold (so an account holds at
                                  most reporters x workflows, reporters x schedules)    (20)
    CLIPSTREAM_SIM_LATENCY_MS     latency of the simulated providers                   (250)
    CLIPSTREAM_SIM_FAIL_RATE      share of simulated provider calls that fail, 0-1      (0)
    CLIPSTREAM_LEASE_MS           a worker's lease; an idle lease is taken over         (15000)
    CLIPSTREAM_HEARTBEAT_MS       how often a worker renews its leases                  (3000)
    CLIPSTREAM_CLAIM_INTERVAL_MS  how often a worker looks for expired leases           (5000)
    CLIPSTREAM_MAX_DELIVERIES     deliveries of one entry before it is dead-lettered    (5)
    CLIPSTREAM_WORKER_CONCURRENCY executions one worker drives at once                  (64)
    CLIPSTREAM_OWNER_CONCURRENCY  executions of one owner running at once, all workers
                                  together (set it alike on every worker); 0: no cap    (0)
    CLIPSTREAM_BATCH              log entries a projector folds and commits per batch;
                                  also the most appends a worker sends in one round trip (500)
    CLIPSTREAM_PROJECTOR_VIEWS    running executions' views a projector keeps in memory
                                  between batches instead of reading them back (~4 KB
                                  each, more for long workflows; 0: none)               (2000)
    CLIPSTREAM_PROJECTOR_LANES    partitions one projector folds at once: one batch's
                                  fold runs while another's round trips are in flight   (2)
    CLIPSTREAM_BACKGROUND_NICE    the CPU priority (nice, 0-19) the background roles lower
                                  themselves to at start: worker, projector, scheduler and
                                  archiver processes, never the API (nor `serve`, which is one
                                  process); only felt by processes sharing cores (one box, one
                                  cgroup), where the API and Redis then get a core first. 0:
                                  left as started (docs/operations.md, "CPU priority")   (10)
    CLIPSTREAM_SCHEDULER_INTERVAL_MS  how often a scheduler looks for due schedules     (1000)
    CLIPSTREAM_RETENTION_DAYS     how long a finished execution's stream is kept when
                                  there is no archive                                  (30)
    CLIPSTREAM_ARCHIVE_URL        where the archive tier lives: file:///dir, s3://bucket/prefix or
                                  memory:// (engine.archive.stores); unset: no archive, nothing that
                                  replay needs is trimmed (the embedded store: memory://)
    CLIPSTREAM_HOT_SECONDS        how long log entries, finished executions' streams, feed and
                                  ledger entries stay in Redis (archived ones beyond it)  (3600)
    CLIPSTREAM_ARCHIVE_SEGMENT_ENTRIES  a log segment is cut once this many entries wait  (2000)
    CLIPSTREAM_ARCHIVE_SEGMENT_MS  ... or once its oldest entry has waited this long     (30000)
    CLIPSTREAM_VIEW_RETENTION_SECONDS  views of executions finished longer ago are evicted
                                  (read back from the archive on demand); 0: kept      (0)
    CLIPSTREAM_WAIT_REPLICAS      replicas that must confirm an append before 202       (0)
    CLIPSTREAM_WAIT_TIMEOUT_MS    how long to wait for them before answering 503        (1000)
    CLIPSTREAM_MAX_BODY_BYTES     largest request body accepted                         (1048576)
    CLIPSTREAM_FEE_TRANSCRIPT     flat fee in coins                                     (0.01)
    CLIPSTREAM_FEE_PROCESS        flat fee in coins                                     (0.01)
    CLIPSTREAM_FEE_PROCESS_COLLECTION  flat fee in coins                                (0.01)
    CLIPSTREAM_FEE_SCHEDULE_RUN   flat fee in coins                                     (0.01)
    CLIPSTREAM_FEE_READ           fee of a read, charged after the response             (0.001)
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import TypeVar

from engine.errors import ConfigError

MICRO = 1_000_000  # micro-coins in one coin

T = TypeVar("T")

# Money (DESIGN §6): integer micro-coins inside, a JSON number of coins outside. The conversion
# rule, both ways, with no rounding anywhere:
# - in: an amount is the decimal written (a JSON number: the shortest decimal form of the double
#   it parses to), times 1,000,000; more than 6 decimals is refused, never rounded;
# - out: micro / 1,000,000 as a double, whose shortest decimal form is exactly the micro-coins
#   with the point moved 6 places, for every value up to 1e15 micro-coins (a billion coins, at
#   most 15 significant digits): engine.money.accounts.MAX_MICRO keeps amounts and balances there.
# Sums are taken over micro-coins (integers), never over coins.


def coins_to_micro(text: str) -> int:
    """Parse a coin amount ("0.01") into micro-coins exactly; more than 6 decimals is an error."""
    try:
        value = Decimal(text.strip())
    except InvalidOperation as exc:
        raise ValueError(f"not a number: {text!r}") from exc
    micro = value * MICRO
    if not value.is_finite() or micro != micro.to_integral_value():
        raise ValueError(f"not a whole number of micro-coins: {text!r}")
    return int(micro)


def micro_to_coins(micro: int) -> float:
    """Micro-coins as the JSON number of coins clients see (exact to 6 decimals)."""
    return micro / MICRO


def coins_text(micro: int) -> str:
    """Micro-coins written as coins for a message (``0.00004``, ``1``), never in exponent form."""
    sign = "-" if micro < 0 else ""
    whole, frac = divmod(abs(micro), MICRO)
    return f"{sign}{whole}.{frac:06d}".rstrip("0").rstrip(".")


@dataclass(frozen=True, slots=True)
class Fees:
    """The flat fee table, in micro-coins."""

    transcript: int = 10_000
    process: int = 10_000
    process_collection: int = 10_000
    schedule_run: int = 10_000
    read: int = 1_000

    def for_kind(self, kind: str) -> int:
        fee: int = getattr(self, kind)
        return fee


@dataclass(frozen=True, slots=True)
class Rate:
    """A rate limit: ``amount`` requests per ``seconds``."""

    amount: int
    seconds: int

    def __str__(self) -> str:
        return f"{self.amount}/{_UNIT_NAMES.get(self.seconds, f'{self.seconds}s')}"


@dataclass(frozen=True, slots=True)
class RateLimits:
    """The abuse limits of the API (api.rate_limits); None: that limit is off."""

    key: Rate | None = Rate(1_200, 60)
    ip: Rate | None = Rate(2_400, 60)
    auth_failures: Rate | None = Rate(30, 60)


@dataclass(frozen=True, slots=True)
class Quotas:
    """How many of each resource one account may hold (``403 quota_exceeded`` past it);
    workflows and schedules are counted per reporter, which the reporters' quota bounds."""

    items: int = 10_000
    collections: int = 1_000
    reporters: int = 100
    workflows: int = 100  # per reporter
    schedules: int = 20  # per reporter


_LIMITS = RateLimits()
_QUOTAS = Quotas()


@dataclass(frozen=True, slots=True)
class Settings:
    """Every knob of a clipstream process. Build with :meth:`from_env` or directly in tests."""

    redis_url: str | None = None
    redis_cluster: bool = False
    prefix: str = "cs:"
    partitions: int = 16
    partitions_explicit: bool = False
    admin_token: str | None = field(default=None, repr=False)
    jwt_secret: str | None = field(default=None, repr=False)
    jwt_previous_secret: str | None = field(default=None, repr=False)
    jwt_previous_until: int = 0  # epoch seconds
    session_max_ttl_s: int = 86_400
    sim_latency_ms: int = 250
    sim_fail_rate: float = 0.0
    lease_ms: int = 15_000
    heartbeat_ms: int = 3_000
    claim_interval_ms: int = 5_000
    max_deliveries: int = 5
    worker_concurrency: int = 64
    owner_concurrency: int = 0  # across all workers (engine.log.leases: dispatch); 0 = no cap
    batch: int = 500
    projector_views: int = 2_000  # projections.view_cache
    projector_lanes: int = 2  # projections.projector: pass_once
    background_nice: int = 10  # the nice the worker, projector, scheduler, archiver run at
    scheduler_interval_ms: int = 1_000
    retention_days: int = 30
    archive_url: str | None = None
    hot_seconds: int = 3_600
    archive_segment_entries: int = 2_000
    archive_segment_ms: int = 30_000
    view_retention_seconds: int = 0  # 0: views are kept
    wait_replicas: int = 0
    wait_timeout_ms: int = 1_000
    max_body_bytes: int = 1_048_576
    fees: Fees = field(default_factory=Fees)
    rate_limits: RateLimits = field(default_factory=RateLimits)
    forwarded_allow_ips: str | None = None
    access_log: bool = False
    quotas: Quotas = field(default_factory=Quotas)

    @property
    def embedded(self) -> bool:
        """True when no Redis URL is configured: the in-memory store is used."""
        return self.redis_url is None

    @property
    def retention_ms(self) -> int:
        return self.retention_days * 86_400_000

    @property
    def hot_ms(self) -> int:
        """The hot window: how long archived history also stays in Redis."""
        return self.hot_seconds * 1000

    @property
    def archived(self) -> bool:
        """True when an archive tier is configured (``clipstream serve`` on the embedded store
        configures ``memory://`` when none is given)."""
        return self.archive_url is not None

    @property
    def stream_retention_ms(self) -> int:
        """How long a finished execution's own stream is kept once the live projection holds its
        end (the projector sets it): the hot window when an archive holds its events (they stay
        in the partition log until archived), else the retention."""
        return max(self.hot_ms, 1) if self.archived else self.retention_ms

    @property
    def unfolded_stream_retention_ms(self) -> int:
        """How long a finished execution's stream is kept when it ends (the appender sets it):
        the retention, so a read can still fold it while the projector has not reached its end;
        the projector shortens it to :attr:`stream_retention_ms` once it has."""
        return self.retention_ms

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read ``CLIPSTREAM_*`` from ``env`` (default: the process environment)."""
        src = os.environ if env is None else env
        reader = _Reader(src)
        redis_url = reader.get("REDIS_URL", _redis_url, None)
        settings = cls(
            redis_url=redis_url,
            redis_cluster=reader.get("REDIS_CLUSTER", _bool, False),
            prefix=reader.get("PREFIX", _prefix, "cs:"),
            partitions=reader.get("PARTITIONS", _int_in(1, 1024), 16),
            partitions_explicit="CLIPSTREAM_PARTITIONS" in src,
            admin_token=reader.secret("ADMIN_TOKEN"),
            jwt_secret=reader.secret("JWT_SECRET"),
            jwt_previous_secret=reader.get("JWT_PREVIOUS_SECRET", _secret, None),
            jwt_previous_until=reader.get("JWT_PREVIOUS_UNTIL", _instant, 0),
            session_max_ttl_s=reader.get("SESSION_MAX_TTL", _int_in(60, 30 * 86_400), 86_400),
            sim_latency_ms=reader.get("SIM_LATENCY_MS", _int_in(0, 600_000), 250),
            sim_fail_rate=reader.get("SIM_FAIL_RATE", _rate, 0.0),
            lease_ms=reader.get("LEASE_MS", _int_in(500, 3_600_000), 15_000),
            heartbeat_ms=reader.get("HEARTBEAT_MS", _int_in(50, 600_000), 3_000),
            claim_interval_ms=reader.get("CLAIM_INTERVAL_MS", _int_in(50, 600_000), 5_000),
            max_deliveries=reader.get("MAX_DELIVERIES", _int_in(1, 1000), 5),
            worker_concurrency=reader.get("WORKER_CONCURRENCY", _int_in(1, 10_000), 64),
            owner_concurrency=reader.get("OWNER_CONCURRENCY", _int_in(0, 10_000), 0),
            batch=reader.get("BATCH", _int_in(1, 10_000), 500),
            projector_views=reader.get("PROJECTOR_VIEWS", _int_in(0, 10_000_000), 2_000),
            projector_lanes=reader.get("PROJECTOR_LANES", _int_in(1, 64), 2),
            background_nice=reader.get("BACKGROUND_NICE", _int_in(0, 19), 10),
            scheduler_interval_ms=reader.get(
                "SCHEDULER_INTERVAL_MS", _int_in(50, 3_600_000), 1_000
            ),
            retention_days=reader.get("RETENTION_DAYS", _int_in(1, 3650), 30),
            archive_url=reader.get("ARCHIVE_URL", _archive_url, None),
            hot_seconds=reader.get("HOT_SECONDS", _int_in(0, 365 * 86_400), 3_600),
            archive_segment_entries=reader.get(
                "ARCHIVE_SEGMENT_ENTRIES", _int_in(1, 1_000_000), 2_000
            ),
            archive_segment_ms=reader.get("ARCHIVE_SEGMENT_MS", _int_in(0, 86_400_000), 30_000),
            view_retention_seconds=reader.get(
                "VIEW_RETENTION_SECONDS", _int_in(0, 10 * 365 * 86_400), 0
            ),
            wait_replicas=reader.get("WAIT_REPLICAS", _int_in(0, 16), 0),
            wait_timeout_ms=reader.get("WAIT_TIMEOUT_MS", _int_in(1, 60_000), 1_000),
            max_body_bytes=reader.get("MAX_BODY_BYTES", _int_in(1024, 1 << 30), 1_048_576),
            fees=Fees(
                transcript=reader.get("FEE_TRANSCRIPT", _coins, 10_000),
                process=reader.get("FEE_PROCESS", _coins, 10_000),
                process_collection=reader.get("FEE_PROCESS_COLLECTION", _coins, 10_000),
                schedule_run=reader.get("FEE_SCHEDULE_RUN", _coins, 10_000),
                read=reader.get("FEE_READ", _coins, 1_000),
            ),
            rate_limits=RateLimits(
                key=reader.get("RATE_KEY", _rate_limit, _LIMITS.key),
                ip=reader.get("RATE_IP", _rate_limit, _LIMITS.ip),
                auth_failures=reader.get("RATE_AUTH_FAILURES", _rate_limit, _LIMITS.auth_failures),
            ),
            forwarded_allow_ips=reader.get("FORWARDED_ALLOW_IPS", _addresses, None),
            access_log=reader.get("ACCESS_LOG", _bool, False),
            quotas=Quotas(
                items=reader.get("QUOTA_ITEMS", _int_in(0, 10**9), _QUOTAS.items),
                collections=reader.get("QUOTA_COLLECTIONS", _int_in(0, 10**9), _QUOTAS.collections),
                reporters=reader.get("QUOTA_REPORTERS", _int_in(0, 10**9), _QUOTAS.reporters),
                workflows=reader.get("QUOTA_WORKFLOWS", _int_in(0, 10**9), _QUOTAS.workflows),
                schedules=reader.get("QUOTA_SCHEDULES", _int_in(0, 10**9), _QUOTAS.schedules),
            ),
        )
        if settings.jwt_previous_secret is not None and settings.jwt_previous_until == 0:
            raise ConfigError(
                "CLIPSTREAM_JWT_PREVIOUS_SECRET needs CLIPSTREAM_JWT_PREVIOUS_UNTIL: the end of "
                "its grace period (e.g. 2027-01-31T00:00:00Z)"
            )
        if settings.heartbeat_ms * 3 > settings.lease_ms:
            raise ConfigError(
                "CLIPSTREAM_HEARTBEAT_MS must be at most a third of CLIPSTREAM_LEASE_MS "
                f"(got {settings.heartbeat_ms} and {settings.lease_ms})"
            )
        return settings


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def secret(self, name: str) -> str | None:
        """``CLIPSTREAM_{name}``, or the content of the file ``CLIPSTREAM_{name}_FILE`` names."""
        path = self._env.get(f"CLIPSTREAM_{name}_FILE")
        if not path:
            return self.get(name, _secret, None)
        if self._env.get(f"CLIPSTREAM_{name}"):
            raise ConfigError(f"set CLIPSTREAM_{name} or CLIPSTREAM_{name}_FILE, not both")
        try:
            with open(path, encoding="utf-8") as handle:
                raw = handle.read().strip()
        except OSError as exc:
            raise ConfigError(f"CLIPSTREAM_{name}_FILE cannot be read: {exc.strerror}") from None
        try:
            return _secret(raw)
        except ValueError as exc:
            raise ConfigError(f"the secret in CLIPSTREAM_{name}_FILE is invalid: {exc}") from None

    def get(self, name: str, parse: Callable[[str], T], default: T) -> T:
        raw = self._env.get(f"CLIPSTREAM_{name}")
        if raw is None or raw == "":
            return default
        try:
            return parse(raw)
        except ValueError as exc:
            raise ConfigError(f"CLIPSTREAM_{name}={raw!r} is invalid: {exc}") from None


def _redis_url(raw: str) -> str:
    if not re.match(r"^(redis|rediss|unix)://", raw):
        raise ValueError("expected redis://, rediss:// or unix://")
    return raw


def _archive_url(raw: str) -> str:
    if not re.match(r"^(file:///.|s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/|$)|memory://$)", raw):
        raise ValueError("expected file:///absolute/dir, s3://bucket[/prefix] or memory://")
    return raw


def _bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected 1/0, true/false, yes/no or on/off")


def _prefix(raw: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,32}", raw):
        raise ValueError("1-32 characters of letters, digits and _ . : -")
    return raw


def _secret(raw: str) -> str:
    # HS256 wants a key of at least 32 bytes (RFC 7518 §3.2); admin tokens get the same floor.
    if len(raw) < 32:
        raise ValueError("must be at least 32 characters")
    return raw


_UNITS = {"second": 1, "minute": 60, "hour": 3_600, "day": 86_400}
_UNIT_NAMES = {seconds: name for name, seconds in _UNITS.items()}


def _rate_limit(raw: str) -> Rate | None:
    text = raw.strip().lower()
    if text in ("off", "0", "none"):
        return None
    match = re.fullmatch(r"(\d{1,9})\s*/\s*(second|minute|hour|day)", text)
    if match is None or int(match.group(1)) < 1:
        raise ValueError("expected N/second, N/minute, N/hour or N/day (N >= 1), or off")
    return Rate(int(match.group(1)), _UNITS[match.group(2)])


def _addresses(raw: str) -> str:
    import ipaddress

    parts = [p.strip() for p in raw.split(",") if p.strip()]
    if not parts:
        raise ValueError("expected comma-separated addresses or networks")
    for part in parts:
        if part != "*":
            try:
                ipaddress.ip_network(part, strict=False)
            except ValueError:
                raise ValueError(f"{part!r} is not an address or a network") from None
    return ",".join(parts)


def _instant(raw: str) -> int:
    from datetime import datetime

    text = raw.strip()
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("expected an ISO 8601 time with its zone, or Unix seconds") from None
    if moment.tzinfo is None:
        raise ValueError("the time needs its zone (e.g. 2027-01-31T00:00:00Z)")
    return int(moment.timestamp())


def _int_in(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ValueError("expected a whole number") from None
        if not low <= value <= high:
            raise ValueError(f"expected {low} to {high}")
        return value

    return parse


def _rate(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("expected a number from 0 to 1") from None
    if not 0.0 <= value <= 1.0:
        raise ValueError("expected a number from 0 to 1")
    return value


def _coins(raw: str) -> int:
    micro = coins_to_micro(raw)
    if micro < 0:
        raise ValueError("a fee cannot be negative")
    return micro
