"""The study's pipeline: each stage keeps its output in the run folder, so a second run reuses
what the first computed and an interrupted one resumes.

corpus → profile → identify (with a random control of each set, :mod:`lape_harness.controls`)
→ the benchmark families (:mod:`lape_harness.demo.evaluation`; one steered model, ``hf-steered`` or
``vllm-steered``, built only when a plan is left to run) → report (:mod:`lape_harness.demo.report`).
:func:`run_study` takes any model, engine, corpus, languages, neuron rates, benchmarks and plans;
:func:`run_demo` is the study with the demo's defaults (the embedded model, perplexity and forcing).

Example:
    >>> summary = run_study("lape:gemma-3-270m", mode="quick", engine="vllm")   # doctest: +SKIP
    >>> summary["perplexity"]["row_dominance_rate"]                            # doctest: +SKIP
    0.83
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lape_harness.atomic import write_json_atomic
from lape_harness.demo.benchmarks import parse_benchmarks
from lape_harness.demo.modes import DEFAULT_MODEL, MODES, Mode, rate_tag, with_top_rates
from lape_harness.demo.report import headline, write_report
from lape_harness.errors import InputError
from lape_harness.paths import cache_dir, model_slug

CONTROL_SEED = 0
#: the lm-eval model of each --engine
ENGINE_MODELS = {"hf": "hf-steered", "vllm": "vllm-steered"}


@dataclass
class StudyRun:
    """The run folder of one study and what it runs: model, corpus, languages, engine, benchmarks."""

    folder: Path
    mode: Mode
    model: str  # as the user named it (e.g. lape:gemma-3-270m)
    path: str  # the resolved local folder or hub id
    corpus: Path  # holds heldout/<lang>.txt
    languages: list[str]
    forcing_languages: list[str]
    log: Any = print
    timings: dict[str, float] = field(default_factory=dict)
    engine: str = "hf"
    engine_args: dict[str, Any] = field(default_factory=dict)  # extra model_args of the steered model
    batch_size: int | str = 8
    device: str | None = None
    benchmarks: list[str] = field(default_factory=lambda: ["ppl", "forcing"])
    plans: list[str] | None = None  # steered plans of forcing and the hub families (None: the defaults)
    shard: str | None = None
    command: str = "demo"
    train: str = ""  # the training text: a folder of <lang>.txt/.jsonl or an hf: spec (default: corpus/train)
    signatures: dict[str, dict[str, str]] = field(default_factory=dict)  # stage -> {plan label: signature}
    sources: dict[str, str] = field(default_factory=dict)  # family -> where its data came from
    skipped: dict[str, str] = field(default_factory=dict)  # family -> why it did not run
    _lm: Any = None
    _task_manager: Any = None

    @property
    def neurons(self) -> Path:
        return self.folder / "neurons"

    def neuron_file(self, rate: float) -> Path:
        from lape_harness.lape import neuron_set_filename

        return self.neurons / neuron_set_filename(rate)

    def control_file(self, rate: float) -> Path:
        """The random control (seed :data:`CONTROL_SEED`) of the set of ``rate``."""
        from lape_harness.controls import control_filename

        return self.neurons / control_filename(self.neuron_file(rate).name, CONTROL_SEED)

    def say(self, message: str) -> None:
        self.log(f"[{self.command}] {message}")

    @contextmanager
    def stage(self, name: str):
        self.say(f"{name} ...")
        started = time.perf_counter()
        yield
        self.timings[name] = round(time.perf_counter() - started, 1)
        self.say(f"{name}: {self.timings[name]:.0f} s")

    def model_args(self) -> dict[str, Any]:
        """The steered model's arguments: the model, the perplexity set, the engine arguments."""
        return {"pretrained": self.path, "neurons": str(self.neuron_file(self.mode.ppl_rate)), **self.engine_args}

    def steered_model(self):
        """The steered model, built on first use (a study whose plans all finished starts no engine)."""
        if self._lm is None:
            from lape_harness.studies.sweep import load_steered_model

            with self.stage(f"load model ({ENGINE_MODELS[self.engine]})"):
                self._lm = load_steered_model(self.engine, {**self.model_args(), "steer": "none"}, self.batch_size,
                                              None, self.device)  # fmt: skip
        return self._lm

    def task_manager(self):
        """lm-eval's task index, built once (indexing every task folder takes seconds)."""
        if self._task_manager is None:
            from lm_eval.tasks import TaskManager

            self._task_manager = TaskManager()
        return self._task_manager


DemoRun = StudyRun  # the name before the study generalised the demo


