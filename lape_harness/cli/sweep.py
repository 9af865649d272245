"""Evaluate many steering plans with one model load (lm-eval once per plan).

Builds the `hf-steered` model once from --model-args, then for each plan switches the
steering (no weight reload) and runs lm-eval's evaluator on --tasks. Each plan gets its own
folder under --output holding exactly what `lm_eval --output_path` writes (results JSON,
and samples with --log-samples), with the plan and its steering signature recorded.
Finished plans are skipped when the command is run again.

A plan is a steer= spec (`none`, `auto`, `de`, `-en`, `-de+fr`, `+2*de`, `-en=-1.5` ...);
--plans takes them comma-separated (--plans=-en,-de when the list starts with '-');
append `@FILE` to use another neuron set for that plan (e.g. another neuron ratio):
`-en@neuron_cache/gemma/lape-top3.safetensors`.

Across a cluster, --shard I/N runs the I-th of N shares of the plan × task cells (the same for
every job given the same plans and tasks), each cell into its own folder under --output/cells;
run the same command as N jobs (e.g. a Slurm job array), then `lape-harness leaderboard` on
--output gives the table one unsharded sweep gives. A re-run of a share skips its finished cells.

Example:
    $ lape-harness sweep --model-args pretrained=lape:gemma-3-270m,neurons=neuron_cache/gemma-3-270m/lape-top1.safetensors \\
        --plans none,auto,-en,-de --tasks lape_belebele_de,lape_belebele_fr --limit 100 --output results/sweep
    $ sbatch --array=1-4 --wrap 'lape-harness sweep ... --output results/sweep --shard $SLURM_ARRAY_TASK_ID/4'
"""

from __future__ import annotations

import argparse

HELP = "evaluate many steering plans with one model load; one lm-eval results JSON per plan"


def _seed(text: str) -> tuple:
    parts = [part.strip() for part in text.split(",")]
    if len(parts) == 1:
        parts *= 4
    if len(parts) != 4:
        raise argparse.ArgumentTypeError("--seed takes one integer or four comma-separated values (python,numpy,torch,fewshot)")
    try:
        return tuple(None if part == "None" else int(part) for part in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seed {text!r}: expected integers or None, e.g. 0,1234,1234,1234") from None


def _shard(text: str):
    from lape_harness.errors import InputError
    from lape_harness.studies.shards import parse_shard

    try:
        return parse_shard(text)
    except InputError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("--shard ")) from None


