"""The fallback study: deactivate languages cumulatively and see which language answers.

Loads the hf-steered model once; step 0 is unsteered, step k deactivates the union of the
first k languages of --order (each neuron set to --fill, the paper's "negative" −1.5).
At every step the model answers everyday English questions ("Q: <question>A: ", greedy,
at most --max-gen-toks tokens, stop at a new Q:/A:), and each answer's language is
identified offline. Writes fallback.json (answers, languages, per-step distribution),
fallback.md (table) and fallback.png (stacked bars) into --out; resumes after the last
finished step when run again with the same settings.

Example:
    $ lape-harness fallback --model-args pretrained=lape:gemma-3-270m,neurons=neuron_cache/gemma-3-270m/lape-top1.safetensors \\
        --out results/fallback
"""

from __future__ import annotations

import argparse

HELP = "the paper's fallback study: cumulative deactivation, answer-language distribution per step"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from lape_harness.studies.fallback import PAPER_FILL, PAPER_ORDER

    parser.add_argument("--model-args", "--model_args", required=True, metavar="ARGS",
                        help="hf-steered model arguments: pretrained=...,neurons=...[,dtype=...] (any hf argument)")
    parser.add_argument("--order", default=",".join(PAPER_ORDER), metavar="LANGS",
                        help=f"comma-separated deactivation order (default: the paper's {','.join(PAPER_ORDER)})")
    parser.add_argument("--fill", type=float, default=PAPER_FILL,
                        help=f"value the deactivated neurons are set to (default: {PAPER_FILL}, the paper's 'negative')")
    parser.add_argument("--questions", metavar="FILE",
                        help="English questions, one per line (default: the 30 built-in everyday questions)")
    parser.add_argument("--limit", type=int, default=None, help="ask only the first N questions (default: all)")
    parser.add_argument("--max-gen-toks", type=int, default=128, help="new tokens per answer (default: 128, as the paper)")
    parser.add_argument("--repetition-penalty", type=float, default=1.1,
                        help="generation repetition penalty (default: 1.1, as the paper's vLLM runs; 1 = off)")
    parser.add_argument("--batch-size", default="1", help="generation batch size (default: 1)")
    parser.add_argument("--device", default=None, help="device, e.g. cuda:0 or cpu (default: cuda if available, else cpu)")
    parser.add_argument("--out", default="fallback", metavar="DIR",
                        help="folder for fallback.json, fallback.md, fallback.png (default: ./fallback)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lape_harness.errors import InputError
    from lape_harness.model_loading import pick_device
    from lape_harness.plugin.hf_steered import HFSteeredLM
    from lape_harness.studies.fallback import QUESTIONS, run_fallback, write_report
    from lape_harness.studies.sweep import model_args_dict

    questions = list(QUESTIONS)
    if args.questions:
        path = Path(args.questions)
        if not path.is_file():
            raise InputError(f"questions file {str(path)!r} does not exist; write one English question per line")
        questions = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if args.limit is not None:
        questions = questions[: args.limit]
    model_args = model_args_dict(args.model_args)
    model_args.pop("steer", None)
    batch_size = int(args.batch_size) if args.batch_size.isdigit() else args.batch_size
    lm = HFSteeredLM.create_from_arg_obj(model_args, {"batch_size": batch_size, "device": pick_device(args.device)})
    order = [code.strip() for code in args.order.split(",") if code.strip()]
    study = run_fallback(lm, order=order, fill=args.fill, questions=questions, max_gen_toks=args.max_gen_toks,
                         repetition_penalty=args.repetition_penalty, output=args.out)
    written = write_report(study, args.out)
    last = study.steps[-1]
    print(f"fallback study: {len(study.steps)} steps × {len(questions)} questions; with "
          f"{','.join(last.deactivated)} off the answers are mostly {last.most_common!r}: wrote {', '.join(written)}")
    return 0
