"""Language confusion metrics of the Language Confusion Benchmark (LCB; Marchisio et al. 2024):
line-level pass rate (LPR), word-level pass rate (WPR) and their harmonic mean (LCPR).

Re-implemented from the benchmark's published definitions (its ``compute_metrics.py``):

* A completion is cut at the first ``"\\nQ:"``, stripped, ASCII punctuation, ``#`` and the
  Arabic comma are removed, em dashes become spaces; then it is split into lines.
* A line is tokenised (Chinese: jieba; Japanese: MeCab via fugashi; others: whitespace);
  lines of fewer than 5 tokens are ignored. A completion with no line left is *skipped*.
* **LPR**: the share of (non-skipped) completions whose every line is identified as the
  expected language.
* **WPR** (only for ar, hi, ja, ko, ru, zh, where English words stand out): among the
  completions that pass the line check, the share containing no English word (a token that
  is a lower-case word of more than 3 letters in the benchmark's English word list, its
  repository's ``words`` file: 99,170 lines with plurals, -ing/-ed forms and possessives).
* **LCPR**: the harmonic mean of LPR and WPR.

Deviation (docs/tasks.md): lines are identified with :func:`lape_harness.langid.identify_language`
instead of fastText lid.176 with a 0.3 threshold. The word list is the benchmark's own, fetched
once from its repository at the pinned commit (or read from ``$LAPE_HARNESS_DATA``) and checked
against its sha256 (:data:`WORD_LIST`).

Example:
    >>> verdict = completion_verdict("Ich bin heute sehr müde und gehe früh schlafen.", "de")
    >>> verdict["counted"], verdict["line_pass"]
    (True, True)
    >>> round(lcpr(0.9, 0.6), 4)
    0.72
"""

from __future__ import annotations

import functools
import logging
import string
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

from lape_harness.errors import InputError
from lape_harness.langid import identify_language
from lape_harness.task_support.lcb_prompt_forms import form_prefix

#: Languages whose word-level check is run (the benchmark's: non-Latin scripts).
WPR_LANGUAGES = frozenset({"ar", "hi", "ja", "ko", "ru", "zh"})
MIN_LINE_TOKENS = 5
MIN_ENGLISH_WORD_LETTERS = 4
#: the word list WPR uses, as recorded in the LCB tasks' metadata (``metadata.wpr_word_list``).
WORD_LIST = ("for-ai/language-confusion@94592802d5dd:words "
             "sha256:1ec8230beef2a7c955742b089fc3cea2833866cf5482bf018d7c4124eef104bd")

_STRIP = str.maketrans({**{ch: None for ch in string.punctuation}, "،": None, "—": " "})


def normalize(completion: str) -> str:
    """The benchmark's clean-up: cut at ``"\\nQ:"``, strip, drop punctuation (``—`` → space).

    >>> normalize("Hallo, Welt! — gut.\\nQ: next")
    'Hallo Welt   gut'
    """
    return completion.split("\nQ:")[0].strip().translate(_STRIP)


def _missing(package: str, what: str) -> InputError:
    return InputError(f"{what} needs the {package!r} package; install it with `pip install {package}` "
                      "(it is a dependency of lape-harness: reinstall lape-harness to get it)")


@functools.lru_cache(maxsize=1)
def _jieba():
    try:
        import jieba
    except ImportError:
        raise _missing("jieba", "Chinese word segmentation") from None
    jieba.setLogLevel(logging.WARNING)
    return jieba


@functools.lru_cache(maxsize=1)
def _mecab():
    try:
        from fugashi import Tagger
    except ImportError:
        raise _missing("fugashi", "Japanese word segmentation") from None
    try:
        return Tagger("-O wakati -b 50000")
    except RuntimeError:
        raise _missing("unidic-lite", "Japanese word segmentation (the MeCab dictionary)") from None


def tokenize(line: str, language: str) -> list[str]:
    """Words of ``line``: jieba for Chinese (its whitespace tokens included, as in the benchmark),
    MeCab for Japanese, whitespace elsewhere.

    >>> tokenize("das ist ein Test", "de")
    ['das', 'ist', 'ein', 'Test']
    """
    if language == "zh":
        return list(_jieba().cut(line))
    if language == "ja":
        return _mecab().parse(line).split()
    return line.split()


