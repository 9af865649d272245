"""Select language-specific neurons (LAPE) from activation statistics.

Writes one neuron-set file per top rate, named after the rate in percent
(lape-top1.safetensors for 0.01, lape-top0.5.safetensors for 0.005), next to the
statistics file unless --out-dir says otherwise. The entropies are computed once for all
rates. See docs/identify.md for the method and every threshold.

Example:
    $ lape-harness identify neuron_cache/tiny/stats.safetensors --top-rate 0.01 0.02 0.03 0.04 0.05
    wrote neuron_cache/tiny/lape-top1.safetensors: top 1% = 10 candidates, 10 kept; 14 language neurons
    over 6 languages (fewest ru 0, most es 4), 10 distinct
    ...
    $ lape-harness identify neuron_cache/tiny/stats.safetensors --top-rate 0.03 --random-control --seed 0 1
    wrote neuron_cache/tiny/lape-top3.safetensors: ...
    wrote neuron_cache/tiny/lape-top3-control-s0.safetensors: ...
    wrote neuron_cache/tiny/lape-top3-control-s1.safetensors: ...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "select language-specific neurons (LAPE) from activation statistics"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("stats", metavar="STATS", help="statistics file written by `lape-harness profile`")
    parser.add_argument(
        "--top-rate", nargs="+", type=float, default=[0.01, 0.02, 0.03, 0.04, 0.05], metavar="RATE",
        help="fraction of all neurons (all layers jointly) kept as candidates, in (0, 1]; several values "
             "write one file each (default: 0.01 0.02 0.03 0.04 0.05, the paper's ratios 1..5)",
    )  # fmt: skip
    parser.add_argument(
        "--filter-rate", type=float, default=0.95, metavar="Q",
        help="quantile of all activation probabilities a neuron must exceed for some language to be a "
             "candidate, in (0, 1) (default: 0.95)",
    )  # fmt: skip
    parser.add_argument(
        "--activation-bar-ratio", type=float, default=0.95, metavar="Q",
        help="quantile of all activation probabilities a candidate must exceed for a language to belong "
             "to it, in (0, 1) (default: 0.95)",
    )  # fmt: skip
    parser.add_argument(
        "--languages", nargs="+", default=None, metavar="LANG",
        help="identify over this subset of the profiled languages, in this order (default: all of them)",
    )  # fmt: skip
    parser.add_argument(
        "--exclusive", action="store_true",
        help="also write each set with only the neurons no other language shares "
             "(lape-top<N>-exclusive.safetensors)",
    )  # fmt: skip
    parser.add_argument(
        "--random-control", action="store_true",
        help="also write, for every set, a random matched control (lape-top<N>-control-s<SEED>.safetensors): "
             "per language and layer as many neurons as the set has, drawn uniformly from the neurons not "
             "selected for that language, with the statistics' values there (docs/controls.md)",
    )  # fmt: skip
    parser.add_argument(
        "--seed", nargs="+", type=int, default=None, metavar="N",
        help="seed(s) of the random controls (with --random-control); several write one control each (default: 0)",
    )  # fmt: skip
    parser.add_argument(
        "--out-dir", default=None, metavar="DIR",
        help="folder for the neuron-set files (default: the statistics file's folder)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from lape_harness.analysis.inspection import neuron_set_line
    from lape_harness.controls import check_seeds, control_filename, random_control
    from lape_harness.errors import InputError
    from lape_harness.languages import language_list
    from lape_harness.lape import identify_many, neuron_set_filename
    from lape_harness.neurons import ActivationStats
    from lape_harness.path_checks import check_output_dir

    if args.seed is not None and not args.random_control:
        raise InputError("--seed seeds the random controls only: add --random-control, or drop --seed")
    seeds = check_seeds(args.seed if args.seed is not None else [0])
    out_dir = check_output_dir(args.out_dir or Path(args.stats).parent, "--out-dir")
    stats = ActivationStats.load(args.stats)
    languages = language_list(args.languages) if args.languages else None
    top_rates = list(dict.fromkeys(args.top_rate))
    sets = identify_many(stats, top_rates, args.filter_rate, args.activation_bar_ratio, languages)
    written = {}
    for top_rate, neuron_set in sets.items():
        variants = {neuron_set_filename(top_rate): neuron_set}
        if args.exclusive:
            variants[neuron_set_filename(top_rate, exclusive=True)] = neuron_set.exclusive()
        if args.random_control:
            variants.update({control_filename(name, seed): random_control(variant, stats, seed)
                             for name, variant in list(variants.items()) for seed in seeds})  # fmt: skip
        written.update({name: (top_rate, variant) for name, variant in variants.items()})
    _refuse_other_models_sets(out_dir, written, stats)
    for name, (top_rate, variant) in written.items():
        variant.save(out_dir / name)
        print(f"wrote {out_dir / name}: {neuron_set_line(variant)}")
        empty = [language for language, count in variant.counts().items() if count == 0]
        if empty:
            print(f"warning: {name}: {', '.join(empty)} got no neurons at top rate {top_rate:g}; steering "
                  f"{'them' if len(empty) > 1 else 'it'} with this file is an error: use a higher --top-rate "
                  "for them", file=sys.stderr)
    return 0


def _refuse_other_models_sets(out_dir: Path, names, stats) -> None:
    """Before anything is written: a file to be replaced must hold a set of the same model."""
    from lape_harness.errors import InputError
    from lape_harness.identity import compare_identity
    from lape_harness.neurons import NeuronFileError, NeuronSet

    for name in names:
        path = out_dir / name
        if not path.is_file():
            continue
        try:
            recorded = NeuronSet.load(path).meta.get("model") or {}
        except NeuronFileError:
            continue  # not a readable set: nothing of value is replaced
        current = stats.meta.get("model") or {}
        verdict, differences = compare_identity(recorded, current)
        same_config = recorded.get("config_hash") and recorded.get("config_hash") == current.get("config_hash")
        if verdict == "other" or (verdict == "unsure" and not same_config):  # another name, no hash to say it is one
            raise InputError(f"{path} holds the neuron set of another model ({'; '.join(differences)}); nothing "
                             "was written: pass --out-dir with a folder of this model's own, or delete that file")
