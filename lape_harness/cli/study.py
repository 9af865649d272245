"""Run the whole study on any model: corpus → profile → identify (1%…5%, with random controls) →
lm-eval with hf-steered or vllm-steered (perplexity matrix, language forcing, and the hub benchmarks
flores, xquad, belebele, xnli, lcb: none, the plan and its random control per language) → report.

Every stage is cached in the run folder: running the same command again reuses finished stages and
resumes interrupted ones (a finished study starts no engine). A benchmark family whose data cannot
load here (offline, gated) is skipped with one line saying why and how to enable it: hub access, or
LAPE_HARNESS_DATA=DIR with local copies (lape_harness/task_support/task_data.py). On a CPU the faster
dtype of this machine is measured once and used unless --engine-args sets dtype=.

Example:
    $ lape-harness study --model lape:gemma-3-270m --engine vllm --quick
    $ lape-harness study --model meta-llama/Llama-3.1-8B --engine vllm \\
        --engine-args tensor_parallel_size=2,dtype=bfloat16 --corpus 'hf:uonlp/CulturaX:{lang}:train:text' \\
        --languages en de fr es --benchmarks ppl,forcing,flores,xquad,belebele,xnli,lcb --plans auto
"""

from __future__ import annotations

import argparse

HELP = "the whole study on any model and engine: profile, identify, steer every benchmark, report"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="mode", action="store_const", const="quick", help="the smallest sizes")
    size.add_argument("--full", dest="mode", action="store_const", const="full",
                      help="every language with text, 2,000 held-out tokens, a forcing sweep, 100 examples per task")
    parser.set_defaults(mode="default")
    parser.add_argument("--model", default="lape:gemma-3-270m",
                        help="lape:gemma-3-270m (default, embedded), a local folder or a hub id")
    parser.add_argument("--engine", choices=("hf", "vllm"), default="hf",
                        help="hf: hf-steered (default); vllm: vllm-steered, every auto plan's task plans side by side "
                             "in plan slots")
    parser.add_argument("--engine-args", default=None, metavar="K=V,...",
                        help="extra model arguments of the engine, lm-eval style: dtype=bfloat16,tensor_parallel_size=2,"
                             "max_model_len=4096,batch_size=16,parallelize=True ...")
    parser.add_argument("--corpus", default=None,
                        help="folder with train/ and heldout/, a folder of <lang>.txt/.jsonl training text, or an "
                             "hf:NAME:CONFIG:SPLIT:COLUMN spec with {lang}/{flores} (held-out text then from the "
                             "starter corpus; default: the starter corpus, built on first use)")
    parser.add_argument("--languages", nargs="+", default=None, metavar="LANG",
                        help="languages to study (default: the mode's; --full: every language with text)")
    parser.add_argument("--top-rates", nargs="+", type=float, default=None, metavar="RATE",
                        help="neuron-set rates (default: 0.01 0.02 0.03 0.04 0.05)")
    parser.add_argument("--benchmarks", default=None, metavar="LIST",
                        help="comma-separated from ppl,forcing,flores,xquad,belebele,xnli,lcb (default: all whose data "
                             "can load here; none: profile and identify only)")
    parser.add_argument("--plans", action="append", default=None, metavar="PLAN,...",
                        help="steered plans for forcing and the hub benchmarks, each also run with its random control "
                             "(default: auto for the benchmarks, the mode's auto:-src+2*tgt and auto:+2*tgt for "
                             "forcing); a list starting with '-' needs '=': --plans=-src+tgt is written auto:-src+tgt")
    parser.add_argument("--limit", type=int, default=None, help="examples per hub-benchmark task (default: the mode's)")
    parser.add_argument("--out", default=None, help="run folder (default: <cache>/demo/<model>/<mode>[-vllm])")
    parser.add_argument("--shard", default=None, metavar="I/N",
                        help="run share I of N of every sweep (profile and identify first, once, with --benchmarks "
                             "none); then run the command without --shard for the report")
    parser.add_argument("--batch-size", default=None, help="lm-eval batch size (default: 8 for hf, auto for vllm)")
    parser.add_argument("--device", default=None, help="hf: cpu, cuda, cuda:N (default: cuda if available, else cpu)")
    parser.add_argument("--save-neurons", default=None, metavar="DIR", help="also copy the statistics and neuron sets there")


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from lape_harness.demo import MODES, run_study
    from lape_harness.errors import InputError
    from lape_harness.studies.shards import parse_shard

    mode = MODES[args.mode]
    if args.limit is not None:
        if args.limit < 1:
            raise InputError(f"--limit {args.limit}: give at least 1 example per task")
        mode = replace(mode, bench_limit=args.limit)
    batch = args.batch_size
    batch = int(batch) if batch is not None and batch.isdigit() else batch
    summary = run_study(
        args.model, mode=mode, engine=args.engine, engine_args=args.engine_args, corpus=args.corpus, out=args.out,
        languages=args.languages, top_rates=args.top_rates, benchmarks=args.benchmarks, plans=args.plans,
        shard=str(parse_shard(args.shard)) if args.shard else None, batch_size=batch, device=args.device,
        save_neurons=args.save_neurons,
    )  # fmt: skip
    return 0 if summary else 1
