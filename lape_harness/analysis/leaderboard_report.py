"""Writing a :class:`~lape_harness.analysis.leaderboard.Leaderboard`: Markdown tables (languages ×
plans, ``score ± stderr (Δ vs baseline)``), a long-format CSV and a heatmap of the differences.

Example:
    >>> board = build_leaderboard(load_runs(["results/sweep"]))        # doctest: +SKIP
    >>> write_leaderboard(board, "results/leaderboard")                # doctest: +SKIP
    ['results/leaderboard/leaderboard.md', '.../leaderboard.csv', '.../leaderboard.png']
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from lape_harness.analysis.figures import annotate, percent_norm, pyplot, save_figure
from lape_harness.analysis.leaderboard import Leaderboard, Row
from lape_harness.analysis.results import BASELINE, is_perplexity
from lape_harness.atomic import write_text_atomic
from lape_harness.errors import InputError
from lape_harness.languages import order_by_family


def _fmt(value: float | None, sign: bool = False) -> str:
    """Four decimals for scores, fewer for large values, scientific beyond 10⁴."""
    if value is None:
        return ""
    size = abs(value)
    spec = ".4f" if size < 10 else (".2f" if size < 1e4 else ".3e")
    return format(value, ("+" if sign else "") + spec)


def _exact(value: float | None) -> str:
    return "" if value is None else format(value, ".8g")


CSV_COLUMNS = ("model", "family", "language", "task", "metric", "higher_is_better", "plan", "score", "stderr",
               "baseline", "baseline_stderr", "delta", "delta_stderr", "relative_delta", "source")


def to_csv(board: Leaderboard) -> str:
    """Long format: one line per (model, family, language or ``average``, plan)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in board.rows + board.averages:
        writer.writerow([row.model, row.family, row.language, row.task, row.metric, row.higher_is_better, row.plan,
                         _exact(row.score), _exact(row.stderr), _exact(row.baseline), _exact(row.baseline_stderr),
                         _exact(row.delta), _exact(row.delta_stderr), _exact(row.relative), row.source])
    return buffer.getvalue()


def _cell(row: Row | None) -> str:
    if row is None or row.score is None:
        return "–"
    text = _fmt(row.score)
    if row.stderr is not None:
        text += f" ± {row.stderr:.4f}"
    if row.plan != BASELINE and row.delta is not None:
        relative = is_perplexity(row.metric) and row.relative is not None
        text += f" ({row.relative * 100:+.1f}%)" if relative else f" ({_fmt(row.delta, sign=True)})"
        paired = re.search(r"over the (\d+) with", row.task)
        scored = re.search(r"mean of (\d+)", row.task)
        if paired and scored and paired.group(1) != scored.group(1):
            text += f" [Δ on {paired.group(1)}/{scored.group(1)} languages]"
    return text


def _sections(board: Leaderboard):
    """(model, family, metric, languages, plans, lookup) per table."""
    keys = sorted({(r.model, r.family, r.metric) for r in board.rows})
    for model, family, metric in keys:
        members = [r for r in board.rows if (r.model, r.family, r.metric) == (model, family, metric)]
        languages = _order_labels({r.language for r in members})
        plans = [p for p in board.plans[model] if any(r.plan == p for r in members)]
        lookup = {(r.language, r.plan): r for r in members}
        lookup.update({("average", r.plan): r for r in board.averages if (r.model, r.family, r.metric) == (model, family, metric)})
        yield model, family, metric, languages, plans, lookup


def _order_labels(labels) -> list[str]:
    """Language labels in family order (``"de→fr"`` sorts by source, then target)."""
    parts = {label: label.split("→") for label in labels}
    order = order_by_family([code for split in parts.values() for code in split])
    return sorted(labels, key=lambda label: [order.index(code) for code in parts[label]])


def to_markdown(board: Leaderboard) -> str:
    """Per model and family a table: languages × plans, ``score ± stderr (Δ vs baseline)``."""
    out = ["# Leaderboard", ""]
    out.append("Cells: score ± lm-eval's standard error, and in brackets the difference from the "
               f"baseline (plan `{BASELINE}`) of the same model. The average row is the mean over languages; "
               "its difference uses only languages that have a baseline.")
    out.append("")
    for model, family, metric, languages, plans, lookup in _sections(board):
        higher = next(r.higher_is_better for (lang, plan), r in lookup.items())
        out.append(f"## {family} · {metric} ({'higher' if higher else 'lower'} is better) · {model}")
        out.append("")
        out.append("| language | " + " | ".join(f"`{plan}`" for plan in plans) + " |")
        out.append("|---|" + "---|" * len(plans))
        for language in languages + ["average"]:
            cells = [_cell(lookup.get((language, plan))) for plan in plans]
            name = "**average**" if language == "average" else language
            out.append(f"| {name} | " + " | ".join(cells) + " |")
        out.append("")
    if board.specificity:
        out += _specificity_table(board)
    if board.notes:
        out.append("## Notes")
        out.append("")
        out.extend(f"- {note}" for note in board.notes)
        out.append("")
    return "\n".join(out)


