"""Leaderboards from lm-eval results JSONs: per task family and language, each steering plan
against the unsteered baseline of the same model.

Reads any lm-eval results file (``lape-harness sweep`` output, ``lm_eval --output_path``
runs with ``--model hf`` or ``hf-steered``, other people's runs of this project's tasks or
of lm-eval's built-in multilingual ones). A run's *plan* is the sweep's recorded plan, else
the ``hf-steered`` signature's plan, else the ``steer=`` of its ``model_args``, else ``none`` (an unsteered ``hf`` run is a baseline).
Its *model* is the ``pretrained=`` argument. Each task is placed in a family and a
language by :mod:`lape_harness.task_languages`; each family has a primary metric
(:data:`PRIMARY_METRICS`, overridable).

Nothing is guessed: a plan whose model has no baseline gets no difference, several models
are compared each with its own baseline, runs whose sample counts differ are not
subtracted, and a metric a task does not report is skipped; each case becomes a note in
the output (and on stderr from the CLI).

Example:
    >>> board = build_leaderboard(load_runs(["results/sweep"]))        # doctest: +SKIP
    >>> write_leaderboard(board, "results/leaderboard")                # doctest: +SKIP
    ['results/leaderboard/leaderboard.md', '.../leaderboard.csv', '.../leaderboard.png']
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lape_harness.atomic import write_text_atomic
from lape_harness.errors import InputError

BASELINE = "none"

# Per family (lape_harness.task_languages.task_family): the metrics to report, best first
# (the first one a task reports is used); other families use FALLBACK_METRICS.
PRIMARY_METRICS: dict[str, tuple[str, ...]] = {
    "lape_forcing": ("target_rate", "clean_target_rate"),
    "lape_flores": ("paper_sentence_bleu", "corpus_chrf_pp", "corpus_bleu"),
    "lape_xquad": ("paper_f1", "f1", "exact_match"),
    "lape_belebele": ("acc",),
    "lape_xnli": ("acc",),
    # bytes, not words: comparable across scripts (a Chinese paragraph is one "word")
    "lape_ppl": ("byte_perplexity", "word_perplexity", "bits_per_byte"),
    "xquad": ("f1", "exact_match"),
    "mlqa": ("f1", "exact_match"),
}
FALLBACK_METRICS = ("acc", "acc_norm", "exact_match", "f1", "word_perplexity", "perplexity", "bleu", "chrf")


@dataclass
class Run:
    """One lm-eval results file."""

    path: Path
    model: str
    plan: str
    neurons: str | None
    date: float
    metrics: dict[str, dict[str, Any]]  # task -> {"acc,none": 0.5, "acc_stderr,none": 0.01, ...}
    higher_is_better: dict[str, dict[str, bool]]
    n_samples: dict[str, int | None]
    groups: set[str] = field(default_factory=set)


# --------------------------------------------------------------------------- reading


def _model_args(config: dict[str, Any]) -> dict[str, str]:
    raw = config.get("model_args")
    if isinstance(raw, dict):
        return {str(k): str(v) for k, v in raw.items()}
    if isinstance(raw, str) and raw.strip():
        if raw.strip().startswith("{"):
            try:
                return {str(k): str(v) for k, v in json.loads(raw).items()}
            except (json.JSONDecodeError, AttributeError):
                pass
        pairs = [part.split("=", 1) for part in raw.split(",") if "=" in part]
        return {key.strip(): value.strip() for key, value in pairs}
    return {}


def read_run(path: str | os.PathLike) -> Run:
    """Parse one lm-eval results JSON; :class:`InputError` if it is not one."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{str(path)!r} is not a readable JSON file ({error}); pass lm-eval results files") from None
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        raise InputError(f"{str(path)!r} has no 'results' object; it is not an lm-eval results file")
    config = data.get("config") or {}
    args = _model_args(config)
    sweep = data.get("lape_sweep") or {}
    model = str(args.get("pretrained") or data.get("model_name") or config.get("model") or "unknown model").rstrip("/")
    steering = config.get("steering") if isinstance(config.get("steering"), dict) else {}
    plan = str(sweep.get("plan") or steering.get("plan") or args.get("steer") or BASELINE)
    plan = plan.strip() or BASELINE
    neurons = sweep.get("neurons") or args.get("neurons")
    n_samples = {task: (info or {}).get("effective") for task, info in (data.get("n-samples") or {}).items()}
    groups = set(data.get("groups") or {}) | {g for g, subtasks in (data.get("group_subtasks") or {}).items() if subtasks}
    return Run(
        path=path,
        model=model,
        plan=plan,
        neurons=str(neurons) if neurons else None,
        date=float(data.get("date") or 0.0),
        metrics={task: dict(values) for task, values in data["results"].items() if isinstance(values, dict)},
        higher_is_better=dict(data.get("higher_is_better") or {}),
        n_samples=n_samples,
        groups=groups,
    )


