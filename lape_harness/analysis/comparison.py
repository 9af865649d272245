"""Per benchmark and language: no steering, a plan and the plan's random control side by side, with
the differences and their standard errors (the study's per-benchmark table and picture).

Reads a :class:`~lape_harness.analysis.leaderboard.Leaderboard` (scores, lm-eval's standard
errors, differences from the baseline) and pairs each plan with its control the way
:mod:`lape_harness.analysis.specificity` does (``<plan> @<set>-control-s<seed>``). Standard errors
of differences are those of independent runs (root of the summed squares): lm-eval reports one
standard error per run, not per pair of runs.

Example:
    >>> rows = compare_with_controls(build_leaderboard(load_runs(["results/xnli"])), "lape_xnli")  # doctest: +SKIP
    >>> rows[0]["language"], rows[0]["difference"], rows[0]["difference_stderr"]          # doctest: +SKIP
    ('de', 0.05, 0.021)
    >>> plot_comparison(rows, "xnli.png", "lape_xnli (acc)")                              # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from typing import Any

import numpy as np

from lape_harness.analysis.figures import pyplot, save_figure
from lape_harness.analysis.specificity import control_of


def _se(*errors: float | None) -> float | None:
    return None if any(error is None for error in errors) else math.sqrt(sum(error ** 2 for error in errors))


def compare_with_controls(board, family: str) -> list[dict[str, Any]]:
    """One row per (steered plan with a control run, language) of the families starting with ``family``
    (``lape_lcb_monolingual`` takes every source): ``none``, ``plan`` and
    ``control`` scores with their standard errors, ``plan_delta`` (plan − none), ``control_delta``
    (control − none) and ``difference`` (plan − control), each with ``*_stderr`` (None where lm-eval
    gave no standard error), plus ``metric`` and ``higher_is_better``."""
    cells: dict[str, dict[str, Any]] = defaultdict(dict)
    for row in board.rows:
        if row.family.startswith(family):
            cells[row.plan][row.language] = row
    table = []
    for control_plan, by_language in cells.items():
        plan = control_of(control_plan)
        if plan is None or plan not in cells:
            continue
        for language, control in by_language.items():
            real = cells[plan].get(language)
            if real is None or real.score is None or control.score is None or real.baseline is None:
                continue
            table.append({
                "plan": plan, "control": control_plan, "language": language, "metric": real.metric,
                "higher_is_better": real.higher_is_better,
                "none": real.baseline, "none_stderr": real.baseline_stderr,
                "plan_score": real.score, "plan_stderr": real.stderr,
                "control_score": control.score, "control_stderr": control.stderr,
                "plan_delta": real.score - real.baseline, "plan_delta_stderr": _se(real.stderr, real.baseline_stderr),
                "control_delta": control.score - real.baseline,
                "control_delta_stderr": _se(control.stderr, real.baseline_stderr),
                "difference": real.score - control.score, "difference_stderr": _se(real.stderr, control.stderr),
            })  # fmt: skip
    return sorted(table, key=lambda row: (row["plan"], row["language"]))


def plot_comparison(rows: list[dict[str, Any]], path: str | os.PathLike, title: str) -> None:
    """Two panels per plan: the scores under none, the plan and its control per language (bars with ±1
    standard error), and the plan's and the control's difference from none (±1 SE)."""
    plt = pyplot()
    plans = list(dict.fromkeys(row["plan"] for row in rows))
    figure, axes = plt.subplots(len(plans), 2, figsize=(12, 3.2 * len(plans)), squeeze=False)
    for (scores, deltas), plan in zip(axes, plans):
        mine = [row for row in rows if row["plan"] == plan]
        x = np.arange(len(mine))
        languages = [row["language"] for row in mine]

        def errors(key: str, mine=mine) -> list[float]:
            return [row[key] if row[key] is not None else 0.0 for row in mine]

        for offset, (key, label, colour) in enumerate((("none", "none", "#999999"), ("plan_score", plan, "#1f77b4"),
                                                       ("control_score", "random control", "#ff7f0e"))):
            se_key = "none_stderr" if key == "none" else key.replace("score", "stderr")
            scores.bar(x + (offset - 1) * 0.27, [row[key] for row in mine], 0.27, yerr=errors(se_key), label=label,
                       color=colour, capsize=2)
        scores.set_xticks(x, languages, fontsize=8)
        scores.set_ylabel(mine[0]["metric"])
        scores.set_title(f"{title}: {plan}", fontsize=9)
        scores.legend(fontsize=7)
        for offset, (key, label, colour) in enumerate((("plan_delta", "plan − none", "#1f77b4"),
                                                       ("control_delta", "control − none", "#ff7f0e"))):
            deltas.bar(x + (offset - 0.5) * 0.4, [row[key] for row in mine], 0.4, yerr=errors(f"{key}_stderr"),
                       label=label, color=colour, capsize=2)
        deltas.axhline(0, color="black", linewidth=0.6)
        deltas.set_xticks(x, languages, fontsize=8)
        deltas.set_title("difference from no steering (±1 SE)", fontsize=9)
        deltas.legend(fontsize=7)
    figure.tight_layout()
    save_figure(figure, path)


def comparison_markdown(rows: list[dict[str, Any]]) -> list[str]:
    """The comparison as a Markdown table (one line per plan and language)."""

    def pm(value: float, stderr: float | None) -> str:
        return f"{value:+.3f}" + ("" if stderr is None else f" ± {stderr:.3f}")

    lines = ["| plan | language | none | plan | random control | plan − none | control − none | plan − control |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| `{row['plan']}` | {row['language']} | {row['none']:.3f} | {row['plan_score']:.3f} | "
                     f"{row['control_score']:.3f} | {pm(row['plan_delta'], row['plan_delta_stderr'])} | "
                     f"{pm(row['control_delta'], row['control_delta_stderr'])} | "
                     f"{pm(row['difference'], row['difference_stderr'])} |")
    return lines
