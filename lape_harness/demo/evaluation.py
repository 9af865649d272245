"""The study's evaluation stages, each a resumable sweep (:mod:`lape_harness.studies.sweep`) on one
steered model: the perplexity matrix (``none`` and ``-L`` on every ``lape_ppl_<M>``, with the set
and with its random control), language forcing (``none`` and the forcing plans, each also with the
control) and the hub families (``none``, each plan and its control; :mod:`lape_harness.demo.benchmarks`).

With ``vllm-steered`` each ``auto`` plan's task plans run side by side in the engine's plan slots:
one lm-eval call, one engine call per round for every pair of a forcing grid or every language of a
benchmark. A family whose data cannot load is skipped with one line (why, and how to enable it).

Example:
    >>> run_benchmarks(run, summary)        # doctest: +SKIP
    >>> summary["benchmarks"]["xnli"]["comparison"][0]["difference"]                 # doctest: +SKIP
    0.05
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lape_harness.analysis.results import Run, read_run
from lape_harness.atomic import write_text_atomic
from lape_harness.demo.analysis import forcing_summary, perplexity_summary
from lape_harness.demo.benchmarks import FAMILY_NAMES, SOURCES, family_tasks, loadable
from lape_harness.demo.modes import rate_tag


def run_benchmarks(run, summary: dict[str, Any]) -> None:
    """Every family of ``run.benchmarks`` into ``summary`` (``perplexity``, ``forcing``, ``benchmarks``)."""
    from transformers import AutoTokenizer

    families = run.benchmarks
    if "ppl" in families:
        run.sources["ppl"] = f"held-out text in {run.corpus / 'heldout'} (first {run.mode.heldout_tokens} tokens)"
        with run.stage("held-out text"):
            summary["heldout"] = heldout(run, AutoTokenizer.from_pretrained(run.path))
        with run.stage("perplexity matrix"):
            summary["perplexity"] = perplexity_matrix(run, summary["heldout"])
    if "forcing" in families:
        if len(run.forcing_languages) < 2:
            run.skipped["forcing"] = "fewer than two of the study's languages have forcing questions"
            run.say(f"forcing: skipped: {run.skipped['forcing']}; add some of {' '.join(run.mode.forcing_languages)}")
        else:
            run.sources["forcing"] = "the questions shipped with tasks/lape_forcing (questions.json)"
            with run.stage("language forcing"):
                summary["forcing"] = forcing(run)
    for family in families:
        if family not in ("ppl", "forcing"):
            result = hub_family(run, family)
            if result is not None:
                summary["benchmarks"][family] = result


def heldout(run, tokenizer) -> dict[str, dict[str, int]]:
    """The first paragraphs of each held-out file, up to the mode's token budget, in ``<run>/data``.

    Returns per language the paragraphs, tokens (as lm-eval scores them: the tokenizer's
    own special tokens included) and UTF-8 bytes.
    """
    from lape_harness.task_support.task_data import heldout_documents

    counts = {}
    with data_root(run.corpus):
        documents = {lang: heldout_documents(lang) for lang in run.languages}
    for lang, docs in documents.items():
        kept, tokens = [], 0
        for doc in docs:
            if tokens >= run.mode.heldout_tokens:
                break
            kept.append(doc)
            tokens += len(tokenizer(doc)["input_ids"])
        write_text_atomic(run.folder / "data" / "heldout" / f"{lang}.txt", "\n\n".join(kept) + "\n")
        counts[lang] = {"paragraphs": len(kept), "tokens": tokens, "bytes": sum(len(d.encode()) for d in kept)}
        if tokens < run.mode.heldout_tokens:
            run.log(f"warning: {lang} has only {tokens} held-out tokens (the {run.mode.name} mode wants "
                    f"{run.mode.heldout_tokens}); its perplexities are noisier")  # fmt: skip
    return counts


@contextmanager
def data_root(folder: Path):
    """Point the lape tasks' held-out text at ``folder/heldout`` while inside."""
    from lape_harness.task_support.task_data import DATA_ENV

    before = os.environ.get(DATA_ENV)
    os.environ[DATA_ENV] = str(folder)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(DATA_ENV, None)
        else:
            os.environ[DATA_ENV] = before


def sweep(run, name: str, plans: list[str], tasks: list[str], **options) -> dict[str, Run] | None:
    """Run lape-harness's sweep on the study's model; returns {plan label: its results}, or None for a
    share of a sharded study (its results are not all there yet). Plans without ``@file`` use the
    perplexity set. The one-line steering signature of every plan goes into ``run.signatures``."""
    from lape_harness.studies.sweep import run_sweep

    outcomes = run_sweep(
        run.model_args(), plans, tasks, run.folder / "results" / name, load_lm=run.steered_model,
        batch_size=run.batch_size, device=run.device, engine=run.engine, shard=run.shard,
        task_manager=run.task_manager(), log=lambda message: run.say(f"{name}: {message}"), **options,
    )  # fmt: skip
    if run.shard is not None:
        return None
    runs: dict[str, list[Run]] = {}
    for outcome in outcomes:
        runs.setdefault(outcome.entry.label, []).append(read_run(outcome.path))
        recorded = json.loads(Path(outcome.path).read_text(encoding="utf-8")).get("lape_sweep", {})
        signature = (recorded.get("signature") or {}).get("signature")
        if signature:
            run.signatures.setdefault(name, {})[outcome.entry.label] = signature
    return {label: merge_runs(parts) for label, parts in runs.items()}


