"""The secrets' rules (engine.credentials) and their settings: weak values refused by name of the
rule (never echoing the value), missing ones generated only on the embedded store, the admin
token kept as a hash, and JWT key rotation with a grace period."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from engine.credentials import JwtKeys, SigningKey, generate, resolve, weakness
from engine.errors import ConfigError
from engine.settings import Rate, RateLimits, Settings

STRONG_A = generate("adm_")
STRONG_B = generate()


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        ("x7Kq", "shorter than 32"),
        ("ab" * 20, "fewer than 12 distinct"),
        ("dev-admin-token-not-secret-0123456789", "placeholder"),
        ("dev-jwt-secret-not-secret-0123456789", "placeholder"),
        ("Xq9-changeme-Zr7wLp2Km4Vn8Bt6Yh3Jd", "placeholder"),
        ("adm_test_token_0123456789abcdefghij", "consecutive"),
        ("Kq-hello-abcdef-Zr7wLp2Km4Vn8Bt6Yh3", "consecutive"),
    ],
)
def test_weak_values_are_named_by_the_rule_they_break(value: str, rule: str) -> None:
    reason = weakness(value)
    assert reason is not None
    assert rule in reason
    assert value not in reason


def test_generated_secrets_pass() -> None:
    assert all(weakness(generate()) is None for _ in range(200))


def test_on_redis_a_weak_secret_refuses_and_the_message_never_echoes_it() -> None:
    weak = "dev-jwt-secret-not-secret-0123456789"
    with pytest.raises(ConfigError) as refused:
        resolve(
            admin_token=STRONG_A,
            jwt_secret=weak,
            previous_secret=None,
            previous_until=0,
            embedded=False,
        )
    assert "CLIPSTREAM_JWT_SECRET" in str(refused.value)
    assert weak not in str(refused.value)


def test_on_redis_the_same_value_for_both_secrets_is_refused() -> None:
    with pytest.raises(ConfigError, match="same value"):
        resolve(
            admin_token=STRONG_A,
            jwt_secret=STRONG_A,
            previous_secret=None,
            previous_until=0,
            embedded=False,
        )


def test_on_redis_missing_secrets_are_never_generated_and_the_api_refuses() -> None:
    resolved = resolve(
        admin_token=None, jwt_secret=None, previous_secret=None, previous_until=0, embedded=False
    )
    assert (resolved.admin, resolved.jwt, resolved.generated_admin_token) == (None, None, None)
    with pytest.raises(ConfigError, match="CLIPSTREAM_ADMIN_TOKEN and CLIPSTREAM_JWT_SECRET"):
        resolved.require()


def test_embedded_generates_for_the_process_and_keeps_only_the_hash() -> None:
    resolved = resolve(
        admin_token=None, jwt_secret=None, previous_secret=None, previous_until=0, embedded=True
    )
    token = resolved.generated_admin_token
    assert token is not None
    assert token.startswith("adm_")
    admin, _ = resolved.require()
    assert admin.check(token)
    assert not admin.check(token + "x")
    assert token not in repr(resolved)  # never in a log line or a traceback
    configured = resolve(
        admin_token=STRONG_A,
        jwt_secret=STRONG_B,
        previous_secret=None,
        previous_until=0,
        embedded=True,
    )
    assert configured.generated_admin_token is None  # serve prints a token only when it made one
    assert configured.admin is not None
    assert configured.admin.check(STRONG_A)
    assert STRONG_A not in repr(configured)


def test_rotation_accepts_the_previous_key_only_during_its_grace() -> None:
    old, new = SigningKey.of(STRONG_A), SigningKey.of(STRONG_B)
    assert old.kid != new.kid
    assert STRONG_A not in old.kid
    keys = JwtKeys(new, old, previous_until=1_000)
    assert keys.verifying(new.kid, 5_000) == STRONG_B
    assert keys.verifying(None, 5_000) == STRONG_B  # tokens minted before key ids
    assert keys.verifying(old.kid, 999) == STRONG_A
    assert keys.verifying(old.kid, 1_000) is None
    assert keys.verifying("someone-elses-kid", 0) is None


def test_settings_read_secrets_from_files_and_refuse_both_forms(tmp_path: Path) -> None:
    path = tmp_path / "jwt"
    path.write_text(STRONG_B + "\n")
    settings = Settings.from_env({"CLIPSTREAM_JWT_SECRET_FILE": str(path)})
    assert settings.jwt_secret == STRONG_B
    with pytest.raises(ConfigError, match="not both"):
        Settings.from_env(
            {"CLIPSTREAM_JWT_SECRET_FILE": str(path), "CLIPSTREAM_JWT_SECRET": STRONG_A}
        )
    with pytest.raises(ConfigError, match="cannot be read"):
        Settings.from_env({"CLIPSTREAM_ADMIN_TOKEN_FILE": str(tmp_path / "missing")})


def test_settings_of_rotation_and_limits() -> None:
    settings = Settings.from_env(
        {
            "CLIPSTREAM_JWT_PREVIOUS_SECRET": STRONG_A,
            "CLIPSTREAM_JWT_PREVIOUS_UNTIL": "2027-01-31T00:00:00Z",
            "CLIPSTREAM_RATE_KEY": "20/second",
            "CLIPSTREAM_RATE_IP": "off",
        }
    )
    until = datetime(2027, 1, 31, tzinfo=UTC)
    assert settings.jwt_previous_until == int(until.timestamp())
    assert STRONG_A not in repr(settings)
    assert settings.rate_limits.key == Rate(20, 1)
    assert settings.rate_limits.ip is None
    assert settings.rate_limits.auth_failures == RateLimits().auth_failures == Rate(30, 60)
    with pytest.raises(ConfigError, match="CLIPSTREAM_JWT_PREVIOUS_UNTIL"):
        Settings.from_env({"CLIPSTREAM_JWT_PREVIOUS_SECRET": STRONG_A})
    with pytest.raises(ConfigError, match="zone"):
        Settings.from_env({"CLIPSTREAM_JWT_PREVIOUS_UNTIL": "2027-01-31T00:00:00"})
    for bad in ("lots", "0/minute", "5/fortnight"):
        with pytest.raises(ConfigError, match="CLIPSTREAM_RATE_KEY"):
            Settings.from_env({"CLIPSTREAM_RATE_KEY": bad})