@functools.lru_cache(maxsize=1)
def english_words() -> frozenset[str]:
    """The English words the word-level check looks for, as the benchmark's ``compute_metrics.py``
    reads them: the lines of its ``words`` file that are lower-case and longer than 3 characters."""
    from lape_harness.task_support.task_data import lcb_file

    path = lcb_file("words")
    if not path.is_file():
        raise InputError(f"no copy of the Language Confusion Benchmark's English word list at {path}: copy the "
                         "repository's words file there (commit in lape_harness.task_support.task_data.LCB_COMMIT), "
                         "or unset LAPE_HARNESS_DATA to download it")
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return frozenset(word for word in lines if word.islower() and len(word) >= MIN_ENGLISH_WORD_LETTERS)


def completion_verdict(completion: str, language: str, words: frozenset[str] | None = None,
                       identify=identify_language) -> dict[str, object]:
    """How one completion expected in ``language`` fares: ``counted`` (False: no line of 5+
    tokens), ``line_pass`` (every counted line is in ``language``), ``word_pass`` (no English
    word; None where not checked: a failed line check, or a language outside
    :data:`WPR_LANGUAGES`), ``line_errors`` and ``lines`` (counted lines).

    ``words`` replaces the English word list and ``identify`` the language identifier (tests).

    >>> completion_verdict("kurz", "de")["counted"]
    False
    """
    lines = normalize(completion).split("\n")
    kept = [(line, tokens) for line in lines if len(tokens := tokenize(line, language)) >= MIN_LINE_TOKENS]
    if not kept:
        return {"language": language, "counted": False, "line_pass": None, "word_pass": None,
                "line_errors": 0, "lines": 0}
    line_errors = sum(identify(line) != language for line, _ in kept)
    word_pass = None
    if line_errors == 0 and language in WPR_LANGUAGES:
        vocabulary = english_words() if words is None else words
        word_pass = not any(token.strip() in vocabulary for _, tokens in kept for token in tokens)
    return {"language": language, "counted": True, "line_pass": line_errors == 0, "word_pass": word_pass,
            "line_errors": line_errors, "lines": len(kept)}


def line_pass_rate(verdicts: Sequence[Mapping]) -> float:
    """LPR of a dataset: passing share of the counted completions (1.0 when none is counted,
    as in the benchmark)."""
    counted = [v for v in verdicts if v["counted"]]
    return 1.0 - sum(not v["line_pass"] for v in counted) / max(1, len(counted))


def word_pass_rate(verdicts: Sequence[Mapping]) -> float | None:
    """WPR of a dataset: share without English words among the completions that pass the line
    check (1.0 when none passes, as in the benchmark); None for a language outside
    :data:`WPR_LANGUAGES`.

    >>> word_pass_rate([{"language": "ja", "counted": True, "line_pass": True, "word_pass": False}])
    0.0
    """
    if not verdicts or verdicts[0]["language"] not in WPR_LANGUAGES:
        return None
    passed = [v for v in verdicts if v["counted"] and v["line_pass"]]
    return 1.0 - sum(v["word_pass"] is False for v in passed) / max(1, len(passed))


def lcpr(lpr: float, wpr: float | None) -> float:
    """Language confusion pass rate: the harmonic mean of LPR and WPR (LPR where there is no WPR;
    0 when both are 0).

    >>> lcpr(1.0, 0.5), lcpr(0.8, None), lcpr(0.0, 0.0)
    (0.6666666666666666, 0.8, 0.0)
    """
    if wpr is None:
        return lpr
    return 0.0 if lpr + wpr == 0 else 2 * lpr * wpr / (lpr + wpr)


def dataset_scores(verdicts: Sequence[Mapping]) -> dict[str, float | None]:
    """``{"lpr", "wpr", "lcpr"}`` of one dataset (one source × language) from its verdicts."""
    lpr, wpr = line_pass_rate(verdicts), word_pass_rate(verdicts)
    return {"lpr": lpr, "wpr": wpr, "lcpr": lcpr(lpr, wpr)}


