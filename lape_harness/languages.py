"""The language table: ISO 639-1 code, FLORES-200 code, English name, script and family.

The paper's 21 languages come first, in the paper's mask order; more languages can be
added with :func:`register_language` (e.g. XQuAD's and XNLI's languages without neurons).

Example:
    >>> get_language("de").flores
    'deu_Latn'
    >>> get_language("jpn_Jpan").code
    'ja'
    >>> [l.code for l in PAPER_LANGUAGES][:3]
    ['bo', 'mt', 'it']
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from lape_harness.errors import InputError


@dataclass(frozen=True)
class Language:
    """One language: ``code`` (ISO 639-1, the key used everywhere), ``flores`` (FLORES-200)."""

    code: str
    flores: str
    name: str
    script: str
    family: str

    @property
    def latin(self) -> bool:
        return self.script == "Latn"


class UnknownLanguageError(InputError):
    """A language code that is not in the table (the message lists the known ones)."""


_TABLE: dict[str, Language] = {}
_BY_FLORES: dict[str, Language] = {}
# The one table of other spellings, seen in datasets, task names and language identifiers, mapped
# onto table codes. FLORES+ names Chinese by its individual language (cmn_Hans); identifiers emit
# the withdrawn codes iw and jw; lm-eval task names use jp; nn (Nynorsk) counts as Norwegian.
ALIASES: dict[str, str] = {
    "nb": "no", "nob": "no", "nn": "no", "zh-cn": "zh", "zh-hans": "zh", "zh-tw": "zh", "zh-hant": "zh",
    "cmn": "zh", "cmn_hans": "zh", "jp": "ja", "iw": "he", "jw": "jv",
}  # fmt: skip


def canonical_code(key: str) -> str:
    """``key`` lowercased, with an alias replaced by the code it stands for (known language or not).

    >>> canonical_code("NB"), canonical_code("iw"), canonical_code("xx")
    ('no', 'he', 'xx')
    """
    lowered = key.strip().lower()
    return ALIASES.get(lowered, lowered)


def register_language(code: str, flores: str, name: str, script: str, family: str) -> Language:
    """Add a language to the table (idempotent for an identical entry).

    >>> register_language("sw", "swh_Latn", "Swahili", "Latn", "Niger-Congo").name
    'Swahili'
    """
    language = Language(code, flores, name, script, family)
    existing = _TABLE.get(code)
    if existing is not None and existing != language:
        raise ValueError(f"language {code!r} is already registered as {existing}")
    _TABLE[code] = language
    _BY_FLORES[flores.lower()] = language
    return language


_PAPER = [
    ("bo", "bod_Tibt", "Tibetan", "Tibt", "Sino-Tibetan"),
    ("mt", "mlt_Latn", "Maltese", "Latn", "Semitic"),
    ("it", "ita_Latn", "Italian", "Latn", "Romance"),
    ("es", "spa_Latn", "Spanish", "Latn", "Romance"),
    ("de", "deu_Latn", "German", "Latn", "Germanic"),
    ("ja", "jpn_Jpan", "Japanese", "Jpan", "Japonic"),
    ("ar", "arb_Arab", "Arabic", "Arab", "Semitic"),
    ("zh", "zho_Hans", "Chinese", "Hans", "Sino-Tibetan"),
    ("af", "afr_Latn", "Afrikaans", "Latn", "Germanic"),
    ("nl", "nld_Latn", "Dutch", "Latn", "Germanic"),
    ("fr", "fra_Latn", "French", "Latn", "Romance"),
    ("pt", "por_Latn", "Portuguese", "Latn", "Romance"),
    ("ru", "rus_Cyrl", "Russian", "Cyrl", "Slavic"),
    ("ko", "kor_Hang", "Korean", "Hang", "Koreanic"),
    ("hi", "hin_Deva", "Hindi", "Deva", "Indo-Aryan"),
    ("tr", "tur_Latn", "Turkish", "Latn", "Turkic"),
    ("pl", "pol_Latn", "Polish", "Latn", "Slavic"),
    ("sv", "swe_Latn", "Swedish", "Latn", "Germanic"),
    ("da", "dan_Latn", "Danish", "Latn", "Germanic"),
    ("no", "nob_Latn", "Norwegian Bokmål", "Latn", "Germanic"),
    ("en", "eng_Latn", "English", "Latn", "Germanic"),
]
# Languages of XQuAD, XNLI and the Language Confusion Benchmark that have no neurons in the
# paper (cross-lingual steering only).
_EXTRA = [
    ("vi", "vie_Latn", "Vietnamese", "Latn", "Austroasiatic"),
    ("th", "tha_Thai", "Thai", "Thai", "Kra-Dai"),
    ("ro", "ron_Latn", "Romanian", "Latn", "Romance"),
    ("el", "ell_Grek", "Greek", "Grek", "Hellenic"),
    ("bg", "bul_Cyrl", "Bulgarian", "Cyrl", "Slavic"),
    ("sw", "swh_Latn", "Swahili", "Latn", "Niger-Congo"),
    ("ur", "urd_Arab", "Urdu", "Arab", "Indo-Aryan"),
    ("id", "ind_Latn", "Indonesian", "Latn", "Austronesian"),
]
for _row in _PAPER + _EXTRA:
    register_language(*_row)

PAPER_LANGUAGES: tuple[Language, ...] = tuple(_TABLE[row[0]] for row in _PAPER)
PAPER_CODES: tuple[str, ...] = tuple(language.code for language in PAPER_LANGUAGES)


def get_language(key: str) -> Language:
    """Look a language up by ISO code, FLORES-200 code or a known alias (case-insensitive)."""
    lowered = canonical_code(key)
    if lowered in _TABLE:
        return _TABLE[lowered]
    if lowered in _BY_FLORES:
        return _BY_FLORES[lowered]
    raise UnknownLanguageError(
        f"unknown language {key!r}; known codes: {', '.join(sorted(_TABLE))} "
        "(FLORES-200 codes such as 'deu_Latn' work too; add more with lape_harness.languages.register_language)"
    )


def normalize_code(key: str) -> str:
    """The table's ISO code for ``key`` (``'deu_Latn'`` → ``'de'``, ``'nb'`` → ``'no'``)."""
    return get_language(key).code


