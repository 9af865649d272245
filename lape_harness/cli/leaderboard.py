"""Compare steering plans with the unsteered baseline, per task family and language.

Reads lm-eval results JSONs (files, or folders searched recursively: a `lape-harness sweep`
folder, `lm_eval --output_path` folders of `hf` / `hf-steered` runs, other people's runs of
this project's tasks or of lm-eval's built-in multilingual tasks) and writes
leaderboard.md, leaderboard.csv and leaderboard.png into --out. Each plan is compared with
the baseline (plan `none`, or a plain `hf` run) of the same model; missing baselines,
several models, unequal sample counts, missing metrics and results files that could not be
read are reported as notes.

Example:
    $ lape-harness leaderboard results/sweep results/hf-baseline --out results/leaderboard
    $ lape-harness leaderboard results/ --metric lape_forcing=clean_target_rate --out board
"""

from __future__ import annotations

import argparse
import sys

HELP = "tables (Markdown, CSV) and a heatmap of steering plans vs the baseline from lm-eval results"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", nargs="+", metavar="RESULTS",
                        help="lm-eval results JSON files, or folders searched recursively for them")
    parser.add_argument("--out", default="leaderboard", metavar="DIR",
                        help="folder for leaderboard.md, leaderboard.csv, leaderboard.png (default: ./leaderboard)")
    parser.add_argument("--metric", action="append", default=[], metavar="[FAMILY=]METRIC",
                        help="metric to report for a task family (e.g. lape_forcing=clean_target_rate, "
                             "lape_ppl=bits_per_byte), or for every family without FAMILY=; repeatable. "
                             "Defaults: forcing target_rate, flores paper_sentence_bleu, xquad paper_f1, "
                             "belebele/xnli acc, ppl byte_perplexity (perplexities as relative change), others acc "
                             "(or the first reported of "
                             "exact_match, f1, perplexity ...)")
    parser.add_argument("--no-plot", action="store_true", help="write only the Markdown and CSV tables")


def run(args: argparse.Namespace) -> int:
    from lape_harness.analysis.leaderboard import build_leaderboard, parse_metric_overrides
    from lape_harness.analysis.leaderboard_report import write_leaderboard
    from lape_harness.analysis.results import load_runs
    from lape_harness.path_checks import check_output_dir

    check_output_dir(args.out, "--out")
    overrides = parse_metric_overrides(args.metric)
    problems: list[str] = []
    runs = load_runs(args.results, problems=problems)
    board = build_leaderboard(runs, metric=overrides, notes=problems)
    written = write_leaderboard(board, args.out, plot=not args.no_plot)
    for note in board.notes:
        print(f"note: {note}", file=sys.stderr)
    plans = sum(len(plans) for plans in board.plans.values())
    print(f"leaderboard of {len(runs)} results file(s), {len(board.models)} model(s), {plans} plan(s), "
          f"{len(board.rows)} scores ({len(board.notes)} note(s)): wrote {', '.join(written)}")
    return 0
