"""Score the Language Confusion Benchmark's released completions with lape-harness's metric.

The benchmark's repository (github.com/for-ai/language-confusion) ships model completions as
``outputs/<model>.csv`` (columns ``model, completion, task, source, language``). This script scores
one such file per setting with :mod:`lape_harness.task_support.confusion`: each test set's LPR, WPR
and LCPR, the benchmark's averages (per source, per language, overall; LCPR from the averaged LPR
and WPR) and, beside them, the plain mean over the test sets that a group aggregate would give.
``--words`` picks the English word list: the benchmark's own ``words`` file (a path; default: the
one lape-harness fetches) or ``web2`` (Webster's Second from the ``english-words`` package, which
lape-harness used before: ``pip install english-words``), to measure what the list changes.

Example:
    python -m benchmarks.lcb_released outputs/llama-3-instruct.csv --words path/to/words --json out.json
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import defaultdict
from pathlib import Path


def word_list(choice: str | None) -> frozenset[str]:
    """The lower-case words of more than 3 letters of ``choice`` (a file, ``web2``, or None: the benchmark's)."""
    from lape_harness.task_support.confusion import MIN_ENGLISH_WORD_LETTERS, english_words

    if choice is None:
        return english_words()
    if choice == "web2":
        from english_words import get_english_words_set

        words = get_english_words_set(["web2"])
    else:
        words = (line.strip() for line in Path(choice).read_text(encoding="utf-8").splitlines())
    return frozenset(word for word in words if word.islower() and len(word) >= MIN_ENGLISH_WORD_LETTERS)


def score(rows: list[dict], words: frozenset[str]) -> dict[str, dict]:
    """Per setting: per-set scores, the benchmark's averages and the plain means over the sets."""
    from lape_harness.task_support.confusion import benchmark_averages, completion_verdict, dataset_scores

    verdicts = defaultdict(list)
    for row in rows:
        verdict = completion_verdict(row["completion"], row["language"], words=words)
        verdicts[(row["task"], row["source"], row["language"])].append(verdict)
    report = {}
    for setting in sorted({task for task, _, _ in verdicts}):
        sets = {(source, language): dataset_scores(found)
                for (task, source, language), found in verdicts.items() if task == setting}
        averages = benchmark_averages(sets)
        plain = {metric: _mean([values[metric] for values in sets.values()]) for metric in ("lpr", "wpr", "lcpr")}
        report[setting] = {
            "sets": {f"{source}/{language}": values for (source, language), values in sorted(sets.items())},
            "benchmark_average": averages[("all", "all")],
            "per_source": {source: values for (source, language), values in averages.items()
                           if language == "all" and source != "all"},
            "plain_mean_over_sets": plain,
        }
    return report


def _mean(values):
    present = [value for value in values if value is not None]
    return sum(present) / len(present) if present else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("csv", help="a released outputs/<model>.csv of the benchmark's repository")
    parser.add_argument("--words", default=None, help="word list: a file, or web2 (default: the benchmark's)")
    parser.add_argument("--json", default=None, help="write the whole report here")
    args = parser.parse_args(argv)
    csv.field_size_limit(sys.maxsize)
    with open(args.csv, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    report = score(rows, word_list(args.words))
    for setting, values in report.items():
        average, plain = values["benchmark_average"], values["plain_mean_over_sets"]
        print(f"{setting}: benchmark average LPR {average['lpr']:.3f} WPR {average['wpr']:.3f} "
              f"LCPR {average['lcpr']:.3f}; plain mean over {len(values['sets'])} sets LPR {plain['lpr']:.3f} "
              f"WPR {plain['wpr']:.3f} LCPR {plain['lcpr']:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