def _limit(text: str):
    value = float(text)
    return int(value) if value >= 1 else value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-args", "--model_args", required=True, metavar="ARGS",
                        help="hf-steered model arguments, lm-eval style: pretrained=...,neurons=...[,dtype=...,...]; "
                             "any hf argument works; a steer= here is replaced by each plan")
    parser.add_argument("--plans", action="append", default=[], metavar="PLAN,PLAN,...",
                        help="comma-separated steer= specs to evaluate (specs never contain commas), e.g. "
                             "--plans none,auto,de,-en; a list that starts with '-' must be attached with '=': "
                             "--plans=-en,-de; repeatable; SPEC@NEURON_FILE uses another neuron set for that plan")
    parser.add_argument("--plans-file", metavar="FILE",
                        help="text file with one plan per line (# comments allowed); added after --plans")
    parser.add_argument("--tasks", required=True, metavar="TASKS",
                        help="comma-separated lm-eval task or group names (e.g. lape_belebele_de,xnli_de)")
    parser.add_argument("--output", "--output_path", required=True, metavar="DIR",
                        help="folder receiving one subfolder per plan (and sweep.json with the settings)")
    parser.add_argument("--limit", type=_limit, default=None,
                        help="at most this many examples per task (a fraction if < 1); default: all")
    parser.add_argument("--num-fewshot", "--num_fewshot", type=int, default=None, help="few-shot examples (default: task's)")
    parser.add_argument("--batch-size", "--batch_size", default="1", help="batch size or 'auto' / 'auto:N' (default 1)")
    parser.add_argument("--max-batch-size", "--max_batch_size", type=int, default=None,
                        help="upper bound for batch_size=auto (default: none)")
    parser.add_argument("--device", default=None, help="device for the model, e.g. cuda:0 or cpu (default: cuda if available, else cpu)")
    parser.add_argument("--log-samples", "--log_samples", action="store_true",
                        help="also write per-sample outputs (samples_<task>_<date>.jsonl) per plan")
    parser.add_argument("--seed", type=_seed, default=(0, 1234, 1234, 1234), metavar="SEEDS",
                        help="python,numpy,torch,fewshot seeds, or one integer for all (default: 0,1234,1234,1234)")
    parser.add_argument("--include-path", "--include_path", default=None, metavar="DIR",
                        help="extra folder of task YAMLs (this project's tasks/ are always found)")
    parser.add_argument("--gen-kwargs", "--gen_kwargs", default=None, metavar="KWARGS",
                        help="generation overrides for generate_until tasks, e.g. max_gen_toks=64,temperature=0")
    parser.add_argument("--bootstrap-iters", "--bootstrap_iters", type=int, default=100000,
                        help="bootstrap iterations for standard errors (0: none; default 100000)")
    parser.add_argument("--apply-chat-template", "--apply_chat_template", action="store_true",
                        help="format prompts with the tokenizer's chat template (default: off, as the paper)")
    parser.add_argument("--engine", choices=("hf", "vllm"), default="hf",
                        help="hf: hf-steered (default); vllm: vllm-steered, one vLLM engine for every plan "
                             "(--model-args then takes vllm arguments: tensor_parallel_size=2,dtype=bfloat16,...)")
    parser.add_argument("--system-instruction", "--system_instruction", default=None,
                        help="system instruction prepended to every prompt (default: none)")
    parser.add_argument("--shard", type=_shard, default=None, metavar="I/N",
                        help="run only the I-th of N shares of the plan × task cells (I from 1 to N), for N jobs "
                             "sharing one --output (e.g. a Slurm job array: --shard $SLURM_ARRAY_TASK_ID/N with "
                             "--array=1-N); each cell gets its own folder under OUTPUT/cells, finished cells are "
                             "skipped, and `lape-harness leaderboard OUTPUT` reads the union")


def run(args: argparse.Namespace) -> int:
    from lape_harness.errors import InputError
    from lape_harness.studies.sweep import read_plans_file, run_sweep

    plans = [plan.strip() for group in args.plans for plan in group.split(",") if plan.strip()]
    plans += read_plans_file(args.plans_file) if args.plans_file else []
    if not plans:
        raise InputError("no plans: pass --plans none,auto,-en ... or --plans-file plans.txt")
    batch_size = int(args.batch_size) if args.batch_size.isdigit() else args.batch_size
    outcomes = run_sweep(
        args.model_args, plans, [task.strip() for task in args.tasks.split(",") if task.strip()], args.output,
        limit=args.limit, num_fewshot=args.num_fewshot, batch_size=batch_size, max_batch_size=args.max_batch_size,
        device=args.device, log_samples=args.log_samples, seed=args.seed, include_path=args.include_path,
        gen_kwargs=args.gen_kwargs, bootstrap_iters=args.bootstrap_iters,
        apply_chat_template=args.apply_chat_template, system_instruction=args.system_instruction,
        engine=args.engine, shard=args.shard,
    )
    ran = sum(not outcome.skipped for outcome in outcomes)
    counts = f"({ran} run now, {len(outcomes) - ran} finished earlier)"
    if args.shard is not None:
        print(f"shard {args.shard} of the sweep: {len(outcomes)} cell(s) {counts}: results in {args.output}; once "
              f"every shard has finished, compare them with `lape-harness leaderboard {args.output}`")
        return 0
    print(f"sweep of {len(outcomes)} plan(s) {counts}: "
          f"results in {args.output}; compare them with `lape-harness leaderboard {args.output}`")
    return 0
