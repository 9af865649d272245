"""Run the whole study on the embedded Gemma-3-270m (or --model): starter corpus → profile →
identify (1%…5%) → lm-eval with hf-steered or --engine vllm (perplexity matrix, language forcing,
and the hub benchmarks whose data can load here, each other one skipped with a line) → report.
The same as `lape-harness study` with the embedded model; `study` takes every option.

Modes: --quick (6 languages, small budgets; about 5 minutes on 2 CPU cores), the default
(14 languages; about 20 minutes), --full (all 21 languages, 2,000 held-out tokens each, a
forcing sweep over ratios, then strengths; about 1¼ hours on 2 CPU cores). Every stage is cached in the run
folder: running the same command again reuses finished stages and resumes interrupted ones.

Example:
    $ pip install "lape-harness[demo]"
    $ lape-harness demo --quick
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "run the whole study on the embedded Gemma-3-270m and write a report"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="mode", action="store_const", const="quick", help="the smallest study (~5 min)")
    size.add_argument(
        "--full", dest="mode", action="store_const", const="full",
        help="the complete study: all languages, 2,000 held-out tokens, forcing sweep (about 1¼ hours on 2 CPU cores)",
    )  # fmt: skip
    parser.set_defaults(mode="default")
    parser.add_argument("--model", default="lape:gemma-3-270m",
                        help="model: lape:gemma-3-270m (default), a local folder or a hub id")  # fmt: skip
    parser.add_argument("--corpus", type=Path, default=None,
                        help="folder with train/<lang>.txt and heldout/<lang>.txt (default: the starter "
                             "corpus, built on first use)")  # fmt: skip
    parser.add_argument("--languages", nargs="+", default=None, metavar="LANG",
                        help="languages to study (default: the mode's; --full: every language with text)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=None,
                        help="run folder (default: <cache>/demo/<model>/<mode>[-vllm])")  # fmt: skip
    parser.add_argument("--engine", choices=("hf", "vllm"), default="hf",
                        help="hf: hf-steered (default); vllm: vllm-steered (plans side by side in plan slots)")
    parser.add_argument("--engine-args", default=None, metavar="K=V,...",
                        help="extra model arguments of the engine, e.g. dtype=float32 (default on a CPU: the faster "
                             "dtype of this machine, measured once)")
    parser.add_argument("--benchmarks", default=None, metavar="LIST",
                        help="comma-separated from ppl,forcing,flores,xquad,belebele,xnli,lcb (default: all whose "
                             "data can load here)")
    parser.add_argument("--batch-size", type=int, default=None, help="lm-eval batch size (default: 8; vllm: auto)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if available, else cpu)")
    parser.add_argument("--save-neurons", type=Path, default=None, metavar="DIR",
                        help="also copy the statistics and neuron sets there, e.g. neuron_cache/gemma-3-270m")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from lape_harness.demo import run_demo

    run_demo(
        mode=args.mode,
        model=args.model,
        corpus=args.corpus,
        out=args.out,
        languages=args.languages,
        batch_size=args.batch_size,
        device=args.device,
        save_neurons=args.save_neurons,
        engine=args.engine,
        engine_args=args.engine_args,
        benchmarks=args.benchmarks,
    )
    return 0
