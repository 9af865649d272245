"""Answer extraction and metrics of the lape task suite: the paper's rules, ported as they
are (they are non-standard), next to the standard definitions.

| family | the paper's metric | the standard metric |
|---|---|---|
| forcing | share of outputs identified as the target language | + ``clean_target_rate`` (target AND not degenerate) |
| FLORES | mean sentence-BLEU (13a) / 100 | corpus BLEU and corpus chrF++ (sacrebleu, 0-100) with signatures |
| XQuAD | EM/F1: lower-case, strip punctuation, keep articles, F1 over token *sets* | SQuAD EM/F1 (articles removed, multiset F1) |
| Belebele | regex letter extraction from generated text | (same; accuracy) |
| XNLI | leading digit, then label words, then yes/no | (same; accuracy) |

Example:
    >>> extract_belebele_answer("B) the river")
    'B'
    >>> round(paper_f1("the the cat", ["the cat"]), 3)
    0.8
    >>> degeneration("ich bin und und und und")
    'repeated n-gram'
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Sequence

from lape_harness.errors import LapeError
from lape_harness.langid import UNKNOWN, identify_language

# --------------------------------------------------------------------------------------------
# Language forcing


# CJK ideographs, kana and Thai are written without spaces: each character is one unit.
_UNIT = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u0e00-\u0e7f]|[^\W_]+")
MIN_REPEATS = 3  # an n-gram repeated back to back this many times is a loop
MAX_LOOP_N = 8
MIN_UNITS_FOR_RATIO = 12
MIN_DISTINCT_RATIO = 0.25


def text_units(text: str) -> list[str]:
    """Words (characters for scripts written without spaces), lower-cased."""
    return [unit.lower() for unit in _UNIT.findall(text)]


def _has_loop(units: Sequence[str]) -> bool:
    for n in range(1, MAX_LOOP_N + 1):
        for start in range(0, len(units) - n * MIN_REPEATS + 1):
            gram = units[start : start + n]
            if all(units[start + k * n : start + (k + 1) * n] == gram for k in range(1, MIN_REPEATS)):
                return True
    return False


def degeneration(text: str) -> str | None:
    """Why ``text`` is degenerate, or None: ``"empty"``, ``"no letters"`` (punctuation or
    symbols only), ``"repeated n-gram"`` (an n-gram, n <= 8, three times back to back),
    ``"low diversity"`` (12+ units, fewer than 25% distinct).
    """
    if not text.strip():
        return "empty"
    if not any(unicodedata.category(ch)[0] in "LN" for ch in text):
        return "no letters"
    units = text_units(text)
    if _has_loop(units):
        return "repeated n-gram"
    if len(units) >= MIN_UNITS_FOR_RATIO and len(set(units)) / len(units) < MIN_DISTINCT_RATIO:
        return "low diversity"
    return None


def forcing_scores(output: str, source: str, target: str) -> dict[str, object]:
    """Per-output forcing metrics (0/1 each) plus the detected language.

    >>> forcing_scores("Ich komme aus Berlin und arbeite dort.", "en", "de")["clean_target_rate"]
    1
    """
    text = output.strip()
    language = identify_language(text)
    degenerate = degeneration(text) is not None
    return {
        "target_rate": int(language == target),
        "source_rate": int(language == source),
        "unknown_rate": int(language == UNKNOWN),
        "degenerate_rate": int(degenerate),
        "clean_target_rate": int(language == target and not degenerate),
        "detected_language": language,
    }


def language_counts(languages: Sequence[str]) -> str:
    """Aggregate detected languages as ``"de:7 en:2 unknown:1"`` (most frequent first)."""
    counts = Counter(languages)
    return " ".join(f"{code}:{n}" for code, n in sorted(counts.items(), key=lambda item: (-item[1], item[0])))


# --------------------------------------------------------------------------------------------
# Translation (FLORES)

# Corpus-BLEU tokenizers that work offline: 13a, except Chinese ("zh") and scripts written
# without spaces (character level). ko/ja-mecab and flores200 need extra downloads.
BLEU_TOKENIZERS = {"zh": "zh", "ja": "char", "bo": "char", "th": "char"}


def paper_sentence_bleu(hypothesis: str, reference: str) -> float:
    """The paper's per-sentence score: ``sacrebleu.sentence_bleu(hyp, [ref]).score / 100`` (13a)."""
    import sacrebleu

    return sacrebleu.sentence_bleu(hypothesis, [reference]).score / 100.0


def bleu_tokenizer(target: str) -> str:
    return BLEU_TOKENIZERS.get(target, "13a")


def corpus_bleu(items: Sequence[Sequence[str]]) -> float:
    """Standard corpus BLEU (0-100) over ``(hypothesis, reference, target_language)`` items."""
    from sacrebleu.metrics import BLEU

    hypotheses, references, targets = zip(*items)
    return BLEU(tokenize=bleu_tokenizer(targets[0])).corpus_score(list(hypotheses), [list(references)]).score


def corpus_chrf_pp(items: Sequence[Sequence[str]]) -> float:
    """Standard corpus chrF++ (0-100) over ``(hypothesis, reference)`` items."""
    from sacrebleu.metrics import CHRF

    hypotheses, references = zip(*[item[:2] for item in items])
    return CHRF(word_order=2).corpus_score(list(hypotheses), [list(references)]).score


