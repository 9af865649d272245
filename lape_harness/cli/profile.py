"""Profile a model's MLP neurons per language: count how often each neuron fires (> 0) and sum
its activations, over a corpus of text per language. The result is the input of
`lape-harness identify`.

The decoder body runs without the LM head. An interrupted run (Ctrl-C, kill) resumes from its
last checkpoint when the same command is run again. Under `torchrun --nproc_per_node=N -m
lape_harness profile ...` or `accelerate launch --multi_gpu --num_processes N -m lape_harness
profile ...` the sequences are split over the processes and only rank 0 writes.

Example:
    $ lape-harness profile --model lape:gemma-3-270m --corpus corpus/train --languages de fr en \\
          --max-tokens 200000 --seq-len 512
    wrote neuron_cache/gemma-3-270m/stats.safetensors: 3 languages (de fr en), 600,000 tokens, ...
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HELP = "collect per-language activation statistics of a model's MLP neurons"



def add_arguments(parser: argparse.ArgumentParser) -> None:
    from lape_harness.model_loading import DTYPES

    parser.add_argument("--model", required=True,
                        help="Hugging Face model id or local folder (or lape:gemma-3-270m); required")
    parser.add_argument("--corpus", default=None,
                        help="folder with <lang>.txt / <lang>.jsonl files, or hf:NAME[:CONFIG[:SPLIT[:COLUMN]]] "
                             "with {lang}/{flores} placeholders (default: the starter corpus <cache>/corpus/train)")
    parser.add_argument("--languages", nargs="+", default=None,
                        help="language codes to profile, in this order (default: every language with a file in "
                             "the corpus folder; the paper's 21 for an hf: spec)")
    parser.add_argument("--out", default=None,
                        help="output statistics file (default: neuron_cache/<model-slug>/stats.safetensors)")
    parser.add_argument("--seq-len", type=int, default=512, help="tokens per packed sequence, start token included (default: 512)")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per forward pass (default: 8)")
    parser.add_argument("--max-tokens", type=int, default=None,
                        help="counted tokens per language at most (default: the whole corpus)")
    parser.add_argument("--dtype", choices=["auto", *DTYPES], default="auto",
                        help="model dtype (default: auto = bf16 on CUDA, fp32 on CPU)")
    parser.add_argument("--device", default=None,
                        help="cpu, cuda or cuda:N (default: cuda if available, else cpu; under torchrun: cuda:LOCAL_RANK)")
    parser.add_argument("--device-map", default=None,
                        help="spread the model over devices: auto, balanced, sequential, a JSON object "
                             "{\"module\": device} or a .json file holding one (single process only)")
    parser.add_argument("--revision", default=None, help="model revision (branch, tag or commit) (default: main)")
    parser.add_argument("--checkpoint-every", type=float, default=300.0,
                        help="seconds between checkpoints of partial statistics (default: 300)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def run(args: argparse.Namespace) -> int:
    from lape_harness.corpora import folder_languages, is_hf_spec, open_corpus
    from lape_harness.errors import InputError
    from lape_harness.languages import PAPER_CODES
    from lape_harness.path_checks import check_output_dir, check_output_file
    from lape_harness.paths import corpus_dir, model_slug

    for flag, value in (("--seq-len", args.seq_len), ("--batch-size", args.batch_size), ("--max-tokens", args.max_tokens)):
        if value is not None and value <= 0:
            raise InputError(f"{flag} must be a positive integer, got {value}")
    out = Path(args.out) if args.out else Path("neuron_cache") / model_slug(args.model) / "stats.safetensors"
    check_output_file(out, "--out")  # before the corpus and the model: the result must be writable
    check_output_dir(out.with_name(out.stem + ".partial"), "the checkpoint folder of --out")
    corpus = args.corpus or str(corpus_dir() / "train")
    if args.languages:
        languages = args.languages
    else:
        languages = list(PAPER_CODES) if is_hf_spec(corpus) else folder_languages(corpus, report=_warn)
    sources = open_corpus(corpus, languages)
    device_map = _parse_device_map(args.device_map)

    import torch

    from lape_harness.model_loading import dtype_name, load_model, pick_device
    from lape_harness.profile import Checkpoints, Distributed, profile_model

    device = torch.device(pick_device(args.device))
    dist = Distributed.from_env(use_cuda=device.type == "cuda")
    if dist.world > 1 and device_map is not None:
        raise InputError("--device-map spreads one model over devices; with torchrun/accelerate each process "
                         "holds a whole model: drop --device-map or run a single process")
    if dist.device is not None:
        device = dist.device
    on_gpu = device.type == "cuda" or (device_map is not None and torch.cuda.is_available())
    dtype = getattr(torch, dtype_name(args.dtype, on_gpu))
    model, tokenizer = load_model(args.model, args.revision, dtype, device, device_map)

    started = time.monotonic()
    checkpoints_dir = out.with_name(out.stem + ".partial")
    stats = profile_model(
        model, tokenizer, sources, seq_len=args.seq_len, batch_size=args.batch_size, max_tokens=args.max_tokens,
        checkpoint_dir=checkpoints_dir, checkpoint_every=args.checkpoint_every, progress=not args.no_progress,
        dist=dist,
    )
    if dist.is_main:
        stats.meta["model"]["model_id"] = args.model
        stats.save(out)
    dist.barrier()
    Checkpoints(checkpoints_dir, dist).clear(stats.languages)
    if dist.is_main:
        elapsed = time.monotonic() - started
        print(
            f"wrote {out}: {len(stats.languages)} languages ({' '.join(stats.languages)}), "
            f"{int(stats.tokens.sum()):,} tokens, {stats.num_layers} layers x {stats.width} neurons, "
            f"seq-len {args.seq_len}, {stats.meta['dtype']}, {dist.world} process(es), {elapsed:.0f} s"
        )
    if dist.world > 1:
        import torch.distributed as torch_dist

        torch_dist.destroy_process_group()
    return 0


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _parse_device_map(value: str | None):
    from lape_harness.errors import InputError

    if value is None or value in ("auto", "balanced", "balanced_low_0", "sequential"):
        return value
    text = Path(value).read_text() if value.endswith(".json") and Path(value).is_file() else value
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        raise InputError(
            f"--device-map {value!r} is not auto/balanced/sequential, a JSON object or a .json file with one; "
            'e.g. --device-map \'{"model.embed_tokens": 0, "model.layers": 0, "model.norm": 1, "lm_head": 1}\''
        )
    return parsed
