"""Draw random matched controls for existing neuron sets.

For every language and layer of each set, as many neurons as the set has there, drawn uniformly
from the layer's neurons not selected for that language (seeded; the seed and the set it controls
are recorded in the file). With --stats (the statistics the set was identified from) the control
carries the values at its neurons and every steering method works on it; without, only deactivate
and multiply plans do. Writes <set>-control-s<SEED>.safetensors next to each set (or in --out-dir).
`lape-harness identify --random-control` does the same while identifying. See docs/controls.md.

Example:
    $ lape-harness control neuron_cache/gemma-3-270m/lape-top3.safetensors \\
        --stats neuron_cache/gemma-3-270m/stats.safetensors --seed 0 1
    wrote neuron_cache/gemma-3-270m/lape-top3-control-s0.safetensors: random control (seed 0) of top 3% = ...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "draw random matched control sets (same neurons per language and layer) for neuron sets"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("neurons", nargs="+", metavar="NEURONS", help="neuron-set file(s), e.g. lape-top3.safetensors")
    parser.add_argument("--stats", default=None, metavar="STATS",
                        help="the statistics the sets were identified from (default: none; the controls then "
                             "work only with deactivate/multiply plans)")  # fmt: skip
    parser.add_argument("--seed", nargs="+", type=int, default=[0], metavar="N",
                        help="seed(s); several write one control each (default: 0)")  # fmt: skip
    parser.add_argument("--out-dir", default=None, metavar="DIR", help="folder for the controls (default: each set's)")


def run(args: argparse.Namespace) -> int:
    from lape_harness.analysis.inspection import neuron_set_line
    from lape_harness.controls import check_seeds, control_filename, random_control
    from lape_harness.neurons import ActivationStats, NeuronSet
    from lape_harness.path_checks import check_output_dir

    seeds = check_seeds(args.seed)
    stats = ActivationStats.load(args.stats) if args.stats else None
    for path in map(Path, args.neurons):
        neuron_set = NeuronSet.load(path)
        out_dir = check_output_dir(args.out_dir or path.parent, "--out-dir")
        for seed in seeds:
            target = out_dir / control_filename(path.name, seed)
            control = random_control(neuron_set, stats, seed)
            control.save(target)
            print(f"wrote {target}: {neuron_set_line(control) if 'thresholds' in control.meta else control.counts()}")
    if stats is None:
        print("note: no --stats: the controls carry no activation values; only deactivate and multiply plans "
              "(-de, *0.5*de) work with them", file=sys.stderr)  # fmt: skip
    return 0