def _specificity_table(board: Leaderboard) -> list[str]:
    out = ["## Specificity: each plan against its random control", "",
           "Effect: the change from the baseline (relative for perplexities) on the languages the plan names, "
           "counted in the direction the plan means: harm for deactivations and factors below 1, a push for "
           "additions, replacements and factors above 1 (auto: each task's own language). Difference = effect with "
           "the set − effect with its random control (same neurons per language and layer, drawn at random), with "
           "its standard error; ratio = effect / control effect, only where the control effect is more than 2 "
           "standard errors from 0 (docs/controls.md).", "",
           "| model | family · metric | plan | language | effect | control effect | difference (± SE) | ratio |",
           "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for item in board.specificity:
        percent = is_perplexity(item.metric)
        show = (lambda v: f"{v * 100:+.1f}%") if percent else (lambda v: _fmt(v, sign=True))
        error = "" if item.difference_stderr is None else (
            f" ± {item.difference_stderr * 100:.1f}%" if percent else f" ± {_fmt(item.difference_stderr)}")
        ratio = f"{item.ratio:.2f}" if item.ratio is not None else f"— ({item.note})"
        out.append(f"| {item.model} | {item.family} · {item.metric} | `{item.plan}` vs `{item.control}` | "
                   f"{item.language} | {show(item.effect)} | {show(item.control_effect)} | "
                   f"{show(item.difference)}{error} | {ratio} |")
    return out + [""]


def plot_leaderboard(board: Leaderboard, path: str | os.PathLike) -> dict[str, Any]:
    """Heatmap per (model, family, metric): rows = steered plans, columns = languages + average,
    cells = difference from the baseline (blue = better, red = worse). Returns the matrices."""
    from matplotlib.colors import Normalize

    plt = pyplot()
    panels = []
    for model, family, metric, languages, plans, lookup in _sections(board):
        steered = [plan for plan in plans if plan != BASELINE]
        if not steered:
            continue
        columns = languages + ["average"]
        relative = is_perplexity(metric)
        matrix = np.array([[_delta(lookup.get((lang, plan)), relative) for lang in columns] for plan in steered],
                          dtype=float)
        if not np.isfinite(matrix).any():
            continue
        higher = next(r.higher_is_better for r in lookup.values())
        panels.append((model, family, metric, steered, columns, matrix, higher, relative))
    if not panels:
        raise InputError("nothing to plot: no steered plan has a baseline to compare with; "
                         "add the baseline run (plan 'none' or a plain hf run) to the inputs")
    heights = [max(1.6, 0.42 * len(p[3]) + 1.4) for p in panels]
    width = max(7.0, min(26.0, 0.62 * max(len(p[4]) for p in panels) + 4))
    figure, axes = plt.subplots(len(panels), 1, figsize=(width, sum(heights) + 0.4),
                                gridspec_kw={"height_ratios": heights}, squeeze=False)
    numbers = {}
    for axis, (model, family, metric, steered, columns, matrix, higher, relative) in zip(axes[:, 0], panels):
        finite = np.abs(matrix[np.isfinite(matrix)])
        limit = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
        norm = percent_norm(limit) if relative else Normalize(-limit, limit)
        image = axis.imshow(np.ma.masked_invalid(matrix), aspect="auto", norm=norm,
                            cmap="RdBu" if higher else "RdBu_r", interpolation="nearest")
        axis.set_facecolor("#dddddd")
        digits = ".3f" if limit < 0.1 else (".2f" if limit < 10 else ".1f")
        threshold = min(limit * 0.6, 30) if relative else limit * 0.6
        annotate(axis, matrix, digits, threshold=threshold, fontsize=7, dark="both")
        axis.set_xticks(range(len(columns)))
        rotate = len(columns) > 12 or any("→" in column for column in columns)
        axis.set_xticklabels(columns, rotation=60 if rotate else 0, fontsize=8, ha="right" if rotate else "center")
        axis.set_yticks(range(len(steered)))
        axis.set_yticklabels([f"steer={plan}" for plan in steered], fontsize=8)
        axis.set_xlabel("language (grey = no baseline to compare)")
        axis.set_ylabel("plan")
        axis.axvline(len(columns) - 1.5, color="black", linewidth=1)
        change = f"relative change of {metric} (%)" if relative else f"Δ {metric}"
        axis.set_title(f"{family}: {change} vs no steering ({os.path.basename(model)})", fontsize=10)
        better = "blue = better (higher)" if higher else "blue = better (lower)"
        figure.colorbar(image, ax=axis, label=f"{change}\n{better}", fraction=0.035, pad=0.02)
        numbers[(model, family, metric)] = {"plans": steered, "languages": columns, "delta": matrix.tolist()}
    figure.tight_layout()
    save_figure(figure, path)
    return numbers


def _delta(row: Row | None, relative: bool = False) -> float:
    value = None if row is None else (row.relative * 100 if relative and row.relative is not None else
                                       (None if relative else row.delta))
    return math.nan if value is None else value


def write_leaderboard(board: Leaderboard, out_dir: str | os.PathLike, plot: bool = True) -> list[str]:
    """Write ``leaderboard.md``, ``leaderboard.csv`` and (when something has a baseline)
    ``leaderboard.png`` into ``out_dir``; returns the paths written."""
    out = Path(out_dir)
    written = []
    for name, text in (("leaderboard.md", to_markdown(board)), ("leaderboard.csv", to_csv(board))):
        write_text_atomic(out / name, text)
        written.append(str(out / name))
    if plot and any(row.delta is not None for row in board.rows):
        plot_leaderboard(board, out / "leaderboard.png")
        written.append(str(out / "leaderboard.png"))
    return written
