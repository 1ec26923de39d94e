"""The deployment's two secrets: the admin token and the JWT signing secret (and its predecessor).

Pure (no I/O, no clock): engine.runtime resolves the secrets once at start through
:func:`resolve`, the API verifies with what it returns.

- **Strength.** On Redis, a weak secret refuses to start, and so does a missing one in the roles
  that need it (the API). :func:`weakness` names the rule that failed, never the value: shorter
  than 32 characters, fewer than 12 distinct characters, a placeholder word (``changeme``,
  ``not-secret``, the old compose defaults …), a run of 6 or more consecutive characters
  (``012345``, ``abcdef``), or an admin token equal to the JWT secret. On the embedded store a
  missing secret is generated for the life of the process (and the admin token printed by
  ``serve``); nothing is stored.
- **The admin token is kept only as a hash**: the process compares the sha256 of what a request
  presents with the sha256 of the configured token, in constant time (:meth:`AdminToken.check`).
- **Rotation.** Session JWTs are signed with the current secret and carry its key id (``kid``, a
  hash of the secret that says nothing of it). A previous secret stays accepted, for the tokens
  it signed, until the end of its grace period (``CLIPSTREAM_JWT_PREVIOUS_SECRET`` and
  ``CLIPSTREAM_JWT_PREVIOUS_UNTIL``); an unknown ``kid`` is refused, never looked up elsewhere.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import secrets
from dataclasses import dataclass, field

from engine.errors import ConfigError

MIN_LENGTH = 32  # HS256 wants a key of at least 256 bits (RFC 7518 §3.2); tokens get the same
MIN_DISTINCT = 12
RUN = 6  # this many consecutive characters (012345, abcdef) in a row is a typed, not drawn, value
# Words of placeholders and public defaults: a value holding one was written by a person or
# copied from documentation, not drawn from a random source.
PLACEHOLDERS = (
    "changeme",
    "change-me",
    "change_me",
    "not-secret",
    "notsecret",
    "placeholder",
    "example",
    "insecure",
    "replace-me",
    "replaceme",
    "password",
    "dev-admin-token",
    "dev-jwt-secret",
)
_KID = b"clipstream-jwt-kid\x00"


def weakness(value: str) -> str | None:
    """Why ``value`` is too weak to be a secret, or None when it passes every rule."""
    if len(value) < MIN_LENGTH:
        return f"it is shorter than {MIN_LENGTH} characters"
    if len(set(value)) < MIN_DISTINCT:
        return f"it has fewer than {MIN_DISTINCT} distinct characters"
    low = value.lower()
    for word in PLACEHOLDERS:
        if word in low:
            return f"it contains the placeholder {word!r}"
    if _has_run(low):
        return f"it contains {RUN} consecutive characters in a row (like 012345 or abcdef)"
    return None


def _has_run(text: str) -> bool:
    streak = 1
    for before, after in itertools.pairwise(text):
        streak = streak + 1 if ord(after) == ord(before) + 1 and after.isalnum() else 1
        if streak >= RUN:
            return True
    return False


def generate(prefix: str = "") -> str:
    """A fresh secret: 256 random bits, url-safe."""
    return prefix + secrets.token_urlsafe(32)


def digest(value: str) -> bytes:
    """The sha256 a secret is kept as."""
    return hashlib.sha256(value.encode()).digest()


@dataclass(frozen=True, slots=True)
class AdminToken:
    """The admin token, as its hash only."""

    sha256: bytes

    def check(self, presented: str) -> bool:
        """True when ``presented`` is the admin token (constant time)."""
        return hmac.compare_digest(digest(presented), self.sha256)


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One JWT secret and its key id."""

    kid: str
    secret: str = field(repr=False)

    @classmethod
    def of(cls, secret: str) -> SigningKey:
        return cls(hashlib.sha256(_KID + secret.encode()).hexdigest()[:16], secret)


@dataclass(frozen=True, slots=True)
class JwtKeys:
    """The current signing key, and the previous one with the end of its grace (epoch seconds)."""

    current: SigningKey
    previous: SigningKey | None = None
    previous_until: int = 0

    def verifying(self, kid: str | None, now_s: int) -> str | None:
        """The secret that verifies a token with key id ``kid`` at ``now_s``; None when none does
        (an unknown ``kid``, or the previous secret past its grace). A token without ``kid``
        (minted before key ids) is verified with the current secret."""
        if kid is None or kid == self.current.kid:
            return self.current.secret
        if self.previous is not None and kid == self.previous.kid and now_s < self.previous_until:
            return self.previous.secret
        return None


@dataclass(frozen=True, slots=True)
class Resolved:
    """What :func:`resolve` settled: the admin token's hash and the JWT keys (None where a secret
    is not configured on Redis: see :meth:`require`), and the admin token and JWT secret
    themselves only when they were generated here (so ``serve`` can print the token, and the line
    that lets operator commands share its embedded store, once)."""

    admin: AdminToken | None
    jwt: JwtKeys | None
    generated_admin_token: str | None = field(default=None, repr=False)
    generated_jwt_secret: str | None = field(default=None, repr=False)

    def require(self) -> tuple[AdminToken, JwtKeys]:
        """Both secrets; a ConfigError naming what is missing (the API cannot run without them)."""
        missing = [
            name
            for name, value in (
                ("CLIPSTREAM_ADMIN_TOKEN", self.admin),
                ("CLIPSTREAM_JWT_SECRET", self.jwt),
            )
            if value is None
        ]
        if self.admin is None or self.jwt is None:
            raise ConfigError(f"{' and '.join(missing)} must be set on Redis ({HOW})")
        return self.admin, self.jwt


HOW = 'make one with: python3 -c "import secrets; print(secrets.token_urlsafe(32))"'


def resolve(
    *,
    admin_token: str | None,
    jwt_secret: str | None,
    previous_secret: str | None,
    previous_until: int,
    embedded: bool,
) -> Resolved:
    """The secrets a process runs with. On the embedded store a missing one is generated. On
    Redis a weak one is a ConfigError naming the variable and the rule it broke, and a missing
    one is left out (the roles that need it refuse to start: :meth:`Resolved.require`)."""
    generated = generated_secret = None
    if admin_token is None and embedded:
        admin_token = generated = generate("adm_")
    if jwt_secret is None and embedded:
        jwt_secret = generated_secret = generate()
    if not embedded:
        for name, value in (
            ("CLIPSTREAM_ADMIN_TOKEN", admin_token),
            ("CLIPSTREAM_JWT_SECRET", jwt_secret),
            ("CLIPSTREAM_JWT_PREVIOUS_SECRET", previous_secret),
        ):
            reason = None if value is None else weakness(value)
            if reason is not None:
                raise ConfigError(f"{name} is too weak to use on Redis: {reason} ({HOW})")
        if admin_token is not None and admin_token == jwt_secret:
            raise ConfigError(
                "CLIPSTREAM_ADMIN_TOKEN and CLIPSTREAM_JWT_SECRET are the same value: they guard "
                "different doors, give each its own"
            )
    admin = None if admin_token is None else AdminToken(digest(admin_token))
    keys = None
    if jwt_secret is not None:
        previous = None if previous_secret is None else SigningKey.of(previous_secret)
        keys = JwtKeys(SigningKey.of(jwt_secret), previous, previous_until)
    return Resolved(admin, keys, generated, generated_secret)
