"""Summarize an activation-statistics or neuron-set file.

For statistics: the model, sequence length and dtype, and per language its token count, mean
activation probability, share of never-active neurons, mean activation and the activation
probability per layer. For neuron sets: the thresholds, and per language its neuron count and
their spread over the layers, then the overlap between languages (shared counts and Jaccard).

Example:
    $ lape-harness inspect neuron_cache/tiny/lape-top1.safetensors
    $ lape-harness inspect neuron_cache/tiny/stats.safetensors --json
"""

from __future__ import annotations

import argparse

HELP = "summarize a statistics or neuron-set file (languages, counts per layer, overlaps)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="a file written by `lape-harness profile` or `identify`")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON (default: a readable table)")


def run(args: argparse.Namespace) -> int:
    import json

    from lape_harness.analysis.inspection import render, summarize

    summary = summarize(args.file)
    print(json.dumps(summary, indent=2, ensure_ascii=False) if args.json else render(summary))
    return 0