def merge_runs(parts: list[Run]) -> Run:
    """One run of a plan from its cells' runs (a sharded sweep writes one results file per cell)."""
    if len(parts) == 1:
        return parts[0]
    from dataclasses import replace

    merged = replace(parts[0], metrics={}, higher_is_better={}, n_samples={}, groups=set(), declared={}, notes=[])
    for part in parts:
        for attribute in ("metrics", "higher_is_better", "n_samples", "declared"):
            getattr(merged, attribute).update(getattr(part, attribute))
        merged.groups |= part.groups
        merged.notes += part.notes
    return merged


def perplexity_matrix(run, held: dict) -> dict[str, Any] | None:
    """``none`` and ``-L`` for every language, with the set and with its random control."""
    control = run.control_file(run.mode.ppl_rate)
    plans = ["none"] + [f"-{lang}" for lang in run.languages]
    tasks = [f"lape_ppl_{lang}" for lang in run.languages]
    with data_root(run.folder / "data"):
        name = f"perplexity_{rate_tag(run.mode.ppl_rate)}_{run.mode.heldout_tokens}tok"  # the sweep's inputs
        runs = sweep(run, name, plans + [f"{plan}@{control}" for plan in plans[1:]], tasks)
    if runs is None:
        return None
    control_runs = {plan: runs.pop(f"{plan}@{control}") for plan in plans[1:]}
    return perplexity_summary(runs, run.languages, held, rate_tag(run.mode.ppl_rate), control_runs)


def _forcing_conditions(run) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """The forcing plans (the mode's grid, or ``run.plans`` at the first forcing rate), each main
    setting also with the set's random control: ``(conditions by plan entry, their labels)``."""
    conditions: dict[str, dict[str, Any]] = {"none": {"condition": "none"}}
    labels = {"none": "none"}
    grid = run.mode.forcing_grid()
    settings = [(rate, strength.plans().items(), (rate, strength) == grid[0]) for rate, strength in grid]
    if run.plans is not None:
        settings = [(grid[0][0], [("plan", plan) for plan in run.plans], True)]
    for rate, plans, main in settings:
        for condition, spec in plans:
            label = f"{spec}@{run.neuron_file(rate)}"
            labels[label] = f"{spec}@{rate_tag(rate)}"
            strength = next((s for r, s in grid if r == rate), None) if condition != "plan" else None
            info = {"condition": condition, "rate": rate, "steer": spec}
            if strength is not None:
                info.update(alpha=strength.alpha, fill=strength.fill if condition != "activate" else None)
            conditions.setdefault(label, info)
            if main:  # the main setting is also run with the set's random control
                control = f"{spec}@{run.control_file(rate)}"
                labels[control] = f"{labels[label]}-control"
                conditions.setdefault(control, {**info, "control_of": labels[label]})
    return conditions, labels


def forcing(run) -> dict[str, Any] | None:
    mode = run.mode
    pairs = [(s, t) for s in run.forcing_languages for t in run.forcing_languages if s != t]
    tasks = [f"lape_forcing_{s}_to_{t}" for s, t in pairs]
    conditions, labels = _forcing_conditions(run)
    runs = sweep(run, "forcing", list(conditions), tasks, limit=mode.forcing_prompts,
                 gen_kwargs=f"max_gen_toks={mode.max_gen_toks}", log_samples=True)  # fmt: skip
    if runs is None:
        return None
    summary = forcing_summary(runs, conditions, pairs, labels)
    return {**summary, "prompts_per_pair": mode.forcing_prompts, "max_gen_toks": mode.max_gen_toks}


def hub_family(run, family: str) -> dict[str, Any] | None:
    """``none``, each plan (default ``auto``) and its random control on the family's tasks for the
    study's languages, at most ``mode.bench_limit`` examples each; None (and one line) when skipped."""
    from lape_harness.analysis.comparison import compare_with_controls
    from lape_harness.analysis.leaderboard import build_leaderboard
    from lape_harness.task_support.task_data import DATA_ENV, local_root

    source, enable = SOURCES[family]
    tasks = family_tasks(family, run.languages, set(run.task_manager().all_tasks))
    problems = {family: f"no lape task covers the study's languages ({' '.join(run.languages)})"} if not tasks else {}
    if tasks:
        tasks, problems = loadable(family, tasks, run.task_manager())
    if not tasks:
        run.skipped[family] = "; ".join(f"{name}: {why}" if name != family else why for name, why in problems.items())
        run.say(f"{family}: skipped: {run.skipped[family]}; to enable: {enable}")
        return None
    for task, why in problems.items():
        run.say(f"{family}: {task} left out: its data does not load ({why}); to enable: {enable}")
    run.sources[family] = f"local copies under {DATA_ENV}={local_root()}" if local_root() else source
    rate = run.mode.forcing_rates[0]
    plans = run.plans or ["auto"]
    entries = (["none"] + [f"{plan}@{run.neuron_file(rate)}" for plan in plans]
               + [f"{plan}@{run.control_file(rate)}" for plan in plans])  # fmt: skip
    with run.stage(family):
        runs = sweep(run, f"{family}_{rate_tag(rate)}_{run.mode.bench_limit}ex", entries, tasks,
                     limit=run.mode.bench_limit)  # fmt: skip
    if runs is None:
        return None
    board = build_leaderboard(list(runs.values()))
    return {
        "family": FAMILY_NAMES[family], "tasks": tasks, "examples_per_task": run.mode.bench_limit,
        "neuron_set": rate_tag(rate), "plans": plans, "comparison": compare_with_controls(board, FAMILY_NAMES[family]),
        "notes": board.notes,
    }  # fmt: skip
