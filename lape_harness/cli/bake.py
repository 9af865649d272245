"""Write a new Hugging Face checkpoint with a steering plan folded into its weights.

For engines without Python hooks (vLLM, llama.cpp, TensorRT): multiplications (*β*L: a ← β·a)
and zeroing deactivations (-L: a ← 0) become a scaling of the matching down-projection input
columns, which is exact. Plans with additive, replacement, diffmean or probability terms, or
deactivations with a non-zero fill, are refused with an explanation (run them with hf-steered).
The plan, the neuron file and its hash are recorded in <out>/lape_harness_bake.json and in the
config attribute lape_harness_bake.

Example:
    $ lape-harness bake --model ./my-llama --neurons neuron_cache/my-llama/lape-top1.safetensors \\
          --steer='-en*0.5*fr' --out baked/my-llama-no-en
"""

from __future__ import annotations

import argparse

HELP = "fold a multiplicative/zeroing steering plan into a new checkpoint's weights"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="Hugging Face model id or local folder (or lape:gemma-3-270m); required")  # fmt: skip
    parser.add_argument("--neurons", required=True, help="neuron-set file from `lape-harness identify`; required")
    parser.add_argument("--steer", required=True,
                        help="the plan, in the steer= language, made of '*β*L' and '-L' terms only, e.g. "
                             "--steer=-en or --steer='-en*0.5*fr' (attach a plan that starts with '-' with '='); "
                             "required")  # fmt: skip
    parser.add_argument("--out", required=True, help="folder for the baked checkpoint; required")
    parser.add_argument("--dtype", choices=["auto", "bfloat16", "float16", "float32"], default="auto",
                        help="dtype of the baked weights (default: auto = the checkpoint's own)")  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists (default: refuse)")
    parser.add_argument("--allow-other-model", action="store_true",
                        help="bake with a neuron set made for another model (other id and configuration) on "
                             "purpose (default: refuse)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from lape_harness.steering.bake import bake_checkpoint

    record = bake_checkpoint(args.model, args.neurons, args.steer, args.out, args.dtype, args.overwrite,
                             allow_other_model=args.allow_other_model)
    edited = record["edited_neurons_per_layer"]
    print(
        f"wrote {args.out}: steer={record['plan']} folded into {sum(edited.values())} down-projection inputs "
        f"over {len(edited)} layers (neurons {record['neurons_hash'][:12]})"
    )
    return 0