def _mean(values: Iterable[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return sum(present) / len(present) if present else None


def _averages(scores: Sequence[Mapping]) -> dict[str, float | None]:
    lpr, wpr = _mean(s["lpr"] for s in scores), _mean(s.get("wpr") for s in scores)
    return {"lpr": lpr, "wpr": wpr, "lcpr": lcpr(lpr, wpr)}


def benchmark_averages(scores: Mapping[tuple[str, str], Mapping]) -> dict[tuple[str, str], dict]:
    """The benchmark's report of one setting from per-dataset scores ``{(source, language):
    {"lpr": .., "wpr": ..}}``: the datasets themselves, ``(source, "all")`` (mean over the
    source's languages), ``("all", language)`` (mean over the language's sources) and
    ``("all", "all")`` (mean of the per-language means). WPR means skip the datasets without
    WPR; each LCPR is the harmonic mean of the LPR and WPR beside it.

    >>> report = benchmark_averages({("aya", "ar"): {"lpr": 1.0, "wpr": 0.5},
    ...                              ("okapi", "ar"): {"lpr": 0.5, "wpr": 1.0},
    ...                              ("okapi", "fr"): {"lpr": 0.9, "wpr": None}})
    >>> report[("all", "ar")]["lpr"], report[("all", "all")]["lpr"], report[("all", "all")]["wpr"]
    (0.75, 0.825, 0.75)
    """
    by_source, by_language = defaultdict(list), defaultdict(list)
    report: dict[tuple[str, str], dict] = {}
    for (source, language), values in sorted(scores.items()):
        report[(source, language)] = {"lpr": values["lpr"], "wpr": values.get("wpr"),
                                      "lcpr": lcpr(values["lpr"], values.get("wpr"))}
        by_source[source].append(values)
        by_language[language].append(values)
    for source, values in by_source.items():
        report[(source, "all")] = _averages(values)
    per_language = {language: _averages(values) for language, values in by_language.items()}
    report.update({("all", language): values for language, values in per_language.items()})
    report[("all", "all")] = _averages(list(per_language.values()))
    return report


def scores_from_results(results: Mapping[str, Mapping], setting: str,
                        form: str = "chat") -> dict[tuple[str, str], dict]:
    """Per-dataset scores ``{(source, language): {"lpr", "wpr"}}`` of one setting (``"monolingual"``
    or ``"crosslingual"``) and prompt form (``"chat"``: ``lape_lcb_*``, ``"base"``: ``lape_lcb_base_*``;
    :mod:`~lape_harness.task_support.lcb_prompt_forms`) from the ``results`` of an lm-eval results
    file, for :func:`benchmark_averages`.

    >>> scores_from_results({"lape_lcb_crosslingual_complex_prompts_ja": {"lpr,none": 0.5, "wpr,none": 1.0},
    ...                      "lape_lcb_crosslingual": {"lpr,none": 0.5}}, "crosslingual")
    {('complex_prompts', 'ja'): {'lpr': 0.5, 'wpr': 1.0}}
    """
    prefix = f"{form_prefix(form)}_{setting}_"
    scores = {}
    for task, values in results.items():
        if task.startswith(prefix) and "lpr,none" in values:
            source, language = task.removeprefix(prefix).rsplit("_", 1)
            scores[(source, language)] = {"lpr": values["lpr,none"], "wpr": values.get("wpr,none")}
    return scores


# lm-eval aggregations: each receives the per-completion verdicts of one task.


def lpr_aggregation(verdicts: Sequence[Mapping]) -> float:
    return line_pass_rate(verdicts)


def wpr_aggregation(verdicts: Sequence[Mapping]) -> float:
    wpr = word_pass_rate(verdicts)
    return float("nan") if wpr is None else wpr


def lcpr_aggregation(verdicts: Sequence[Mapping]) -> float:
    return dataset_scores(verdicts)["lcpr"]
