"""Reading lm-eval results: one :class:`Run` per results JSON, its plan, model and scores.

Every picture, table and summary of steering results (leaderboard, result matrices, the demo,
the sweep) reads results through this module. It reads any lm-eval results file
(``lape-harness sweep`` output, ``lm_eval --output_path`` runs with ``--model hf`` or
``hf-steered``, other people's runs of this project's tasks or of lm-eval's built-in
multilingual ones). A run's *plan* is the sweep's recorded plan, else the ``hf-steered``
signature's plan, else the ``steer=`` of its ``model_args``, else ``none`` (an unsteered ``hf``
run is the baseline). Its *model* is the ``pretrained=`` argument. Each task is placed in a
family and a language by :mod:`lape_harness.task_support.task_languages`.

Example:
    >>> runs = load_runs(["results/sweep"])                 # doctest: +SKIP
    >>> family_scores(runs[0], "lape_ppl", "byte_perplexity")  # doctest: +SKIP
    {'de': 12.3, 'en': 9.8}
    >>> classify_task("lape_ppl_de")
    ('lape_ppl', 'de')
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lape_harness.errors import InputError
from lape_harness.task_support.task_data import LCB_TEST_SETS

logger = logging.getLogger(__name__)

#: The plan of an unsteered run: every steered plan is compared with it.
BASELINE = "none"

# Per family (lape_harness.task_support.task_languages.task_family): the metrics to report, best first
# (the first one a task reports is used); other families use FALLBACK_METRICS.
PRIMARY_METRICS: dict[str, tuple[str, ...]] = {
    "lape_forcing": ("target_rate", "clean_target_rate"),
    "lape_flores": ("paper_sentence_bleu", "corpus_chrf_pp", "corpus_bleu"),
    "lape_xquad": ("paper_f1", "f1", "exact_match"),
    "lape_belebele": ("acc",),
    "lape_xnli": ("acc",),
    # bytes, not words: comparable across scripts (a Chinese paragraph is one "word")
    "lape_ppl": ("byte_perplexity", "word_perplexity", "bits_per_byte"),
    # Language Confusion Benchmark: one family per prompt form, setting and source dataset
    **{f"{prefix}_{setting}_{source}": ("lcpr", "lpr") for prefix in ("lape_lcb", "lape_lcb_base")
       for setting, sources in LCB_TEST_SETS.items() for source in sources},
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
    #: task -> the TaskLanguages its config's ``metadata.languages`` declares (tasks that declare them)
    declared: dict[str, Any] = field(default_factory=dict)
    #: what reading the file left out, for the leaderboard's notes
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- reading


def model_args(config: dict[str, Any]) -> dict[str, str]:
    """The ``model_args`` of a results ``config`` as a dict (lm-eval stores a string or a dict).

    >>> model_args({"model_args": "pretrained=gpt2,steer=-de"})
    {'pretrained': 'gpt2', 'steer': '-de'}
    """
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
    args = model_args(config)
    sweep = data.get("lape_sweep") or {}
    model = str(args.get("pretrained") or data.get("model_name") or config.get("model") or "unknown model").rstrip("/")
    steering = config.get("steering") if isinstance(config.get("steering"), dict) else {}
    plan = str(sweep.get("plan") or steering.get("plan") or args.get("steer") or BASELINE)
    plan = plan.strip() or BASELINE
    neurons = sweep.get("neurons") or args.get("neurons")
    n_samples = {task: (info or {}).get("effective") for task, info in (data.get("n-samples") or {}).items()}
    groups = set(data.get("groups") or {}) | {g for g, subtasks in (data.get("group_subtasks") or {}).items() if subtasks}
    declared, notes = _declared_languages(path, data.get("configs"))
    return Run(
        declared=declared,
        notes=notes,
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


def _declared_languages(path: Path, configs) -> tuple[dict[str, Any], list[str]]:
    """task -> TaskLanguages from each task config's ``metadata.languages`` in a results file, and a
    note for each task whose declaration is not understood (its languages then come from its name)."""
    from lape_harness.task_support.task_languages import TaskLanguagesError, declared_languages

    declared, notes = {}, []
    for task, config in (configs if isinstance(configs, dict) else {}).items():
        try:
            languages = declared_languages((config or {}).get("metadata") if isinstance(config, dict) else None)
        except TaskLanguagesError as error:
            notes.append(f"{str(path)!r}, task {task!r}: {str(error).split('; ')[0]}; its languages are read from "
                         "its name instead (fix metadata.languages in the task's YAML for later runs)")
            continue
        if languages is not None:
            declared[task] = languages
    return declared, notes


def load_runs(paths, problems: list[str] | None = None) -> list[Run]:
    """Every results JSON in ``paths`` (files, or folders searched recursively).

    A folder's JSON file that cannot be read (truncated, not JSON, not UTF-8), and a
    ``results*.json`` that is not an lm-eval results object, is left out and reported: appended
    to ``problems`` when given (the leaderboard makes them notes), else logged as a warning.
    Other JSON files that are not results (``sweep.json``, configurations) are skipped quietly.
    Only when nothing is readable is it an error.
    """
    runs, reported = [], []
    for given in paths:
        given = Path(given)
        if given.is_dir():
            unfinished = set()
            for candidate in sorted(given.rglob("*.json")):
                hidden = next((part for part in candidate.relative_to(given).parts if part.startswith(".")), None)
                if hidden is not None:  # a sweep's unfinished plan (.<plan>.partial-*), or other hidden files
                    if ".partial-" in hidden and hidden not in unfinished and candidate.name.startswith("results"):
                        unfinished.add(hidden)
                        reported.append(f"{str(candidate.parent.parent)!r} left out: an unfinished sweep plan "
                                        "(re-run the sweep to finish it)")
                    continue
                try:
                    runs.append(read_run(candidate))
                except InputError as error:
                    if _unreadable(candidate) or candidate.name.startswith("results"):
                        reported.append(f"{str(candidate)!r} left out: {str(error).split('; ')[0]}")
        elif given.is_file():
            runs.append(read_run(given))
        else:
            raise InputError(f"{str(given)!r} does not exist; pass lm-eval results files or folders holding them")
    if not runs:
        raise InputError(f"no lm-eval results JSON found in {', '.join(map(str, paths))}"
                         + (f" ({'; '.join(reported)})" if reported else "")
                         + "; pass the --output_path of lm_eval runs or a `lape-harness sweep` folder")
    for problem in reported + [note for run in runs for note in run.notes]:
        problems.append(problem) if problems is not None else logger.warning(problem)
    return runs


def _unreadable(path: Path) -> bool:
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return True
    return False


def select_model(runs: list[Run], model: str | None = None) -> tuple[list[Run], str]:
    """The runs of one model: ``model`` when given, else the only model the runs have."""
    models = sorted({run.model for run in runs})
    if model is not None:
        runs = [run for run in runs if run.model == model]
        if not runs:
            raise InputError(f"no results for model {model!r}; the inputs have: {', '.join(models)}")
        return runs, model
    if len(models) != 1:
        raise InputError(f"the results are from {len(models)} models ({', '.join(models)}); "
                         "pick one with --model (library: model=...)")
    return runs, models[0]


def plan_labels(runs: list[Run]) -> dict[int, str]:
    """Label each run's plan (by position); a model's steered runs using several neuron files get ``@file``.

    Plans written differently that mean the same (``de`` and ``+de``; ``-de+fr`` and ``+fr-de=0``)
    get one label, the first spelling met, so they share a column.
    """
    files = defaultdict(set)
    for run in runs:
        if run.plan != BASELINE:
            files[run.model].add(run.neurons)
    labels = {}
    spelling: dict[tuple[str, str | None, str], str] = {}
    for position, run in enumerate(runs):
        label = spelling.setdefault((run.model, run.neurons, canonical_plan(run.plan)), run.plan)
        if run.plan != BASELINE and len(files[run.model]) > 1 and run.neurons:
            label = f"{label} @{Path(run.neurons).stem}"
        labels[position] = label
    return labels


def canonical_plan(plan: str) -> str:
    """The canonical form of a recorded plan (``de`` → ``+de``); a plan file or unreadable text as written.

    >>> canonical_plan("+fr-de=0"), canonical_plan("none"), canonical_plan("plans/x.yaml")
    ('-de+fr', 'none', 'plans/x.yaml')
    """
    from lape_harness.steering.grammar import parse_text
    from lape_harness.steering.plan_file import looks_like_file

    if looks_like_file(plan):
        return plan  # never read files while labelling results
    try:
        return str(parse_text(plan))
    except InputError:
        return plan


def deactivated_language(plan: str) -> str | None:
    """The language a plan label only deactivates (``-de``, ``-de=-1.5``, ``-de @lape-top3``), else None.

    >>> deactivated_language("-de=-1.5"), deactivated_language("-de+fr"), deactivated_language("none")
    ('de', None, None)
    """
    from lape_harness.steering import SteeringPlan, parse_steer

    try:
        parsed = parse_steer(plan.split(" @")[0])
    except InputError:
        return None
    if not isinstance(parsed, SteeringPlan) or len(parsed.terms) != 1 or parsed.terms[0].op != "deactivate":
        return None
    return parsed.terms[0].language


# --------------------------------------------------------------------------- tasks and metrics


def classify_task(task: str, declared=None) -> tuple[str, str] | None:
    """``(family, language label)`` of a task, or None when its language is unknown.

    The languages are ``declared`` (the task config's ``metadata.languages``, see
    :attr:`Run.declared`), else read from the name. The label is the language, or ``"src→tgt"``
    for a task with a source and a target language (forcing, translation).

    >>> classify_task("lape_forcing_de_to_fr")
    ('lape_forcing', 'de→fr')
    >>> classify_task("belebele_deu_Latn")
    ('belebele', 'de')
    """
    from lape_harness.task_support.task_languages import task_family, task_languages

    languages = declared or task_languages(task)
    if languages is None:
        return None
    label = f"{languages.source}→{languages.target}" if languages.source else languages.target
    return task_family(task), label


def metric_key(metrics: dict[str, Any], name: str) -> str | None:
    """The results key of metric ``name`` (``"acc,none"``), filter ``none`` preferred.

    >>> metric_key({"acc,strict": 0.4, "acc,none": 0.5, "acc_stderr,none": 0.1}, "acc")
    'acc,none'
    """
    keys = [key for key in metrics if key.split(",")[0] == name and "_stderr" not in key]
    keys.sort(key=lambda key: (not key.endswith(",none"), key))
    return keys[0] if keys else None


def as_float(value: Any) -> float | None:
    """A results value as a float, None when it is missing, not a number or NaN.

    >>> as_float("0.25"), as_float("N/A"), as_float(float("nan"))
    (0.25, None, None)
    """
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def is_perplexity(metric: str) -> bool:
    """Perplexities are compared by relative change and averaged geometrically."""
    return "perplexity" in metric


def family_scores(run: Run, family: str, metric: str) -> dict[str, float]:
    """``{language label: score}`` of ``run``'s tasks in ``family`` (e.g. ``lape_ppl``)."""
    found = {}
    for task, values in run.metrics.items():
        placed = classify_task(task, run.declared.get(task))
        if placed is None or placed[0] != family:
            continue
        key = metric_key(values, metric)
        if key is not None and as_float(values[key]) is not None:
            found[placed[1]] = as_float(values[key])
    return found
