"""`lape-harness <subcommand>`: a thin layer over the library.

Each module in this package is one subcommand. It defines ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``, and imports heavy libraries inside
``run`` so that ``--help`` stays fast.

Example:
    $ lape-harness identify neuron_cache/tiny/stats.safetensors --top-rate 0.01 0.02
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from lape_harness import __version__
from lape_harness.errors import LapeError

# The order a user walks them in; a module not listed here comes after these.
_ORDER = ("demo", "study", "corpus", "profile", "identify", "control", "inspect", "plot", "lens", "sweep", "leaderboard",
          "serve", "fallback", "bake", "finetune", "masks")


def _subcommand_modules():
    def position(info):
        name = info.name.replace("_", "-")
        return (_ORDER.index(name) if name in _ORDER else len(_ORDER), name)

    for info in sorted(pkgutil.iter_modules(__path__), key=position):
        if not info.name.startswith("_"):
            yield info.name.replace("_", "-"), importlib.import_module(f"{__name__}.{info.name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lape-harness",
        description="Find language-specific neurons (LAPE) and steer them inside lm-evaluation-harness.",
    )
    parser.add_argument("--version", action="version", version=f"lape-harness {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in _subcommand_modules():
        sub = subparsers.add_parser(
            name,
            help=module.HELP,
            description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(sub)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except LapeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `lape-harness inspect --json FILE | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("interrupted: finished work is saved; run the same command again to resume", file=sys.stderr)
        return 130
