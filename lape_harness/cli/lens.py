"""The logit lens by language: at each layer, where does the probability mass of the next token sit?

For each prompt, the model's final norm and LM head read the residual stream after every decoder
layer at the last prompt position; the distribution is summed per language (tokens assigned by
script, and by the offline language ID for scripts several languages share: see docs/analysis.md,
"Logit lens by language"). With --neurons, each --plans entry runs under that steering plan
(every position steered), all with one model load. Writes lens.json (per plan: the mean mass per
layer and language, and each prompt's masses and top tokens) and lens.png (layers × languages).

Prompts: --prompts FILE (one per line, or a JSON list of strings) or --forcing LANG ... (the
forcing tasks' questions, as those tasks ask them: "Q: <question> \\nA:").

Example:
    $ lape-harness lens --model lape:gemma-3-270m --forcing de --limit 4 \\
          --neurons neuron_cache/gemma-3-270m/lape-top1.safetensors --plans=none,-de+fr --out results/lens
    wrote results/lens/lens.json and results/lens/lens.png: 2 plan(s) x 4 prompt(s), 18 layers, 23 categories
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "logit lens by language: per layer, the next-token probability mass of each language (with or without steering)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from lape_harness.model_loading import DTYPES

    parser.add_argument("--model", required=True,
                        help="Hugging Face model id or local folder (or lape:gemma-3-270m); required")
    parser.add_argument("--prompts", metavar="FILE", help="prompts, one per line (or a JSON list of strings)")
    parser.add_argument("--forcing", nargs="+", metavar="LANG", default=[],
                        help="use the forcing questions of these languages as prompts (tasks/lape_forcing)")
    parser.add_argument("--limit", type=int, default=None, help="at most this many prompts per file or language")
    parser.add_argument("--neurons", default=None, help="neuron-set file from `lape-harness identify` (for --plans)")
    parser.add_argument("--plans", action="append", default=[], metavar="PLAN,PLAN,...",
                        help="steering plans, comma-separated (--plans=none,-de+fr when the list starts with '-'); "
                             "repeatable (default: none)")
    parser.add_argument("--languages", nargs="+", default=None, metavar="LANG",
                        help="languages to count (default: the neuron set's, else the paper's 21)")
    parser.add_argument("--min-letters", type=int, default=4,
                        help="letters a token needs before the language ID may place it among languages of one "
                             "script (an ideograph counts 2) (default: 4)")
    parser.add_argument("--top-k", type=int, default=5, help="top tokens recorded per layer and prompt (default: 5)")
    parser.add_argument("--out", default="lens", metavar="DIR", help="output folder (default: ./lens)")
    parser.add_argument("--dtype", choices=["auto", *DTYPES], default="auto",
                        help="model dtype (default: auto = bf16 on CUDA, fp32 on CPU)")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available, else cpu)")
    parser.add_argument("--allow-other-model", action="store_true",
                        help="use a neuron set made for another model on purpose (default: refuse)")


def read_prompts(path: str | None, forcing: list[str], limit: int | None) -> list[str]:
    """The prompts of a file and of the forcing questions of ``forcing`` languages."""
    from lape_harness.errors import InputError
    from lape_harness.languages import known_codes
    from lape_harness.plugin.registration import task_folder
    from lape_harness.task_support.task_data import read_questions

    groups = []
    if path:
        file = Path(path)
        if not file.is_file():
            raise InputError(f"--prompts {path!r} does not exist; pass a text file with one prompt per line")
        text = file.read_text(encoding="utf-8")
        if file.suffix == ".json":
            prompts = json.loads(text)
            if not isinstance(prompts, list) or not all(isinstance(item, str) for item in prompts):
                raise InputError(f"{path} must hold a JSON list of strings")
        else:
            prompts = [line.rstrip("\n").replace("\\n", "\n") for line in text.splitlines() if line.strip()]
        if not prompts:
            raise InputError(f"--prompts {path!r} holds no prompt (it is empty or blank); write one prompt per line")
        groups.append(prompts)
    questions = read_questions(task_folder() / "lape_forcing" / "questions.json") if forcing else None
    for language in forcing:
        (code,) = known_codes([language], "--forcing")
        if code not in questions.questions:
            raise InputError(f"--forcing {language}: lape-harness's forcing questions cover "
                             f"{' '.join(sorted(questions.questions))}, not {code}; write {code} prompts to a file "
                             "and pass it with --prompts FILE")
        groups.append([f"Q: {question} \nA:" for question in questions.for_language(code)])
    return [prompt for group in groups for prompt in group[:limit]]


def run(args: argparse.Namespace) -> int:
    from lape_harness.errors import InputError
    from lape_harness.path_checks import check_output_dir

    for flag, value in (("--limit", args.limit), ("--top-k", args.top_k), ("--min-letters", args.min_letters)):
        if value is not None and value <= 0:
            raise InputError(f"{flag} must be a positive integer, got {value}")
    out = check_output_dir(args.out, "--out")
    prompts = read_prompts(args.prompts, args.forcing, args.limit)
    if not prompts:
        raise InputError("no prompts: pass --prompts FILE or --forcing LANG (e.g. --forcing de)")
    plans = [plan.strip() for group in args.plans for plan in group.split(",") if plan.strip()] or ["none"]
    from lape_harness.steering import AutoPlan, parse_steer

    parsed = [parse_steer(plan) for plan in plans]  # every plan's problem before the model loads
    if any(isinstance(plan, AutoPlan) for plan in parsed):
        raise InputError("--plans: auto picks a plan per task; the lens needs explicit plans, e.g. --plans=none,-de+fr")
    neurons = None
    if args.neurons:
        from lape_harness.identity import pretrained_identity
        from lape_harness.neurons import NeuronSet

        neurons = NeuronSet.load(args.neurons)
        for plan in filter(None, parsed):
            plan.check_languages(neurons)
        neurons.check_model(pretrained_identity(args.model), args.allow_other_model, args.neurons)
    elif any(parsed):
        raise InputError("steering plans need a neuron set: add --neurons path/to/lape-top1.safetensors")
    from lape_harness.languages import PAPER_CODES, known_codes

    languages = (known_codes(args.languages, "--languages") if args.languages else
                 neurons.languages if neurons is not None else list(PAPER_CODES))

    import torch

    from lape_harness.atomic import write_json_atomic
    from lape_harness.model_loading import dtype_name, load_model, pick_device
    from lape_harness.studies.lens import LogitLens, plot_lens
    from lape_harness.task_support.vocab_languages import RULE

    device = torch.device(pick_device(args.device))
    dtype = getattr(torch, dtype_name(args.dtype, device.type == "cuda"))
    model, tokenizer = load_model(args.model, None, dtype, device, None)
    lens = LogitLens(model, tokenizer, languages, neurons, top_k=args.top_k, min_letters=args.min_letters)
    result = lens.run(prompts, plans)
    vocabulary = {"rule": RULE, "min_letters": args.min_letters, "tokens_per_category": lens.vocabulary.counts()}
    result = {"model": args.model, "neurons": args.neurons, "vocabulary": vocabulary, **result}
    write_json_atomic(out / "lens.json", result)
    plot_lens(result, out / "lens.png")
    print(f"wrote {out / 'lens.json'} and {out / 'lens.png'}: {len(plans)} plan(s) x {len(prompts)} prompt(s), "
          f"{result['num_layers']} layers, {len(result['categories'])} categories")
    return 0