def run_demo(
    mode: str | Mode = "default",
    model: str = DEFAULT_MODEL,
    corpus: str | Path | None = None,
    out: str | Path | None = None,
    languages: Sequence[str] | None = None,
    batch_size: int | str | None = None,
    device: str | None = None,
    save_neurons: str | Path | None = None,
    log=print,
    **study,
) -> dict[str, Any]:
    """The study with the demo's defaults: the embedded model and a mode's sizes (every other
    :func:`run_study` argument, e.g. ``engine="vllm"`` or ``benchmarks="ppl,forcing"``, may be passed)."""
    return run_study(model, mode=mode, corpus=corpus, out=out, languages=languages, batch_size=batch_size,
                     device=device, save_neurons=save_neurons, log=log, command="demo", **study)


def run_study(
    model: str = DEFAULT_MODEL,
    *,
    mode: str | Mode = "default",
    engine: str = "hf",
    engine_args: str | dict[str, Any] | None = None,
    corpus: str | Path | None = None,
    out: str | Path | None = None,
    languages: Sequence[str] | None = None,
    top_rates: Sequence[float] | None = None,
    benchmarks: str | Sequence[str] | None = None,
    plans: Sequence[str] | None = None,
    shard: str | None = None,
    batch_size: int | str | None = None,
    device: str | None = None,
    save_neurons: str | Path | None = None,
    log=print,
    command: str = "study",
) -> dict[str, Any]:
    """Run the study (see the module docstring); returns the summary also written to ``summary.json``.

    ``corpus`` is a folder with ``train/`` and ``heldout/`` (default: the starter corpus, built on
    first use); ``languages`` narrows the mode's; ``top_rates`` replaces its neuron-set rates;
    ``benchmarks`` picks families of :data:`~lape_harness.demo.benchmarks.FAMILIES` (default: all,
    each skipped with one line when its data cannot load); ``plans`` replaces the steered plans of
    forcing and the hub families (each also runs with its random control); ``engine_args`` are
    extra model arguments of the engine (``dtype=bfloat16,tensor_parallel_size=2,...``);
    ``shard="I/N"`` runs only share I of every sweep (then no report: run again without it);
    ``save_neurons`` also copies the neuron sets there (e.g. ``neuron_cache/gemma-3-270m``).
    """
    import lape_harness.demo.evaluation as evaluation
    from lape_harness.embedded import resolve_pretrained

    mode = MODES[mode] if isinstance(mode, str) and mode in MODES else mode
    if not isinstance(mode, Mode):
        raise InputError(f"unknown demo mode {mode!r}; choose from {', '.join(MODES)}")
    if engine not in ENGINE_MODELS:
        raise InputError(f"--engine {engine!r}: choose hf (hf-steered) or vllm (vllm-steered)")
    mode = with_top_rates(mode, tuple(top_rates) if top_rates else None)
    families = parse_benchmarks(benchmarks)
    extra, batch_size = _engine_args(engine, engine_args, batch_size, device)
    started = time.perf_counter()
    path = resolve_pretrained(model)
    suffix = "" if engine == "hf" else f"-{engine}"
    folder = Path(out) if out else cache_dir() / "demo" / model_slug(model) / f"{mode.name}{suffix}"
    folder.mkdir(parents=True, exist_ok=True)
    train, corpus_folder = _ensure_corpus(corpus, model, log)
    chosen = _choose_languages(train, corpus_folder, mode, languages, log)
    forcing = [code for code in mode.forcing_languages if code in chosen]
    run = StudyRun(folder, mode, model, path, corpus_folder, chosen, forcing, log, engine=engine, engine_args=extra,
                   batch_size=batch_size, device=device, benchmarks=families, plans=_plans(plans),
                   shard=shard, command=command, train=train)  # fmt: skip
    run.say(f"{mode.name} mode on {model} with {ENGINE_MODELS[engine]}"
            f"{' (' + _args_text(extra) + ')' if extra else ''}: {len(chosen)} languages ({' '.join(chosen)}); "
            f"benchmarks {','.join(families) or 'none'}; run folder {folder}")  # fmt: skip

    if shard is not None and not all(run.neuron_file(rate).is_file() for rate in mode.top_rates):
        raise InputError(f"--shard {shard} runs only the evaluation: profile and identify first, once, with the same "
                         "command without --shard and with --benchmarks none; then start the shards")
    with run.stage("profile"):
        stats = _profile(run, device)
    with run.stage("identify"):
        neuron_sets = _identify(run, stats)
    summary: dict[str, Any] = {
        "command": command, "model": model, "engine": ENGINE_MODELS[engine], "engine_args": extra,
        "mode": mode.describe(), "languages": chosen, "forcing_languages": forcing,
        "tokens_per_language": dict(zip(stats.languages, stats.tokens.tolist())),
        "neurons": {rate_tag(rate): neuron_sets[rate].counts() for rate in mode.top_rates},
        "heldout": None, "perplexity": None, "forcing": None, "benchmarks": {},
    }  # fmt: skip
    evaluation.run_benchmarks(run, summary)
    summary.update(signatures=run.signatures, sources=run.sources, skipped=run.skipped)
    if shard is not None:
        run.say(f"shard {shard}: its share of every sweep is done; once every shard has finished, run the same "
                "command without --shard to read them all and write the report")
        return summary
    with run.stage("report"):
        write_report(run, summary, neuron_sets)
    if save_neurons:
        target = Path(save_neurons)
        target.mkdir(parents=True, exist_ok=True)
        for rate in mode.top_rates:
            shutil.copyfile(run.neuron_file(rate), target / run.neuron_file(rate).name)
        shutil.copyfile(folder / "stats.safetensors", target / "stats.safetensors")
        run.say(f"neuron sets copied to {target}")
    summary["timings"] = {**run.timings, "total": round(time.perf_counter() - started, 1)}
    write_json_atomic(folder / "summary.json", summary)
    log(headline(summary))
    run.say(f"report: {folder / 'report.md'} ({summary['timings']['total']:.0f} s in all)")
    return summary


