"""Import or export published neuron masks (Tang et al.'s List[List[LongTensor]] torch.save files).

`import` reads such a file (with torch.load(weights_only=True): lists and tensors only, nothing else is
unpickled), names its language lists with --languages (in the file's order) and its model with
--model (configuration only, for the identity and the layer/width check), and writes a neuron-set
file. With --stats (the model's `lape-harness profile` statistics) the set carries the values at its
neurons and every steering method works; without, only deactivate and multiply plans (-de, *0.5*de)
do, and additive/replacement plans are refused. `export` writes a neuron set in that format for the
authors' scripts. See docs/controls.md.

Example:
    $ lape-harness masks import LLaMA-2-7B.neuron.pth --languages en zh fr es vi id ja \\
        --model meta-llama/Llama-2-7b-hf --out neuron_cache/llama-2-7b/tang.safetensors
    $ lape-harness masks export neuron_cache/gemma-3-270m/lape-top1.safetensors --out gemma-top1.neuron.pth
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "import / export published neuron masks (List[List[LongTensor]], Tang et al.)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    read = actions.add_parser("import", help="a mask file → a neuron-set file")
    read.add_argument("masks", metavar="MASKS", nargs="?",
                      help="torch.save file holding List[List[LongTensor]]")
    read.add_argument("--languages", nargs="+", required=True, metavar="LANG",
                      help="the language of each list, in the file's order (Tang et al.'s released masks: "
                           "en zh fr es vi id ja); comma-separated works too")  # fmt: skip
    read.add_argument("--model", required=True, metavar="MODEL",
                      help="the model the masks are for (hub id, local folder or lape:gemma-3-270m); only its "
                           "configuration is read")  # fmt: skip
    read.add_argument("--stats", default=None, metavar="STATS",
                      help="the model's statistics from `lape-harness profile`: then the set carries the values "
                           "at its neurons and every steering method works (default: none; deactivate/multiply only)")  # fmt: skip
    read.add_argument("--out", required=True, metavar="FILE", help="neuron-set file to write (.safetensors)")
    write = actions.add_parser("export", help="a neuron-set file → a mask file")
    write.add_argument("neurons", metavar="NEURONS", help="neuron-set file (e.g. lape-top1.safetensors)")
    write.add_argument("--out", required=True, metavar="FILE", help="mask file to write (torch.save, e.g. .pth)")
    write.add_argument("--languages", nargs="+", default=None, metavar="LANG",
                       help="the order of the language lists (default: the paper's 21-language order when the set "
                            "holds exactly those, as the authors' scripts index masks, else the set's order); "
                            "recorded in FILE.languages.json")


def run(args: argparse.Namespace) -> int:
    from lape_harness.languages import known_codes
    from lape_harness.masks import read_masks, write_masks
    from lape_harness.neurons import ActivationStats, NeuronSet
    from lape_harness.path_checks import check_output_file

    if args.action == "export":
        check_output_file(args.out, "--out", example="masks.neuron.pth")
        neuron_set = NeuronSet.load(args.neurons)
        order = write_masks(neuron_set, args.out, args.languages and known_codes(args.languages))
        print(f"wrote {args.out}: {len(order)} languages in the order {' '.join(order)} (recorded in "
              f"{args.out}.languages.json) × {neuron_set.num_layers} layers")  # fmt: skip
        return 0
    from lape_harness.corpora import file_sha256
    from lape_harness.identity import layout_identity
    from lape_harness.masks import import_masks

    masks_path, language_values = _mask_file_and_languages(args.masks, args.languages)
    languages = known_codes(language_values)
    check_output_file(args.out, "--out", example="masks.safetensors")
    masks = read_masks(masks_path)
    stats = ActivationStats.load(args.stats) if args.stats else None
    source = {"file": str(masks_path), "sha256": file_sha256(masks_path)}
    neuron_set = import_masks(masks, languages, layout_identity(args.model), stats, source)
    if stats is not None:
        neuron_set.check_model(stats.meta.get("model"), source=args.out)
    neuron_set.save(args.out)
    counts = neuron_set.counts()
    print(f"wrote {args.out}: {sum(counts.values())} language neurons over {len(counts)} languages "
          f"({', '.join(f'{lang} {n}' for lang, n in counts.items())})")  # fmt: skip
    empty = [language for language, count in counts.items() if count == 0]
    if empty:
        print(f"warning: no neurons for {', '.join(empty)} in the masks", file=sys.stderr)
    if stats is None:
        print("note: no --stats: this set carries no activation values; only deactivate and multiply plans "
              "(-de, *0.5*de) work with it", file=sys.stderr)  # fmt: skip
    return 0


def _mask_file_and_languages(masks: str | None, languages: list[str]) -> tuple[str, list[str]]:
    """The mask file and the language values: ``--languages en zh FILE`` (the flag before the file)
    leaves the file among the languages, where it is recognised as the one value that is a file."""
    from lape_harness.errors import InputError

    if masks is not None:
        return masks, languages
    files = [value for value in languages if Path(value).is_file() or value.endswith((".pth", ".pt", ".bin"))]
    if len(files) != 1:
        raise InputError("name the mask file: lape-harness masks import MASKS --languages en zh ... --model MODEL")
    return files[0], [value for value in languages if value != files[0]]
