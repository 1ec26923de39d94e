"""The one language-code rule (engine.language)."""

from __future__ import annotations

import pytest

from engine.language import canonical_lang, valid_lang


@pytest.mark.parametrize("code", ["en", "pt-BR", "PT-br", "zh-Hant", "fil", "EN"])
def test_codes_of_any_case_are_valid(code: str) -> None:
    assert valid_lang(code)


@pytest.mark.parametrize(
    "code", ["", "e", "english", "en_US", "en-", "-en", "en-b", "1n", "en-US-x"]
)
def test_what_is_not_a_code_is_refused(code: str) -> None:
    assert not valid_lang(code)
    with pytest.raises(ValueError, match="language code"):
        canonical_lang(code)


def test_the_canonical_form_has_the_conventional_case() -> None:
    codes = ("EN", "en", "PT-br", "pt-BR", "zh-hant", "ES-419", "de-1996")
    assert [canonical_lang(c) for c in codes] == [
        "en",
        "en",
        "pt-BR",
        "pt-BR",
        "zh-Hant",
        "es-419",
        "de-1996",
    ]