def _args_text(args: dict[str, Any]) -> str:
    return ",".join(f"{key}={value}" for key, value in args.items())


def _engine_args(engine: str, engine_args, batch_size, device) -> tuple[dict[str, Any], int | str]:
    """The engine's extra model arguments (``batch_size`` taken out; on a CPU the measured faster
    dtype unless one is given, :mod:`lape_harness.demo.cpu_dtype`) and the batch size."""
    from lape_harness.studies.sweep import model_args_dict

    args = model_args_dict(engine_args or {})
    for key in ("pretrained", "neurons", "steer"):
        if key in args:
            raise InputError(f"--engine-args {key}=... is set by the study itself; use --model (pretrained) or "
                             "--top-rates (neurons), and --plans (steer)")
    batch = args.pop("batch_size", batch_size)
    batch = batch if batch is not None else ("auto" if engine == "vllm" else 8)
    on_cpu = not _has_gpu() if engine == "vllm" else (device == "cpu" or (device is None and not _has_gpu()))
    if "dtype" not in args and on_cpu:
        from lape_harness.demo.cpu_dtype import cpu_dtype

        args["dtype"] = cpu_dtype()["dtype"]
    return args, batch


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def _plans(plans: Sequence[str] | None) -> list[str] | None:
    """The steered plans given (``none`` dropped: every family runs it as the baseline), checked."""
    if plans is None:
        return None
    from lape_harness.steering import parse_steer

    chosen = [plan.strip() for item in plans for plan in str(item).split(",") if plan.strip() and plan.strip() != "none"]
    for plan in chosen:
        if "@" in plan:
            raise InputError(f"--plans {plan}: the study picks the neuron set (--top-rates) and its control itself; "
                             "drop the '@FILE'")
        parse_steer(plan)
    if not chosen:
        raise InputError("--plans lists no steered plan; e.g. --plans auto,auto:-src+2*tgt")
    return chosen


def _ensure_corpus(corpus: str | Path | None, model: str, log) -> tuple[str, Path]:
    """``(training text, held-out root)``: a folder with ``train/`` and ``heldout/`` gives both; a folder
    of ``<lang>.txt``/``.jsonl`` files or an ``hf:`` spec (as ``lape-harness profile`` takes) gives the
    training text, and the held-out text comes from the starter corpus (built on first use)."""
    from lape_harness.corpora import is_hf_spec
    from lape_harness.paths import corpus_dir

    if corpus is not None and not is_hf_spec(str(corpus)):
        folder = Path(corpus).expanduser()
        if (folder / "train").is_dir() and (folder / "heldout").is_dir():
            return str(folder / "train"), folder
        if not folder.is_dir() or not any(folder.glob("*.txt")) and not any(folder.glob("*.jsonl")):
            raise InputError(
                f"corpus {folder} needs train/<lang>.txt and heldout/<lang>.txt, or <lang>.txt/.jsonl files of "
                "training text; build one with `lape-harness corpus --out DIR`, pass an hf:NAME:CONFIG:SPLIT:COLUMN "
                "spec, or leave --corpus out"
            )
    folder = corpus_dir()
    if not (folder / "manifest.json").is_file():
        from lape_harness.starter_corpus.build import build_corpus

        log(f"building the starter corpus in {folder} (once) ...")
        build_corpus(out=folder, tokenizer=model)
    return (str(corpus) if corpus is not None else str(folder / "train")), folder