def translation_signature(items: Sequence[Sequence[str]]) -> str:
    """The sacrebleu signatures of the three translation scores over ``(hypothesis, reference,
    target_language[, data source])`` items, then ``data: <source>`` when the items name one.
    Items from two data sources are an error: their scores would not be comparable."""
    from sacrebleu.metrics import BLEU, CHRF

    columns = [list(column) for column in zip(*items)]
    hypotheses, references, targets = columns[:3]
    data = sorted(set(columns[3])) if len(columns) > 3 else []
    if len(data) > 1:
        raise LapeError(f"one translation task scored sentences from several data sources ({', '.join(data)}); "
                        "score each source separately")
    sentence, corpus, chrf = BLEU(effective_order=True), BLEU(tokenize=bleu_tokenizer(targets[0])), CHRF(word_order=2)
    sentence.sentence_score(hypotheses[0], [references[0]])  # signatures need the number of references
    corpus.corpus_score(hypotheses, [references])
    chrf.corpus_score(hypotheses, [references])
    signatures = (metric.get_signature().format() for metric in (sentence, corpus, chrf))
    parts = [
        f"{name}: {signature}"
        for name, signature in zip(("paper_sentence_bleu", "corpus_bleu", "corpus_chrf_pp"), signatures)
    ]
    return "; ".join(parts + [f"data: {source}" for source in data])


# --------------------------------------------------------------------------------------------
# Extractive QA (XQuAD)

_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.IGNORECASE)


def paper_normalize(text: str) -> str:
    """The paper's normalization: lower-case, drop ASCII punctuation, squeeze whitespace (articles kept)."""
    return " ".join("".join(ch for ch in text.lower() if ch not in _PUNCTUATION).split())


def squad_normalize(text: str) -> str:
    """SQuAD's normalization: lower-case, drop punctuation, drop English articles, squeeze whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _paper_f1_one(prediction: str, gold: str) -> float:
    predicted = paper_normalize(prediction).split() if prediction else []
    truth = paper_normalize(gold).split() if gold else []
    if not predicted or not truth:
        return float(predicted == truth)
    # As in the paper: the overlap is counted on sets, the lengths on the token lists.
    return _f1(len(set(predicted) & set(truth)), len(predicted), len(truth))


def _squad_f1_one(prediction: str, gold: str) -> float:
    predicted, truth = squad_normalize(prediction).split(), squad_normalize(gold).split()
    if not predicted or not truth:
        return float(predicted == truth)
    return _f1(sum((Counter(predicted) & Counter(truth)).values()), len(predicted), len(truth))


def _f1(overlap: int, predicted: int, truth: int) -> float:
    """Harmonic mean of precision ``overlap / predicted`` and recall ``overlap / truth``."""
    if overlap == 0:
        return 0.0
    precision, recall = overlap / predicted, overlap / truth
    return 2 * precision * recall / (precision + recall)


def paper_exact_match(prediction: str, golds: Sequence[str]) -> float:
    """1.0 if the prediction equals any gold answer after :func:`paper_normalize`."""
    return float(any(paper_normalize(prediction) == paper_normalize(gold) for gold in golds))


def paper_f1(prediction: str, golds: Sequence[str]) -> float:
    """The paper's F1, best over the gold answers."""
    return max((_paper_f1_one(prediction, gold) for gold in golds), default=0.0)


def squad_exact_match(prediction: str, golds: Sequence[str]) -> float:
    """Standard SQuAD exact match, best over the gold answers."""
    return float(any(squad_normalize(prediction) == squad_normalize(gold) for gold in golds))


def squad_f1(prediction: str, golds: Sequence[str]) -> float:
    """Standard SQuAD F1 (multiset token overlap), best over the gold answers."""
    return max((_squad_f1_one(prediction, gold) for gold in golds), default=0.0)


# --------------------------------------------------------------------------------------------
# Multiple choice (Belebele) and NLI (XNLI)

_BELEBELE_PATTERNS = [
    r"^([ABCD])\)",
    r"^([ABCD])\.",
    r"^([ABCD])\s",
    r"^\(([ABCD])\)",
    r"^([ABCD])$",
    r"ANSWER:\s*([ABCD])",
    r"THE ANSWER IS\s*([ABCD])",
]


def extract_belebele_answer(response: str) -> str | None:
    """The paper's letter extraction: regexes on ``strip().upper()``, else a leading A-D, else None.

    Note the last rule: "A woman..." counts as answer A, as in the paper.
    """
    text = response.strip().upper()
    for pattern in _BELEBELE_PATTERNS:
        match = re.search(pattern, text)
        if match:
            return match.group(1)
    return text[0] if text and text[0] in "ABCD" else None


XNLI_LABELS = ("entailment", "neutral", "contradiction")  # gold label ids 0, 1, 2


def extract_xnli_label(response: str) -> int | None:
    """The paper's label extraction, as a gold-label id (0 entailment, 1 neutral, 2 contradiction).

    A leading digit 1/2/3; else the words entailment > contradiction > neutral (in that order of
    precedence, as substrings); else yes/true/correct -> entailment, no/false/incorrect ->
    contradiction; else None.
    """
    text = response.strip()
    if text and text[0].isdigit():
        try:
            number = int(text[0])
        except ValueError:  # digits such as "²" that int() does not read
            number = 0
        if 1 <= number <= 3:
            return number - 1
    lowered = text.lower()
    for word in ("entailment", "contradiction", "neutral"):
        if word in lowered:
            return XNLI_LABELS.index(word)
    if re.search(r"\byes\b|\btrue\b|\bcorrect\b", lowered):
        return 0
    if re.search(r"\bno\b|\bfalse\b|\bincorrect\b", lowered):
        return 2
    return None