def load_runs(paths) -> list[Run]:
    """Every results JSON in ``paths`` (files, or folders searched recursively); a folder's
    JSON files that are not lm-eval results are skipped."""
    runs = []
    for given in paths:
        given = Path(given)
        if given.is_dir():
            for candidate in sorted(given.rglob("*.json")):
                if candidate.name.startswith("."):
                    continue
                try:
                    runs.append(read_run(candidate))
                except InputError:
                    continue
        elif given.is_file():
            runs.append(read_run(given))
        else:
            raise InputError(f"{str(given)!r} does not exist; pass lm-eval results files or folders holding them")
    if not runs:
        raise InputError(f"no lm-eval results JSON found in {', '.join(map(str, paths))}; "
                         "pass the --output_path of lm_eval runs or a `lape-harness sweep` folder")
    return runs


# --------------------------------------------------------------------------- scoring


def classify_task(task: str) -> tuple[str, str] | None:
    """``(family, language label)`` of a task, or None when its language is unknown.

    The label is the language, or ``"src→tgt"`` for a task with a source and a target
    language (forcing, translation).

    >>> classify_task("lape_forcing_de_to_fr")
    ('lape_forcing', 'de→fr')
    >>> classify_task("belebele_deu_Latn")
    ('belebele', 'de')
    """
    from lape_harness.task_languages import task_family, task_languages

    languages = task_languages(task)
    if languages is None:
        return None
    label = f"{languages.source}→{languages.target}" if languages.source else languages.target
    return task_family(task), label


def _metric_key(metrics: dict[str, Any], name: str) -> str | None:
    """The results key of metric ``name`` (``"acc,none"``), filter ``none`` preferred."""
    keys = [key for key in metrics if key.split(",")[0] == name and "_stderr" not in key]
    keys.sort(key=lambda key: (not key.endswith(",none"), key))
    return keys[0] if keys else None


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


@dataclass
class Row:
    """One plan's score on one task, against its model's baseline when there is one."""

    model: str
    family: str
    language: str
    task: str
    metric: str
    higher_is_better: bool
    plan: str
    score: float | None
    stderr: float | None
    baseline: float | None = None
    baseline_stderr: float | None = None
    delta: float | None = None
    delta_stderr: float | None = None
    relative: float | None = None  # delta / baseline (shown for perplexities)
    source: str = ""


@dataclass
class Leaderboard:
    rows: list[Row]  # per task; baseline rows have plan "none"
    averages: list[Row]  # per (model, family, metric, plan), language "average"
    notes: list[str]
    models: list[str]
    plans: dict[str, list[str]]  # model -> plans in order (baseline first)


def _plan_labels(runs: list[Run]) -> dict[int, str]:
    """Label each run's plan; a model's steered runs using several neuron files get ``@file``."""
    files = defaultdict(set)
    for run in runs:
        if run.plan != BASELINE:
            files[run.model].add(run.neurons)
    labels = {}
    for position, run in enumerate(runs):
        label = run.plan
        if run.plan != BASELINE and len(files[run.model]) > 1 and run.neurons:
            label = f"{label} @{Path(run.neurons).stem}"
        labels[position] = label
    return labels


