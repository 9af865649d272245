"""Which language each token of a vocabulary belongs to, computed once per tokenizer and cached.

The rule (:data:`RULE`), applied to each token's decoded text:

1. Letters are the characters of Unicode category L*; their script is the first word of their
   Unicode name (``LATIN``, ``CYRILLIC``, ``CJK``, ``HIRAGANA``, ...). A token without letters
   (spaces, punctuation, digits, byte pieces, special tokens), or with letters of a script none
   of the chosen languages writes, is ``other``.
2. The candidates are the chosen languages whose script covers every letter of the token
   (Japanese: kana and CJK; Chinese: CJK). One candidate: the token is that language's
   (Tibetan script → bo, Hangul → ko, kana → ja, Devanagari → hi when those are chosen).
3. Several candidates (every Latin-script language, Chinese and Japanese for ideographs,
   Russian and Bulgarian for Cyrillic): a token with at least ``min_letters`` letters (an
   ideograph counts as 2) goes to the language the offline language ID
   (:func:`~lape_harness.langid.identify_language`) gives for its text, when that is a
   candidate; every other token is ``ambiguous``.

Limits: subword pieces are short, so most Latin-script tokens are ``ambiguous``, and a
language ID reading one word is often wrong (fastText leans to English; Afrikaans reads as
Dutch); the per-language masses of Latin-script languages are therefore lower bounds with
noise, while single-script languages are counted exactly.

Example:
    >>> assignment = vocabulary_languages(tokenizer, ["de", "ru", "zh"])   # doctest: +SKIP
    >>> assignment.categories                                            # doctest: +SKIP
    ['de', 'ru', 'zh', 'ambiguous', 'other']
    >>> script_words("Кот9")
    ('CYRILLIC',)
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import torch

from lape_harness.atomic import atomic_path
from lape_harness.langid import identify_language
from lape_harness.languages import get_language
from lape_harness.paths import cache_dir

RULE = "script, then language ID for tokens of >= min_letters letters (v1)"
AMBIGUOUS, OTHER = "ambiguous", "other"
# The Unicode-name words of each script code of the language table.
SCRIPT_WORDS = {
    "Latn": ("LATIN",), "Cyrl": ("CYRILLIC",), "Arab": ("ARABIC",), "Deva": ("DEVANAGARI",),
    "Tibt": ("TIBETAN",), "Hang": ("HANGUL",), "Jpan": ("HIRAGANA", "KATAKANA", "CJK"), "Hans": ("CJK",),
    "Hant": ("CJK",), "Grek": ("GREEK",), "Thai": ("THAI",),
}  # fmt: skip


def script_words(text: str) -> tuple[str, ...]:
    """The scripts (first words of the Unicode names) of the letters of ``text``, sorted."""
    return tuple(sorted({unicodedata.name(ch, "UNKNOWN").split()[0] for ch in text if unicodedata.category(ch)[0] == "L"}))


def _letters(text: str) -> int:
    return sum(2 if unicodedata.name(ch, "").startswith("CJK") else 1 for ch in text if unicodedata.category(ch)[0] == "L")


def assign_token(text: str, languages: list[str], min_letters: int = 4) -> str:
    """The category of one token's text: a language of ``languages``, ``ambiguous`` or ``other``.

    >>> assign_token("ཀྱི", ["bo", "de"]), assign_token(" und", ["de", "en"]), assign_token("!", ["de"])
    ('bo', 'ambiguous', 'other')
    """
    words = script_words(text)
    if not words:
        return OTHER
    candidates = [code for code in languages
                  if set(words) <= set(SCRIPT_WORDS.get(get_language(code).script, ()))]  # fmt: skip
    if not candidates:
        return OTHER
    if len(candidates) == 1:
        return candidates[0]
    if _letters(text) >= min_letters:
        guess = identify_language(text)
        if guess in candidates:
            return guess
    return AMBIGUOUS


@dataclass(frozen=True)
class VocabularyLanguages:
    """``category[token_id]`` indexes ``categories`` (the languages, then ``ambiguous`` and ``other``)."""

    categories: list[str]
    category: torch.Tensor  # int64 [vocab]

    def counts(self) -> dict[str, int]:
        counted = torch.bincount(self.category, minlength=len(self.categories)).tolist()
        return dict(zip(self.categories, counted))


def vocabulary_languages(tokenizer, languages: list[str], size: int | None = None, min_letters: int = 4,
                         cache: Path | None = None) -> VocabularyLanguages:
    """Assign every token id below ``size`` (default: the tokenizer's length; ids the tokenizer
    lacks, e.g. an LM head padded beyond it, are ``other``) by the rule above, reading and
    writing a cache file under ``<cache>/vocab_languages`` keyed by the decoded vocabulary, the
    languages, ``min_letters`` and the rule."""
    languages = [get_language(code).code for code in languages]
    size = len(tokenizer) if size is None else size
    known = min(size, len(tokenizer))
    texts = tokenizer.batch_decode([[token] for token in range(known)])
    special = set(getattr(tokenizer, "all_special_ids", []))
    categories = [*languages, AMBIGUOUS, OTHER]
    digest = hashlib.sha256(json.dumps([RULE, languages, min_letters, size, texts, sorted(special)]).encode())
    path = (cache or cache_dir() / "vocab_languages") / f"{digest.hexdigest()[:24]}.pt"
    if path.is_file():
        try:
            return VocabularyLanguages(categories, torch.load(path, weights_only=True))
        except (OSError, RuntimeError, EOFError):
            pass  # a damaged cache entry is recomputed and replaced
    index = {name: position for position, name in enumerate(categories)}
    category = torch.full((size,), index[OTHER], dtype=torch.int64)
    for token, text in enumerate(texts):
        if token not in special:
            category[token] = index[assign_token(text, languages, min_letters)]
    with atomic_path(path) as temporary:
        torch.save(category, temporary)
    return VocabularyLanguages(categories, category)
