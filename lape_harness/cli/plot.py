"""Pictures of a neuron set and of steering results, with their numbers.

--neurons FILE (a neuron set from `lape-harness identify`) writes neurons_per_layer.png
(neurons per layer per language), overlap.png (Jaccard overlap, languages ordered by family,
scripts in the labels), specialization.png (depth and exclusivity per language, by script)
and neurons.md (the numbers, also printed): do neurons sit in deeper layers, are non-Latin
scripts more specific, do related languages overlap?

--results PATH... (lm-eval results JSONs or folders, e.g. a `lape-harness sweep` folder)
writes ppl_change.png (plans `-L` vs `none` on lape_ppl_* tasks: relative perplexity change,
rows = deactivated language, columns = evaluated language), forcing.png (lape_forcing_*
success, rows = source, columns = target) and results.md with the numbers.

Example:
    $ lape-harness plot --neurons neuron_cache/gemma-3-270m/lape-top1.safetensors --out plots
    $ lape-harness plot --results results/sweep --forcing-plan auto --out plots
"""

from __future__ import annotations

import argparse
import sys

HELP = "plots of a neuron set (per layer, overlap, specialization) and of results (ppl change, forcing)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--neurons", metavar="FILE", help="neuron-set file (lape-topN.safetensors) to draw")
    parser.add_argument("--results", nargs="+", default=[], metavar="PATH",
                        help="lm-eval results JSONs or folders (searched recursively) to draw matrices from")
    parser.add_argument("--out", default="plots", metavar="DIR", help="folder for the PNGs and Markdown (default: ./plots)")
    parser.add_argument("--model", default=None,
                        help="with results from several models: the pretrained= value to draw (default: the only one)")
    parser.add_argument("--forcing-plan", default=None, metavar="PLAN",
                        help="plan whose forcing results to draw (default: the only plan with lape_forcing results)")
    parser.add_argument("--forcing-metric", default="target_rate",
                        help="forcing metric: target_rate (the paper's) or clean_target_rate (default: target_rate)")
    parser.add_argument("--ppl-metric", default="byte_perplexity",
                        help="perplexity metric: byte_perplexity (comparable across scripts), word_perplexity or "
                             "bits_per_byte (default: byte_perplexity)")


def run(args: argparse.Namespace) -> int:
    from lape_harness.errors import InputError

    if not args.neurons and not args.results:
        raise InputError("nothing to draw: pass --neurons FILE and/or --results PATH ...")
    from lape_harness.path_checks import check_output_dir

    check_output_dir(args.out, "--out")
    written = []
    if args.neurons:
        from lape_harness.analysis.neuron_figures import neuron_report
        from lape_harness.neurons import NeuronSet

        paths, lines = neuron_report(NeuronSet.load(args.neurons), args.out)
        written += paths
        print("\n".join(lines))
    if args.results:
        from lape_harness.analysis.result_figures import results_report
        from lape_harness.analysis.results import load_runs

        problems: list[str] = []
        runs = load_runs(args.results, problems=problems)
        paths, notes = results_report(runs, args.out, model=args.model, forcing_plan=args.forcing_plan,
                                      forcing_metric=args.forcing_metric, ppl_metric=args.ppl_metric)
        for note in problems + notes:
            print(f"note: {note}", file=sys.stderr)
        if not paths:
            raise InputError("nothing could be drawn from these results (see the notes above): the matrices need "
                             "lape_ppl_* runs with plans 'none' and '-L', or lape_forcing_* runs")
        written += paths
    print(f"wrote {len(written)} file(s): {', '.join(written)}")
    return 0
