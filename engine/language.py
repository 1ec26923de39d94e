"""The one language-code rule, for every lang a request, a query or a resource names.

A code is a primary language subtag of two or three letters, optionally followed by one region or
script subtag (``en``, ``pt-BR``, ``zh-Hant``). Case does not matter to BCP 47, so any case is
accepted; :func:`canonical_lang` gives each subtag its conventional case (``en``, ``BR``,
``Hant``), the form transcripts are kept under, so ``EN``, ``pt-br`` and ``en``, ``pt-BR`` name
the same transcripts.
"""

from __future__ import annotations

import re

DEFAULT_LANG = "en"
# The pattern as text too: the API's request schemas (and so the OpenAPI document) carry it.
LANG_PATTERN = r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})?$"
_LANG = re.compile(LANG_PATTERN)
LANG_HINT = "a language code such as en or pt-BR"


def valid_lang(lang: str) -> bool:
    """True for a language code such as ``en`` or ``pt-BR`` (any case)."""
    return _LANG.match(lang) is not None


def canonical_lang(lang: str) -> str:
    """``lang`` in BCP 47's conventional case: the language in lower case, a two-letter region in
    upper case, a four-letter script in title case, anything else in lower case (``EN-gb`` ->
    ``en-GB``, ``zh-hant`` -> ``zh-Hant``). ValueError when it is not a language code."""
    if not valid_lang(lang):
        raise ValueError(f"not a language code: {lang!r}")
    primary, sep, sub = lang.partition("-")
    if len(sub) == 2 and sub.isalpha():
        sub = sub.upper()
    elif len(sub) == 4 and sub.isalpha():
        sub = sub.title()
    else:
        sub = sub.lower()
    return primary.lower() + sep + sub
