"""Leaderboards from lm-eval results: per task family and language, each steering plan
against the unsteered baseline of the same model (:mod:`lape_harness.analysis.leaderboard_report`
writes them as Markdown, CSV and a heatmap).

Runs come from :mod:`lape_harness.analysis.results`; each family has a primary metric
(:data:`lape_harness.analysis.results.PRIMARY_METRICS`, overridable).

Plans run with a neuron set and with its random control (:mod:`lape_harness.controls`; the
control file is ``<set>-control-s<SEED>.safetensors``) are paired:
:func:`~lape_harness.analysis.specificity.specificity` gives each plan's effect next to its
control's, counted in the direction the plan means (docs/controls.md).

Nothing is guessed: a plan whose model has no baseline gets no difference, several models
are compared each with its own baseline, runs whose sample counts differ are not
subtracted, and a metric a task does not report is skipped; each case becomes a note in
the output (and on stderr from the CLI).

Example:
    >>> board = build_leaderboard(load_runs(["results/sweep"]))        # doctest: +SKIP
    >>> [row.delta for row in board.averages if row.plan == "-de"]      # doctest: +SKIP
    [0.31]
    >>> parse_metric_overrides(["forcing=clean_target_rate", "acc"])
    {'forcing': 'clean_target_rate', '*': 'acc'}
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass, field

from lape_harness.analysis.results import (
    BASELINE,
    FALLBACK_METRICS,
    PRIMARY_METRICS,
    Run,
    as_float,
    classify_task,
    is_perplexity,
    metric_key,
    plan_labels,
)
from lape_harness.analysis.specificity import Specificity, specificity
from lape_harness.errors import InputError


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
    specificity: list[Specificity] = field(default_factory=list)


def build_leaderboard(runs: list[Run], metric: dict[str, str] | None = None, notes: list[str] | None = None) -> Leaderboard:
    """Rows per (model, family, language, plan) with differences from the model's baseline.

    ``metric`` overrides the primary metric per family, e.g. ``{"forcing": "clean_target_rate"}``
    (the key ``"*"`` applies to every family).
    """
    metric = dict(metric or {})
    notes = list(notes or [])
    labels = plan_labels(runs)
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
        placed = classify_task(task, run.declared.get(task))
        if placed is None:
            unknown_tasks.add(task)
            continue
        family, language = placed
        values = run.metrics[task]
        wanted = metric.get(family) or metric.get("*")
        candidates = (wanted,) if wanted else PRIMARY_METRICS.get(family, FALLBACK_METRICS)
        key = next((k for k in (metric_key(values, name) for name in candidates) if k), None)
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
            plan=plan, score=as_float(values[key]), stderr=as_float(values.get(f"{name}_stderr,{filter_name}")),
            source=str(run.path),
        ))
    if unknown_tasks:
        notes.append(f"tasks with no known language, left out: {', '.join(sorted(unknown_tasks))}")

    _attach_baselines(rows, chosen, notes)
    averages = _averages(rows, notes)
    _confusion_averages(averages, chosen)
    plans = {}
    for model in models:
        seen = list(dict.fromkeys(row.plan for row in rows if row.model == model))
        plans[model] = sorted(seen, key=lambda plan: (plan != BASELINE, seen.index(plan)))
    return Leaderboard(rows, averages, notes, models, plans, specificity(rows, notes))


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


def _confusion_averages(averages: list[Row], chosen) -> None:
    """The Language Confusion Benchmark's families (``lape_lcb_<setting>_<source>``) averaged as the
    benchmark averages a source: LPR and WPR each over the source's languages (WPR over those that
    have it), LCPR the harmonic mean of those two averages, not the mean of per-language LCPRs
    (:func:`~lape_harness.task_support.confusion.benchmark_averages`)."""
    from lape_harness.task_support.confusion import benchmark_averages

    def report(model: str, plan: str, family: str) -> tuple[dict, int] | None:
        prefix = family + "_"
        scores = {}
        for (run_model, run_plan, task), (run, _label) in chosen.items():
            values = run.metrics[task]
            if run_model == model and run_plan == plan and task.startswith(prefix) and "lpr,none" in values:
                scores[("source", task.removeprefix(prefix))] = {"lpr": as_float(values["lpr,none"]),
                                                                 "wpr": as_float(values.get("wpr,none"))}
        return (benchmark_averages(scores)[("source", "all")], len(scores)) if scores else None

    confusion = [row for row in averages if row.family.startswith("lape_lcb_") and row.metric in ("lpr", "wpr", "lcpr")]
    scores = {}
    for row in confusion:
        found = report(row.model, row.plan, row.family)
        if found is not None:
            averaged, count = found
            row.score = averaged[row.metric]
            row.task = f"the benchmark's average over {count} languages" + (
                " (LCPR: harmonic mean of the averaged LPR and WPR)" if row.metric == "lcpr" else "")
        scores[(row.model, row.family, row.metric, row.plan)] = row.score
    for row in confusion:
        base = scores.get((row.model, row.family, row.metric, BASELINE))
        if row.plan != BASELINE and row.delta is not None and base is not None and row.score is not None:
            row.baseline, row.delta = base, row.score - base
            row.relative = row.delta / base if base > 0 else None


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _geometric_mean(values: list[float]) -> float | None:
    if not values or any(v <= 0 for v in values):
        return _mean(values)
    return math.exp(sum(math.log(v) for v in values) / len(values))


def parse_metric_overrides(items) -> dict[str, str]:
    """``["forcing=clean_target_rate", "acc"]`` → ``{"forcing": "clean_target_rate", "*": "acc"}``."""
    overrides = {}
    for item in items or []:
        family, _, name = item.rpartition("=")
        if not re.fullmatch(r"[\w.\-]+", name or ""):
            raise InputError(f"--metric {item!r}: expected FAMILY=METRIC or METRIC, e.g. --metric forcing=clean_target_rate")
        overrides[family or "*"] = name
    return overrides