def _choose_languages(train: str, heldout: Path, mode: Mode, languages: Sequence[str] | None, log) -> list[str]:
    """The mode's (or the given) languages that have training and held-out text."""
    from lape_harness.corpora import is_hf_spec
    from lape_harness.languages import PAPER_CODES, all_languages, get_language

    available = {p.stem for p in (heldout / "heldout").glob("*.txt")}
    if not is_hf_spec(train):
        available &= {p.stem for p in Path(train).glob("*.txt")} | {p.stem for p in Path(train).glob("*.jsonl")}
    wanted = [get_language(code).code for code in languages] if languages else list(mode.languages or ())
    if not wanted:
        order = list(PAPER_CODES) + [lang.code for lang in all_languages() if lang.code not in PAPER_CODES]
        wanted = [code for code in order if code in available]
    missing = [code for code in wanted if code not in available]
    if missing:
        log(f"warning: no training and held-out text for {', '.join(missing)} ({train}, {heldout}/heldout); "
            "they are left out")
    chosen = [code for code in wanted if code in available]
    if len(chosen) < 2:
        raise InputError(
            f"the study needs text in at least two languages; {train} with {heldout}/heldout has "
            f"{', '.join(sorted(available)) or 'none'}; build the starter corpus with `lape-harness corpus` or pass --languages"
        )
    return chosen


def _profile(run: DemoRun, device: str | None):
    """The run folder's statistics when they were made from this model and this training text with
    the mode's settings; else profile again (and drop the results computed from the old ones)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lape_harness.corpora import open_corpus
    from lape_harness.hf_loading import load_pretrained
    from lape_harness.neurons import ActivationStats
    from lape_harness.profile import profile_model

    path = run.folder / "stats.safetensors"
    sources = open_corpus(run.train or str(run.corpus / "train"), run.languages)
    if path.is_file():
        stats = ActivationStats.load(path)
        stale = _why_stale(stats, run, sources)
        if stale is None:
            run.say(f"reusing {path}")
            return stats
        run.say(f"not reusing {path}: {stale}; profiling again")
        shutil.rmtree(run.folder / "results", ignore_errors=True)  # computed from the old statistics
    partial = run.folder / "stats.partial"
    model = load_pretrained(AutoModelForCausalLM, run.path, dtype="auto").eval()
    if device:
        model.to(torch.device(device))
    stats = profile_model(
        model, AutoTokenizer.from_pretrained(run.path), sources, seq_len=run.mode.seq_len, batch_size=4,
        max_tokens=run.mode.profile_tokens, checkpoint_dir=partial, checkpoint_every=60,
    )  # fmt: skip
    del model
    stats.meta["model"]["model_id"] = run.model  # the name a user passes (lape:...), not the cache folder
    stats.save(path)
    shutil.rmtree(partial, ignore_errors=True)
    return stats


def _why_stale(stats, run: DemoRun, sources: dict) -> str | None:
    """Why existing statistics do not fit this run (None: they do): other languages or lengths,
    another model (name or config), or other training text (its fingerprint)."""
    from transformers import AutoConfig

    from lape_harness.identity import config_hash

    if (stats.languages, stats.meta.get("seq_len"), stats.meta.get("max_tokens")) != (
        run.languages, run.mode.seq_len, run.mode.profile_tokens
    ):
        return "they were made for other languages or token budgets"
    made_with = stats.meta.get("model") or {}
    if made_with.get("model_id") != run.model or made_with.get("config_hash") != config_hash(
        AutoConfig.from_pretrained(run.path)
    ):
        return f"they were made with another model ({made_with.get('model_id')!r})"
    recorded = stats.meta.get("sources") or {}
    changed = [lang for lang, source in sources.items()
               if (recorded.get(lang) or {}).get("sha256") != source.fingerprint()]  # fmt: skip
    if changed:
        return f"the training text of {', '.join(changed)} changed"
    return None


def _identify(run: DemoRun, stats) -> dict:
    """The neuron sets (reused when made from these statistics), and the random control of each."""
    from lape_harness.controls import random_control
    from lape_harness.lape import identify_many
    from lape_harness.neurons import NeuronSet

    files = {rate: run.neuron_file(rate) for rate in run.mode.top_rates}
    sets = None
    if all(path.is_file() for path in files.values()):
        sets = {rate: NeuronSet.load(path) for rate, path in files.items()}
        if not all(s.meta.get("stats_hash") == stats.content_hash() for s in sets.values()):
            sets = None
    if sets is None:
        sets = identify_many(stats, run.mode.top_rates)
        for rate, neuron_set in sets.items():
            neuron_set.save(files[rate])
    for rate, neuron_set in sets.items():
        control = run.control_file(rate)
        if not control.is_file() or NeuronSet.load(control).meta["control"]["of_hash"] != neuron_set.content_hash():
            random_control(neuron_set, stats, CONTROL_SEED).save(control)
    return sets


