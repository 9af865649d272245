"""Fine-tune only one language's neurons: their gate/up (or input) rows and down-projection columns.

Every other weight stays bit-for-bit as it was (the trainable changes are separate tensors; see
docs/analysis.md, "Neuron-restricted fine-tuning"). The corpus options are profile's: a folder
of <lang>.txt / <lang>.jsonl files or an hf: dataset spec, cut into sequences of --seq-len tokens.
The held-out text of the language (the lape_ppl tasks' text, or --heldout FILE) is scored
before and after. The result is a standard Hugging Face checkpoint (weights merged, in the
training dtype) that lm-eval's hf and hf-steered load as pretrained=OUT; the record is in
OUT/lape_harness_finetune.json. An interrupted run resumes from OUT.partial when the same command
is run again.

Example:
    $ lape-harness finetune --model lape:gemma-3-270m --neurons neuron_cache/gemma-3-270m/lape-top3.safetensors \\
          --language mt --steps 100 --seq-len 32 --batch-size 2 --lr 1e-4 --out finetuned/gemma-mt
    wrote finetuned/gemma-mt: 100 steps on 226 mt neurons (433,920 weights); held-out perplexity 289.76 -> 86.63
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "fine-tune only one language's neurons (everything else frozen); writes a standard checkpoint"
RECORD_FILE = "lape_harness_finetune.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="Hugging Face model id or local folder (or lape:gemma-3-270m); required")
    parser.add_argument("--neurons", required=True, help="neuron-set file from `lape-harness identify`; required")
    parser.add_argument("--language", required=True, help="the language whose neurons are trained; required")
    parser.add_argument("--out", required=True, help="folder for the fine-tuned checkpoint; required")
    parser.add_argument("--corpus", default=None,
                        help="folder with <lang>.txt / <lang>.jsonl files, or hf:NAME[:CONFIG[:SPLIT[:COLUMN]]] "
                             "(default: the starter corpus <cache>/corpus/train)")
    parser.add_argument("--heldout", default=None,
                        help="held-out text to score before and after (paragraphs separated by blank lines) "
                             "(default: the language's lape_ppl held-out text, when it exists)")
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps (default: 300)")
    parser.add_argument("--seq-len", type=int, default=128, help="tokens per sequence, start token included (default: 128)")
    parser.add_argument("--batch-size", type=int, default=4, help="sequences per step (default: 4)")
    parser.add_argument("--max-tokens", type=int, default=None, help="read at most this many corpus tokens")
    parser.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate, constant (default: 1e-4)")
    parser.add_argument("--weight-decay", type=float, default=0.0,
                        help="AdamW weight decay of the trained entries, towards their pretrained values (default: 0)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the batch order and of torch (default: 0)")
    parser.add_argument("--dtype", choices=["auto", "bf16", "fp16", "fp32"], default="auto",
                        help="training and saved dtype (default: auto = bf16 on CUDA, fp32 on CPU)")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available, else cpu)")
    parser.add_argument("--checkpoint-every", type=float, default=300.0,
                        help="seconds between resumable checkpoints (default: 300)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists (default: refuse)")
    parser.add_argument("--allow-other-model", action="store_true",
                        help="train with a neuron set made for another model on purpose (default: refuse)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    import shutil

    from lape_harness.corpora import TextFile, open_corpus
    from lape_harness.errors import InputError
    from lape_harness.identity import pretrained_identity
    from lape_harness.languages import normalize_code
    from lape_harness.neurons import NeuronSet
    from lape_harness.path_checks import check_output_dir
    from lape_harness.paths import corpus_dir
    from lape_harness.task_support.task_data import heldout_path

    for flag, value in (("--steps", args.steps), ("--seq-len", args.seq_len), ("--batch-size", args.batch_size),
                        ("--max-tokens", args.max_tokens)):  # fmt: skip
        if value is not None and value <= 0:
            raise InputError(f"{flag} must be a positive integer, got {value}")
    if args.lr <= 0 or args.weight_decay < 0:
        raise InputError(f"--lr must be positive and --weight-decay not negative, got {args.lr}, {args.weight_decay}")
    language = normalize_code(args.language)
    out = check_output_dir(args.out, "--out")
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise InputError(f"{out} already exists and is not empty; choose another --out or pass --overwrite")
    partial = check_output_dir(out.with_name(out.name + ".partial"), "the checkpoint folder of --out")
    source = open_corpus(args.corpus or str(corpus_dir() / "train"), [language])[language]
    heldout = Path(args.heldout) if args.heldout else heldout_path(language)
    if args.heldout and not heldout.is_file():
        raise InputError(f"--heldout {args.heldout!r} does not exist; pass a text file (paragraphs separated by blank lines)")
    heldout_source = TextFile(language, heldout) if heldout.is_file() else None
    if heldout_source is None:
        print(f"note: no held-out text for {language!r} at {heldout}; perplexity is not scored", file=sys.stderr)
    neuron_set = NeuronSet.load(args.neurons)
    neurons = neuron_set[language]
    neuron_set.check_model(pretrained_identity(args.model), args.allow_other_model, args.neurons)

    import torch

    from lape_harness.cli.profile import DTYPES, load_model
    from lape_harness.corpora import Packing
    from lape_harness.identity import model_identity
    from lape_harness.steering.bake import write_checkpoint
    from lape_harness.studies.finetune import attach, merge, perplexity, train

    device = torch.device(args.device) if args.device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype_name = DTYPES.get(args.dtype) or ("bfloat16" if device.type == "cuda" else "float32")
    model, tokenizer = load_model(args.model, None, getattr(torch, dtype_name), device, None)
    packing = Packing.for_tokenizer(tokenizer, args.seq_len)
    chunks = [chunk for chunk in packing.chunks(source.documents(), tokenizer, args.max_tokens)
              if len(chunk) == packing.chunk_len]  # fmt: skip
    if not chunks:
        raise InputError(f"the corpus for {language!r} ({source.source}) gives no sequence of --seq-len {args.seq_len} "
                         "tokens; lower --seq-len or add text")
    rows = torch.tensor([packing.prefix + chunk for chunk in chunks], dtype=torch.long)
    heldout_rows = [packing.prefix + chunk for chunk in packing.chunks(heldout_source.documents(), tokenizer)] \
        if heldout_source is not None else []
    start = len(packing.prefix)
    before = perplexity(model, heldout_rows, start) if heldout_rows else None

    deltas = attach(model, neurons)
    run_key = {"model": model_identity(model)["config_hash"], "neurons": neuron_set.content_hash(),
               "language": language, "corpus": source.source, "corpus_sha256": source.fingerprint(),
               "max_tokens": args.max_tokens, "dtype": dtype_name}  # fmt: skip
    state = train(model, deltas, rows, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                  weight_decay=args.weight_decay, labels_from=start, checkpoint_dir=partial,
                  checkpoint_every=args.checkpoint_every, run=run_key, progress=not args.no_progress)  # fmt: skip
    merge(model)
    after = perplexity(model, heldout_rows, start) if heldout_rows else None
    record = {
        "source_model": args.model, "neurons": args.neurons, "neurons_hash": neuron_set.content_hash(),
        "language": language, "neuron_count": len(neurons), "trained_weights": sum(delta.numel() for delta in deltas),
        "corpus": source.source, "corpus_sha256": source.fingerprint(), "training_sequences": int(rows.shape[0]),
        "steps": state.step, "seq_len": args.seq_len, "batch_size": args.batch_size, "lr": args.lr,
        "weight_decay": args.weight_decay, "seed": args.seed, "dtype": dtype_name, "losses": state.losses,
        "heldout": str(heldout) if heldout_source else None,
        "heldout_token_perplexity": {"before": before, "after": after},
    }  # fmt: skip
    model.config.lape_harness_finetune = {key: value for key, value in record.items() if key != "losses"}
    write_checkpoint(out, model, tokenizer, RECORD_FILE, record)
    shutil.rmtree(partial, ignore_errors=True)
    scored = f"; held-out perplexity {before:.2f} -> {after:.2f}" if before is not None else ""
    print(f"wrote {out}: {state.step} steps on {len(neurons)} {language} neurons "
          f"({record['trained_weights']:,} weights){scored}")
    return 0
