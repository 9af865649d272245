"""One model load, many steering plans: lm-eval's evaluator run once per plan.

The steered model (``hf-steered``, or ``vllm-steered`` with ``engine="vllm"``) is built once;
for each plan the sweep switches the plan (``set_plan``, no weight reload) and runs
``lm_eval.simple_evaluate`` on the loaded model. Each plan's output is exactly what ``lm_eval --output_path
OUT/<plan folder>`` writes: ``<model>/results_<date>.json`` (plus
``samples_<task>_<date>.jsonl`` with ``log_samples``), with ``config.model_args`` carrying
the plan's ``steer=`` and a ``lape_sweep`` entry holding the plan, its neuron file and the
steering signature.

A plan entry is a ``steer=`` spec (see :mod:`lape_harness.steering`), optionally followed
by ``@NEURON_FILE`` to use another neuron set for that plan, e.g. to compare neuron
ratios: ``-en@neuron_cache/gemma/lape-top3.safetensors``. ``@`` never occurs in a spec.

Plans are compared by meaning (the canonical form of the parsed plan, and the neuron file it
uses): ``de`` and ``+de``, or ``-de+fr`` and ``+fr-de=0``, are one plan, reported once and run
once (under the first spelling).

Everything is checked before the model loads: the output folder, the plans, their neuron
files (languages with neurons, made for this model) and the task names. Resumable: a plan's
folder appears (one atomic rename) only once its results and samples are complete; a re-run
skips the finished plans and redoes an interrupted one. The sweep's settings are kept in
``OUT/sweep.json``, written just before the first plan's results appear (so a start that
failed, e.g. on a misspelt task, leaves a folder the corrected command can use); re-running
into the same folder with other settings (model, tasks, limit, ...) is refused rather than
mixed. ``shard="I/N"`` runs only the I-th of N shares of the plan × task cells, for N jobs
sharing one output folder (:mod:`lape_harness.studies.shards`).

Example:
    >>> run_sweep("pretrained=lape:gemma-3-270m,neurons=neuron_cache/gemma/lape-top1.safetensors",
    ...           plans=["none", "auto", "-en"], tasks=["lape_belebele_de"], output="results/sweep",
    ...           limit=50)                                                   # doctest: +SKIP
    [PlanOutcome(entry=PlanEntry(steer='none', neurons=None), path=..., skipped=False), ...]
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lape_harness.atomic import write_json_atomic
from lape_harness.errors import InputError
from lape_harness.path_checks import check_output_dir
from lape_harness.studies.shards import (
    MANIFEST,
    Shard,
    check_settings,
    describe_share,
    finished_results,
    parse_shard,
    plan_units,
)

#: --engine -> the lm-eval model it runs
ENGINES = {"hf": "hf-steered", "vllm": "vllm-steered"}


@dataclass(frozen=True)
class PlanEntry:
    """One plan of a sweep: a ``steer=`` spec and, optionally, its own neuron file."""

    steer: str
    neurons: str | None = None

    @property
    def label(self) -> str:
        return self.steer if self.neurons is None else f"{self.steer}@{self.neurons}"

    @property
    def folder(self) -> str:
        """A file-system-safe folder name: ``steer=-en``, ``steer=+2x de@lape-top3`` ..."""
        name = "steer=" + self.steer + (f"@{Path(self.neurons).stem}" if self.neurons else "")
        safe = re.sub(r"[^A-Za-z0-9=+\-.,@_]", "_", name.replace("*", "x"))
        if safe != name or self.neurons:
            safe += "-" + hashlib.sha256(self.label.encode()).hexdigest()[:6]
        return safe


def parse_plan_entry(text: str) -> PlanEntry:
    """``"-en"`` → ``PlanEntry("-en")``; ``"-en@top3.safetensors"`` → with that neuron file.

    The spec is checked with the ``steer=`` parser, so a typo fails before weights load.
    """
    from lape_harness.steering import parse_steer

    text = str(text).strip()
    steer, _, neurons = text.partition("@")
    steer = steer.strip()
    if not steer:
        raise InputError(f"plan {text!r} has no steer spec; write e.g. '-en' or '-en@path/lape-top3.safetensors'")
    if neurons.strip() and not Path(neurons.strip()).is_file():
        problem = "is a directory" if Path(neurons.strip()).is_dir() else "does not exist"
        raise InputError(f"plan {text!r}: neuron file {neurons.strip()!r} {problem}; check the path after '@'")
    parse_steer(steer)
    return PlanEntry(steer, neurons.strip() or None)


def read_plans_file(path: str | os.PathLike) -> list[str]:
    """Plan entries from a text file: one per line; blank lines and ``#`` comments ignored."""
    path = Path(path)
    if not path.is_file():
        problem = "is a directory" if path.is_dir() else "does not exist"
        raise InputError(f"plans file {str(path)!r} {problem}; pass a text file with one plan per line (e.g. 'none', '-en')")
    entries = [line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return [entry for entry in entries if entry]


def model_args_dict(model_args: str | dict[str, Any]) -> dict[str, Any]:
    """lm-eval's ``key=value,key=value`` model arguments (or a dict) as a dict with typed values."""
    if isinstance(model_args, dict):
        return dict(model_args)
    from lm_eval.utils import simple_parse_args_string

    return simple_parse_args_string(model_args or "")


def _args_string(args: dict[str, Any]) -> str:
    return ",".join(f"{key}={value}" for key, value in args.items())


@dataclass
class PlanOutcome:
    entry: PlanEntry
    path: Path | None  # the plan's results JSON (None on the non-writing ranks of a multi-process run)
    skipped: bool  # finished by an earlier run
    task: str | None = None  # a cell's task (a share of a sharded sweep); None: every task


def run_sweep(
    model_args: str | dict[str, Any],
    plans: list[str],
    tasks: list[str],
    output: str | os.PathLike,
    *,
    limit: int | float | None = None,
    num_fewshot: int | None = None,
    batch_size: int | str = 1,
    max_batch_size: int | None = None,
    device: str | None = None,
    log_samples: bool = False,
    seed: tuple[int | None, int | None, int | None, int | None] = (0, 1234, 1234, 1234),
    include_path: str | None = None,
    gen_kwargs: str | None = None,
    bootstrap_iters: int = 100000,
    apply_chat_template: bool = False,
    system_instruction: str | None = None,
    metadata: dict[str, Any] | None = None,
    engine: str = "hf",
    shard: str | Shard | None = None,
    lm=None,
    load_lm: Callable[[], Any] | None = None,
    task_manager=None,
    log: Callable[[str], None] = print,
) -> list[PlanOutcome]:
    """Evaluate ``tasks`` under each plan with one loaded steered model.

    ``engine`` is ``hf`` (``hf-steered``) or ``vllm`` (``vllm-steered``: one vLLM engine, each
    plan written into its workers). ``model_args`` are that model's (any ``hf`` or ``vllm``
    argument, ``neurons=``; a ``steer=`` in them is replaced by each plan). ``lm`` may pass an
    already built steered model (then
    ``model_args`` only labels the results), ``load_lm`` a function that builds it, called only
    when a plan is left to run (a finished sweep starts no engine), ``task_manager`` an lm-eval ``TaskManager`` to
    reuse (indexing every task folder takes seconds). ``shard="I/N"`` runs only this share's plan ×
    task cells (:mod:`lape_harness.studies.shards`). Returns one :class:`PlanOutcome` per distinct
    plan (see :func:`unique_plans`), or per cell where cells ran (a share, or a plan shares began).
    """
    if engine not in ENGINES:
        raise InputError(f"engine {engine!r} is not one of {', '.join(ENGINES)}; e.g. --engine vllm")
    shard = None if shard is None else parse_shard(shard)
    output = check_output_dir(output, "--output")
    args = model_args_dict(model_args)
    if "pretrained" not in args and lm is None:
        raise InputError("--model-args needs pretrained=..., e.g. pretrained=lape:gemma-3-270m,neurons=lape-top1.safetensors")
    # plans without @FILE use the model arguments' set; a passed model may hold another (an earlier sweep's)
    default_neurons = args.get("neurons") or (lm.neurons_path if lm is not None else None)
    entries = unique_plans([parse_plan_entry(plan) for plan in plans], default_neurons, log)
    if not entries:
        raise InputError("no plans given; pass e.g. --plans none,auto,-en")
    if not tasks:
        raise InputError("no tasks given; pass e.g. --tasks lape_belebele_de,lape_belebele_fr")
    base_steer = args.pop("steer", None)
    if base_steer not in (None, "none"):
        log(f"note: steer={base_steer} in the model arguments is replaced by each plan")
    settings = {
        "engine": engine, "model_args": _args_string(args), "tasks": list(tasks), "limit": limit, "num_fewshot": num_fewshot,
        "gen_kwargs": gen_kwargs, "seed": list(seed), "apply_chat_template": apply_chat_template,
        "system_instruction": system_instruction, "bootstrap_iters": bootstrap_iters,
    }
    if shard is not None:
        settings["shard"] = str(shard)  # informative: a share's settings file; not compared
    check_neuron_files(entries, default_neurons, None if lm is not None else args)
    unwritten = [check_settings(output, settings, shard.manifest if shard else MANIFEST)]

    done, pending = plan_units(output, [entry.folder for entry in entries], list(tasks), shard, log)
    order = {task: index for index, task in enumerate(tasks)}
    units = sorted([unit for unit, _path in done] + pending, key=lambda u: (u.position, order.get(u.task, -1)))
    if shard is not None:
        cells = len(entries) * len(order)
        log(describe_share(shard, [(entries[unit.position].label, unit.task) for unit in units], cells))
    outcomes: dict[Any, PlanOutcome] = {}
    for unit, path in done:
        outcomes[unit] = PlanOutcome(entries[unit.position], path, skipped=True, task=unit.task)
        log(f"plan {_name(entries[unit.position], unit)}: finished earlier ({path}); skipped")
    if not pending:
        return [outcomes[unit] for unit in units]

    from lm_eval.tasks import TaskManager

    if task_manager is None:
        task_manager = TaskManager(include_path=include_path, metadata={**args, **(metadata or {})})
    unknown = [task for task in tasks if not task.endswith(".yaml") and not task_manager.match_tasks([task])]
    if unknown:
        raise InputError(f"unknown task(s) {', '.join(unknown)}: list them with `lm_eval ls tasks`"
                         + ("" if include_path else ", or pass --include-path for a folder of your own task YAMLs"))
    if lm is None and load_lm is not None:
        lm = load_lm()
    if lm is None:
        started = time.perf_counter()
        lm = load_steered_model(engine, {**args, "steer": "none"}, batch_size, max_batch_size, device)
        log(f"model loaded once in {time.perf_counter() - started:.1f} s; {len(pending)} plan(s) to run")

    def record_settings() -> None:  # just before a plan's results appear: a failed start leaves no settings
        if unwritten[0]:
            write_json_atomic(output / (shard.manifest if shard else MANIFEST), settings)
            unwritten[0] = False

    current_neurons = lm.neurons_path
    for count, unit in enumerate(pending, start=1):
        entry = entries[unit.position]
        neurons = entry.neurons or default_neurons
        if neurons != current_neurons:
            lm.set_neurons(neurons)
            current_neurons = neurons
        lm.set_plan(entry.steer)
        plan_args = {**args, **({"neurons": neurons} if neurons else {}), "steer": entry.steer}
        log(f"plan {_name(entry, unit)} ({count}/{len(pending)}): evaluating {', '.join(unit.tasks)}")
        started = time.perf_counter()
        path = _evaluate_plan(
            lm, entry, plan_args, output, task_manager, record_settings,
            dict(tasks=list(unit.tasks), limit=limit, num_fewshot=num_fewshot, batch_size=batch_size,
                 max_batch_size=max_batch_size, device=device, log_samples=log_samples, gen_kwargs=gen_kwargs,
                 bootstrap_iters=bootstrap_iters, apply_chat_template=apply_chat_template,
                 system_instruction=system_instruction, random_seed=seed[0], numpy_random_seed=seed[1],
                 torch_random_seed=seed[2], fewshot_random_seed=seed[3]),
            final=unit.folder,
        )
        outcomes[unit] = PlanOutcome(entry, path, skipped=False, task=unit.task)
        log(f"plan {_name(entry, unit)}: done in {time.perf_counter() - started:.1f} s: {path}")
    return [outcomes[unit] for unit in units]


def _name(entry: PlanEntry, unit) -> str:
    return entry.label if unit.task is None else f"{entry.label} on {unit.task}"


def unique_plans(entries: list[PlanEntry], default_neurons: str | None, log: Callable[[str], None] = print
                 ) -> list[PlanEntry]:
    """``entries`` without repeats: two entries are one plan when their parsed plans have the same
    canonical form and they use the same neuron file (any, for ``none``); each repeat is reported
    once (via ``log``).

    >>> [e.steer for e in unique_plans([PlanEntry("de"), PlanEntry("+de"), PlanEntry("-de")], None, log=print)]
    note: plan '+de' is the same plan as 'de' (+de); it runs once
    ['de', '-de']
    """
    from lape_harness.steering import parse_steer

    first: dict[tuple[str, str | None], PlanEntry] = {}
    for entry in entries:
        plan = parse_steer(entry.steer)
        neurons = (entry.neurons or default_neurons) if plan else None  # no steering: no neurons used
        key = (str(plan), str(Path(neurons).resolve()) if neurons else None)
        if key in first:
            earlier = first[key].label
            log(f"note: plan {entry.label!r} is listed twice; it runs once" if earlier == entry.label else
                f"note: plan {entry.label!r} is the same plan as {earlier!r} ({key[0]}); it runs once")
            continue
        first[key] = entry
    return list(first.values())


def check_neuron_files(entries: list[PlanEntry], default_neurons: str | None, args: dict[str, Any] | None) -> None:
    """Every plan's languages must have neurons in its neuron set, and each set must be made for
    the model of ``args`` (``pretrained=``; unless ``allow_other_model=True``): fail before any
    weights load. ``args`` None: the model is already loaded (only the languages are checked)."""
    from lape_harness.identity import pretrained_identity
    from lape_harness.neurons import NeuronSet
    from lape_harness.steering import SteeringPlan, parse_steer

    loaded: dict[str, NeuronSet] = {}
    identity = None
    for entry in entries:
        plan = parse_steer(entry.steer)
        path = entry.neurons or default_neurons
        if plan and path is None:
            raise InputError(f"plan {entry.label} steers neurons but no neuron set is given: add "
                             "neurons=path/to/lape-top1.safetensors to --model-args (or PLAN@FILE)")
        if path is None or not plan:
            continue
        if path not in loaded:
            loaded[path] = NeuronSet.load(path)
            if args is not None and args.get("pretrained"):
                options = {key: args[key] for key in ("revision", "trust_remote_code") if args.get(key) is not None}
                identity = identity or pretrained_identity(str(args["pretrained"]), **options)
                if identity is not None:
                    loaded[path].check_model(identity, args.get("allow_other_model") is True, path)
        if isinstance(plan, SteeringPlan):
            plan.check_languages(loaded[path])


def load_steered_model(engine: str, args: dict[str, Any], batch_size, max_batch_size=None, device=None):
    """The steered lm-eval model of ``engine`` (``hf`` or ``vllm``) from model arguments, built once
    for a whole sweep (or a whole study)."""
    if engine == "vllm":
        from lape_harness.plugin.vllm_steered import VLLMSteeredLM

        return VLLMSteeredLM.create_from_arg_obj(args, {"batch_size": batch_size, "max_batch_size": max_batch_size})
    from lape_harness.model_loading import pick_device
    from lape_harness.plugin.hf_steered import HFSteeredLM

    return HFSteeredLM.create_from_arg_obj(
        args, {"batch_size": batch_size, "max_batch_size": max_batch_size, "device": pick_device(device)})


def _evaluate_plan(lm, entry: PlanEntry, plan_args: dict[str, Any], output: Path, task_manager,
                   before_commit: Callable[[], None], options: dict[str, Any], final: Path | None = None) -> Path | None:
    """Run lm-eval for the current plan into a temporary folder, then rename it into place
    (``final``: the plan's folder under ``output`` unless given, e.g. a cell's folder).

    Only rank 0 of a multi-process run touches the output folder: the other ranks evaluate their
    share and return None (were they to clean up stale partial folders too, they would delete the
    one rank 0 is writing)."""
    from lm_eval import simple_evaluate
    from lm_eval.loggers import EvaluationTracker

    if getattr(lm, "rank", 0) != 0:  # a non-zero rank of a multi-process run: rank 0 alone writes
        simple_evaluate(model=lm, model_args=_args_string(plan_args), task_manager=task_manager,
                        evaluation_tracker=EvaluationTracker(), **options)
        return None
    final = output / entry.folder if final is None else final
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{final.name}.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)  # left by an interrupted run (only rank 0 has one)
    partial = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    umask = os.umask(0)
    os.umask(umask)
    partial.chmod(0o777 & ~umask)  # mkdtemp makes it private; the final folder should be like any other
    try:
        tracker = EvaluationTracker(output_path=str(partial))
        model_args = _args_string(plan_args)
        results = simple_evaluate(model=lm, model_args=model_args, task_manager=task_manager,
                                  evaluation_tracker=tracker, **options)
        if results is None:  # only rank 0 gets results
            return None
        # What `lm_eval --model hf-steered|vllm-steered --model_args ...` would have recorded.
        model_name = getattr(lm, "model_name", "") or "hf-steered"
        tracker.general_config_tracker.model_source = model_name
        results["config"]["model"] = model_name
        results["lape_sweep"] = {
            "plan": entry.steer,
            "label": entry.label,
            "neurons": plan_args.get("neurons"),
            "signature": lm.steering_signature(),
        }
        samples = results.pop("samples", None) if options.get("log_samples") else None
        results.pop("samples", None)
        tracker.save_results_aggregated(results=results, samples=samples)
        if samples:
            for task_name in results["configs"]:
                tracker.save_results_samples(task_name=task_name, samples=samples[task_name])
        if finished_results(partial) is None:
            raise InputError(f"lm-eval wrote no results for plan {entry.label} (see its log above); nothing was kept")
        before_commit()
        if final.exists():
            shutil.rmtree(final)
        os.replace(partial, final)
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
    return finished_results(final)