def all_languages() -> list[Language]:
    """Every registered language, the paper's 21 first."""
    return list(_TABLE.values())


def family_of(code: str) -> str:
    """The family of ``code``, ``"other"`` for a code the table does not know.

    >>> family_of("de"), family_of("xx")
    ('Germanic', 'other')
    """
    return _known(code).family


def script_of(code: str) -> str:
    """The script of ``code``, ``"?"`` for a code the table does not know.

    >>> script_of("ru"), script_of("xx")
    ('Cyrl', '?')
    """
    return _known(code).script


_UNKNOWN = Language(code="?", flores="?", name="unknown", script="?", family="other")


def _known(code: str) -> Language:
    try:
        return get_language(code)
    except InputError:
        return _UNKNOWN


def order_by_family(codes) -> list[str]:
    """Languages grouped by family (largest family first, ties by family name), then by script,
    then by code; unknown codes last.

    >>> order_by_family(["de", "ru", "fr", "nl", "pl"])
    ['de', 'nl', 'ru', 'pl', 'fr']
    """
    codes = list(dict.fromkeys(codes))
    size = Counter(family_of(code) for code in codes)
    return sorted(codes, key=lambda c: (family_of(c) == "other", -size[family_of(c)], family_of(c), script_of(c), c))


def language_list(values: list[str]) -> list[str]:
    """Codes from ``--languages de fr`` or ``--languages de,fr``, normalized where the table knows them.

    >>> language_list(["de,deu_Latn", "nb", "xx"])
    ['de', 'de', 'no', 'xx']
    """
    codes = []
    for value in values:
        for code in filter(None, value.split(",")):
            try:
                codes.append(normalize_code(code))
            except UnknownLanguageError:
                codes.append(code)
    return codes


def known_codes(values: list[str], flag: str = "--languages") -> list[str]:
    """Table codes of ``values`` (``de fr`` or ``de,fr``); an unknown code is an error naming ``flag``.

    >>> known_codes(["de,nb"])
    ['de', 'no']
    >>> known_codes(["xx"], "--forcing")
    Traceback (most recent call last):
    lape_harness.languages.UnknownLanguageError: --forcing xx: unknown language code; use ISO codes such as de fr ja ...
    """
    codes, unknown = [], []
    for code in language_list(values):
        try:
            codes.append(normalize_code(code))
        except UnknownLanguageError:
            unknown.append(code)
    if unknown:
        raise UnknownLanguageError(f"{flag} {' '.join(unknown)}: unknown language code; use ISO codes such as "
                                   "de fr ja (or FLORES codes such as deu_Latn)")
    return codes

