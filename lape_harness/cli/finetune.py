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
          --language mt --steps 100 --seq-len 32 --batch-size 2 --lr 1e-4 --max-grad-norm 0 --out finetuned/gemma-mt
    wrote finetuned/gemma-mt: 100 steps on 226 mt neurons (433,920 weights); held-out perplexity 289.76 -> 86.63
"""

from __future__ import annotations

import argparse
import sys

HELP = "fine-tune only one language's neurons (everything else frozen); writes a standard checkpoint"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from lape_harness.model_loading import DTYPES

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
                        help="AdamW weight decay of the trained entries (the authors used 0.01) (default: 0)")
    parser.add_argument("--weight-decay-on", choices=["weights", "change"], default="weights",
                        help="what the decay pulls towards 0: the trained weights, as the authors' finetune.py does, "
                             "or their change from the pretrained values (default: weights)")
    parser.add_argument("--max-grad-norm", type=float, default=1.0,
                        help="clip the gradient norm of the trained entries at this value, as the authors do; "
                             "0: no clipping (default: 1.0)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the batch order and of torch (default: 0)")
    parser.add_argument("--dtype", choices=["auto", *DTYPES], default="auto",
                        help="training and saved dtype (default: auto = bf16 on CUDA, fp32 on CPU)")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available, else cpu)")
    parser.add_argument("--checkpoint-every", type=float, default=300.0,
                        help="seconds between resumable checkpoints (default: 300)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists (default: refuse)")
    parser.add_argument("--allow-other-model", action="store_true",
                        help="train with a neuron set made for another model on purpose (default: refuse)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from lape_harness.studies.finetune import run_finetune

    record = run_finetune(
        args.model, args.neurons, args.language, args.out, corpus=args.corpus, heldout=args.heldout, steps=args.steps,
        seq_len=args.seq_len, batch_size=args.batch_size, max_tokens=args.max_tokens, lr=args.lr,
        weight_decay=args.weight_decay, decay_on=args.weight_decay_on, max_grad_norm=args.max_grad_norm,
        seed=args.seed, dtype=args.dtype, device=args.device,
        checkpoint_every=args.checkpoint_every, overwrite=args.overwrite, allow_other_model=args.allow_other_model,
        progress=not args.no_progress, note=lambda message: print(message, file=sys.stderr),
    )
    perplexities = record["heldout_token_perplexity"]
    scored = f"; held-out perplexity {perplexities['before']:.2f} -> {perplexities['after']:.2f}" \
        if perplexities["before"] is not None else ""
    print(f"wrote {args.out}: {record['steps']} steps on {record['neuron_count']} {record['language']} neurons "
          f"({record['trained_weights']:,} weights){scored}")
    return 0