def build_leaderboard(runs: list[Run], metric: dict[str, str] | None = None, notes: list[str] | None = None) -> Leaderboard:
    """Rows per (model, family, language, plan) with differences from the model's baseline.

    ``metric`` overrides the primary metric per family, e.g. ``{"forcing": "clean_target_rate"}``
    (the key ``"*"`` applies to every family).
    """
    metric = dict(metric or {})
    notes = list(notes or [])
    labels = _plan_labels(runs)
    models = sorted({run.model for run in runs})
    if len(models) > 1:
        counts = {model: sum(run.model == model for run in runs) for model in models}
        notes.append(f"results from {len(models)} models ({'; '.join(f'{m}: {n} file(s)' for m, n in counts.items())}): "
                     "each plan is compared only with the baseline of its own model")
    # (model, plan, task) -> newest run
    chosen: dict[tuple[str, str, str], tuple[Run, str]] = {}
    unknown_tasks = set()
    for position, run in enumerate(runs):
        for task in run.metrics:
            if task in run.groups:
                continue
            key = (run.model, labels[position], task)
            if key in chosen:
                older, newer = sorted([chosen[key][0], run], key=lambda r: r.date)
                notes.append(f"{task} under plan {key[1]!r} of {run.model} appears in {older.path} and {newer.path}: "
                             f"using the newer, {newer.path}")
                if newer is not run:
                    continue
            chosen[key] = (run, labels[position])

    rows: list[Row] = []
    for (model, plan, task), (run, _label) in sorted(chosen.items()):
        placed = classify_task(task)
        if placed is None:
            unknown_tasks.add(task)
            continue
        family, language = placed
        values = run.metrics[task]
        wanted = metric.get(family) or metric.get("*")
        candidates = (wanted,) if wanted else PRIMARY_METRICS.get(family, FALLBACK_METRICS)
        key = next((k for k in (_metric_key(values, name) for name in candidates) if k), None)
        if key is None:
            notes.append(f"{task} ({run.path}) reports none of {', '.join(candidates)} "
                         f"(it has: {', '.join(sorted(k for k in values if ',' in k and '_stderr' not in k))}); skipped"
                         + ("" if wanted else f"; choose one with --metric {family}=NAME"))
            continue
        name, filter_name = key.split(",", 1)
        higher = run.higher_is_better.get(task, {}).get(name)
        rows.append(Row(
            model=model, family=family, language=language, task=task,
            metric=name if filter_name == "none" else key, higher_is_better=True if higher is None else bool(higher),
            plan=plan, score=_number(values[key]), stderr=_number(values.get(f"{name}_stderr,{filter_name}")),
            source=str(run.path),
        ))
    if unknown_tasks:
        notes.append(f"tasks with no known language, left out: {', '.join(sorted(unknown_tasks))}")

    _attach_baselines(rows, chosen, notes)
    averages = _averages(rows, notes)
    plans = {}
    for model in models:
        seen = list(dict.fromkeys(row.plan for row in rows if row.model == model))
        plans[model] = sorted(seen, key=lambda plan: (plan != BASELINE, seen.index(plan)))
    return Leaderboard(rows, averages, notes, models, plans)


def _attach_baselines(rows: list[Row], chosen, notes: list[str]) -> None:
    baselines = {(row.model, row.task, row.metric): row for row in rows if row.plan == BASELINE}
    missing = defaultdict(set)
    for row in rows:
        if row.plan == BASELINE:
            continue
        base = baselines.get((row.model, row.task, row.metric))
        if base is None:
            missing[row.model].add(row.task)
            continue
        run, _ = chosen[(row.model, row.plan, row.task)]
        base_run, _ = chosen[(row.model, BASELINE, row.task)]
        n_plan, n_base = run.n_samples.get(row.task), base_run.n_samples.get(row.task)
        if n_plan is not None and n_base is not None and n_plan != n_base:
            notes.append(f"{row.task} of {row.model}: plan {row.plan!r} scored {n_plan} samples, the baseline {n_base}; "
                         "not compared (re-run both with the same --limit)")
            continue
        row.baseline, row.baseline_stderr = base.score, base.stderr
        if row.score is not None and base.score is not None:
            row.delta = row.score - base.score
            row.relative = row.delta / base.score if base.score > 0 else None
            if row.stderr is not None and base.stderr is not None:
                row.delta_stderr = math.sqrt(row.stderr ** 2 + base.stderr ** 2)
    for model, tasks in sorted(missing.items()):
        notes.append(f"no baseline (plan 'none' or a plain hf run) for {model} on {', '.join(sorted(tasks))}: "
                     "their differences are left empty; run the baseline, e.g. add 'none' to the sweep's --plans")


