"""The Language Confusion Benchmark's scorer, ported: the reference the ``lape_lcb_*`` tasks and
``lape_harness.task_support.confusion`` are checked against.

A port of ``compute_metrics.py`` of github.com/for-ai/language-confusion (Marchisio et al. 2024,
"Understanding and Mitigating Language Confusion in LLMs", arXiv 2406.20052; Apache-2.0), read at
commit 94592802d5dd33e30af2fe57952254a89ab6f683 (the commit lape-harness pins for the test sets):
the same functions, steps and order — ``normalize``, ``tokenize``, ``compute_metrics``,
``compute_all_metrics`` — with two things passed in instead of loaded at import:

* ``langid``: the line identifier. The script loads fastText ``lid.176.bin`` (a download) and keeps
  a label whose score is > 0.3; the tests pass lape-harness's identifier to both sides, so what is
  compared is everything else (the deviation in identifiers is docs/tasks.md's to size).
* ``en_words``: read from the benchmark's own ``words`` file as the script reads it
  (:func:`load_en_words`; the file is in tests/fixtures/data/for-ai/language-confusion).

The script's ``metrics['acc']`` (line accuracy) is kept; LCPR is not in the script (the paper
defines it as the harmonic mean of LPR and WPR).
"""

from __future__ import annotations

import collections
import functools
import itertools
import string
from collections.abc import Callable, Iterable
from pathlib import Path

WORDS = Path(__file__).resolve().parents[1] / "fixtures" / "data" / "for-ai" / "language-confusion" / "words"
ja_tokenizer = None
zh_tokenizer = None


def load_en_words(path: Path = WORDS) -> set[str]:
    """``en_words`` as the script builds it from its ``words`` file."""
    en_words = [line.strip() for line in open(path, encoding="utf-8")]
    return {word for word in en_words if word.islower() and len(word) > 3}


def normalize(text: str) -> str:
    text = text.split('\nQ:')[0].strip()
    text = text.translate(str.maketrans("", "", string.punctuation))
    text = text.replace("—", " ")
    text = text.replace("،", "")
    return text


@functools.lru_cache(maxsize=2**20)
def tokenize(line: str, lang: str) -> list[str]:
    global ja_tokenizer, zh_tokenizer
    if lang == 'zh':
        if zh_tokenizer is None:
            import jieba
            zh_tokenizer = jieba
            zh_tokenizer.initialize()
        return list(zh_tokenizer.cut(line))
    elif lang == 'ja':
        if ja_tokenizer is None:
            from fugashi import Tagger
            ja_tokenizer = Tagger("-O wakati -b 50000")  # the script downloads unidic on RuntimeError
        return ja_tokenizer.parse(line).split()
    else:
        return line.split()


def compute_metrics(completions: Iterable[str], lang: str, langid: Callable[[str], str],
                    en_words: set[str]) -> dict[str, float]:
    with_word_errors = 0
    with_line_errors = 0
    non_skipped = 0
    line_acc = []
    for completion in completions:
        completion = normalize(completion)
        lines = completion.split("\n")
        line_tokens = [tokenize(line, lang) for line in lines]
        # remove lines that are too short
        indices = [i for i, tokens in enumerate(line_tokens) if len(tokens) >= 5]
        lines = [lines[i] for i in indices]
        line_tokens = [line_tokens[i] for i in indices]
        if lines:
            non_skipped += 1
            line_errors = sum(langid(line) != lang for line in lines)
            if line_errors > 0:
                with_line_errors += 1
            elif any(token.strip() in en_words for tokens in line_tokens for token in tokens):
                with_word_errors += 1
            line_acc.append(1 - line_errors / len(lines))
    metrics = {}
    metrics['acc'] = sum(line_acc) / len(line_acc) if line_acc else 1.0
    metrics['lpr'] = 1 - with_line_errors / max(1, non_skipped)
    if lang in ('ar', 'hi', 'ja', 'ko', 'ru', 'zh'):  # WPR is inaccurate for latin-script languages
        metrics['wpr'] = 1 - with_word_errors / max(1, non_skipped - with_line_errors)
    metrics['non_skipped'] = non_skipped  # (added: how many completions were scored)
    return metrics


def compute_all_metrics(outputs: list[dict], langid: Callable[[str], str], en_words: set[str]) -> dict:
    all_metrics = {}
    metrics_per_lang = collections.defaultdict(list)
    metrics_per_source = collections.defaultdict(list)

    def group_key(output):
        return output['source'], output['language']

    outputs = sorted(outputs, key=group_key)
    for (source, lang), grouped in itertools.groupby(outputs, key=group_key):
        completions = [output['completion'] for output in grouped]
        metrics = compute_metrics(completions, lang, langid, en_words)
        all_metrics[(source, lang)] = metrics
        metrics_per_lang[lang].append(metrics)
        metrics_per_source[source].append(metrics)

    def average_metrics(metrics: list[dict]):
        averages = {}
        for key in ('acc', 'lpr', 'wpr'):
            values = [metrics_[key] for metrics_ in metrics if metrics_.get(key) is not None]
            if values:
                averages[key] = sum(values) / len(values)
        return averages

    all_metrics.update({(source, 'all'): average_metrics(metrics) for source, metrics in metrics_per_source.items()})
    average_per_lang = {('all', lang): average_metrics(metrics) for lang, metrics in metrics_per_lang.items()}
    all_metrics.update(average_per_lang)
    all_metrics[('all', 'all')] = average_metrics(list(average_per_lang.values()))
    return all_metrics


def reference_rates(completions: list[str], language: str) -> tuple[float, float | None, int]:
    """LPR, WPR and the number of scored completions of one test set, with lape-harness's identifier."""
    from lape_harness.langid import identify_language

    metrics = compute_metrics(completions, language, identify_language, load_en_words())
    return metrics['lpr'], metrics.get('wpr'), metrics['non_skipped']