def _averages(rows: list[Row], notes: list[str]) -> list[Row]:
    """Mean over languages per (model, family, metric, plan) (geometric for perplexities);
    differences only over languages that have both a plan score and a baseline."""
    groups: dict[tuple[str, str, str, str], list[Row]] = defaultdict(list)
    for row in rows:
        groups[(row.model, row.family, row.metric, row.plan)].append(row)
    metrics_per_family = defaultdict(set)
    for model, family, metric, _plan in groups:
        metrics_per_family[(model, family)].add(metric)
    for (model, family), names in sorted(metrics_per_family.items()):
        if len(names) > 1:
            notes.append(f"{family} tasks of {model} report different metrics ({', '.join(sorted(names))}): "
                         "averaged separately per metric")
    averages = []
    for (model, family, metric, plan), members in sorted(groups.items()):
        scores = [r.score for r in members if r.score is not None]
        paired = [r for r in members if r.delta is not None]
        mean = _geometric_mean if is_perplexity(metric) else _mean
        relatives = [r.relative for r in paired if r.relative is not None]
        averages.append(Row(
            model=model, family=family, language="average", metric=metric,
            task=f"mean of {len(scores)} languages; difference over the {len(paired)} with a baseline",
            higher_is_better=members[0].higher_is_better, plan=plan,
            score=mean(scores), stderr=None, baseline=mean([r.baseline for r in paired]),
            delta=_mean([r.delta for r in paired]), relative=_mean(relatives) if len(relatives) == len(paired) else None,
        ))
    return averages


def is_perplexity(metric: str) -> bool:
    """Perplexities are compared by relative change and averaged geometrically."""
    return "perplexity" in metric


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _geometric_mean(values: list[float]) -> float | None:
    if not values or any(v <= 0 for v in values):
        return _mean(values)
    return math.exp(sum(math.log(v) for v in values) / len(values))


# --------------------------------------------------------------------------- writing


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
    from lape_harness.plots import order_by_family

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
    if board.notes:
        out.append("## Notes")
        out.append("")
        out.extend(f"- {note}" for note in board.notes)
        out.append("")
    return "\n".join(out)


def plot_leaderboard(board: Leaderboard, path: str | os.PathLike) -> dict[str, Any]:
    """Heatmap per (model, family, metric): rows = steered plans, columns = languages + average,
    cells = difference from the baseline (blue = better, red = worse). Returns the matrices."""
    import numpy as np

    from matplotlib.colors import Normalize

    from lape_harness.plots import _annotate, _pyplot, _save, percent_norm

    plt = _pyplot()
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
        _annotate(axis, matrix, digits, threshold=threshold, fontsize=7, dark="both")
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
    _save(figure, path)
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


def parse_metric_overrides(items) -> dict[str, str]:
    """``["forcing=clean_target_rate", "acc"]`` → ``{"forcing": "clean_target_rate", "*": "acc"}``."""
    overrides = {}
    for item in items or []:
        family, _, name = item.rpartition("=")
        if not re.fullmatch(r"[\w.\-]+", name or ""):
            raise InputError(f"--metric {item!r}: expected FAMILY=METRIC or METRIC, e.g. --metric forcing=clean_target_rate")
        overrides[family or "*"] = name
    return overrides
