"""The demo's pipeline: each stage keeps its output in the run folder, so a second run reuses
what the first computed and an interrupted one resumes.

corpus → profile → identify (with a random control of each set, :mod:`lape_harness.controls`)
→ load ``hf-steered`` once → held-out text → perplexity sweep → forcing sweep → report (:mod:`lape_harness.demo.report`), the numbers from
:mod:`lape_harness.demo.analysis`.

Example:
    >>> summary = run_demo(mode="quick")                     # doctest: +SKIP
    >>> summary["perplexity"]["row_dominance_rate"]          # doctest: +SKIP
    0.83
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lape_harness.analysis.results import Run, read_run
from lape_harness.atomic import write_json_atomic, write_text_atomic
from lape_harness.demo.analysis import forcing_summary, perplexity_summary
from lape_harness.demo.modes import DEFAULT_MODEL, MODES, Mode, rate_tag
from lape_harness.demo.report import headline, write_report
from lape_harness.errors import InputError
from lape_harness.paths import cache_dir, model_slug

CONTROL_SEED = 0


@dataclass
class DemoRun:
    """The run folder of one demo and its model, corpus and languages."""

    folder: Path
    mode: Mode
    model: str  # as the user named it (e.g. lape:gemma-3-270m)
    path: str  # the resolved local folder or hub id
    corpus: Path
    languages: list[str]
    forcing_languages: list[str]
    log: Any = print
    timings: dict[str, float] = field(default_factory=dict)

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

    @contextmanager
    def stage(self, name: str):
        self.log(f"[demo] {name} ...")
        started = time.perf_counter()
        yield
        self.timings[name] = round(time.perf_counter() - started, 1)
        self.log(f"[demo] {name}: {self.timings[name]:.0f} s")


def run_demo(
    mode: str | Mode = "default",
    model: str = DEFAULT_MODEL,
    corpus: str | Path | None = None,
    out: str | Path | None = None,
    languages: Sequence[str] | None = None,
    batch_size: int = 8,
    device: str | None = None,
    save_neurons: str | Path | None = None,
    log=print,
) -> dict[str, Any]:
    """Run the study (see the module docstring); returns the summary also written to ``summary.json``.

    ``corpus`` is a folder with ``train/`` and ``heldout/`` (default: the starter corpus,
    built on first use); ``languages`` narrows the mode's languages; ``save_neurons``
    also copies the neuron sets there (e.g. ``neuron_cache/gemma-3-270m``).
    """
    from lape_harness.embedded import resolve_pretrained

    mode = MODES[mode] if isinstance(mode, str) and mode in MODES else mode
    if not isinstance(mode, Mode):
        raise InputError(f"unknown demo mode {mode!r}; choose from {', '.join(MODES)}")
    started = time.perf_counter()
    path = resolve_pretrained(model)
    folder = Path(out) if out else cache_dir() / "demo" / model_slug(model) / mode.name
    folder.mkdir(parents=True, exist_ok=True)
    corpus_folder = _ensure_corpus(corpus, model, log)
    chosen = _choose_languages(corpus_folder, mode, languages, log)
    forcing = [code for code in mode.forcing_languages if code in chosen]
    run = DemoRun(folder, mode, model, path, corpus_folder, chosen, forcing, log)
    log(f"[demo] {mode.name} mode on {model}: {len(chosen)} languages ({' '.join(chosen)}); run folder {folder}")

    with run.stage("profile"):
        stats = _profile(run, device)
    with run.stage("identify"):
        neuron_sets = _identify(run, stats)
    lm = _load_model(run, batch_size, device)
    with run.stage("held-out text"):
        heldout = _heldout(run, lm.tokenizer)
    with run.stage("perplexity matrix"):
        perplexity = _perplexity_matrix(run, lm, heldout, batch_size, device)
    with run.stage("language forcing"):
        forcing_result = _forcing(run, lm, batch_size, device) if len(forcing) >= 2 else None
    with run.stage("report"):
        summary = {
            "model": model,
            "mode": mode.describe(),
            "languages": chosen,
            "forcing_languages": forcing,
            "tokens_per_language": dict(zip(stats.languages, stats.tokens.tolist())),
            "heldout": heldout,
            "neurons": {rate_tag(rate): neuron_sets[rate].counts() for rate in mode.top_rates},
            "perplexity": perplexity,
            "forcing": forcing_result,
        }
        write_report(run, summary, neuron_sets)
    if save_neurons:
        target = Path(save_neurons)
        target.mkdir(parents=True, exist_ok=True)
        for rate in mode.top_rates:
            shutil.copyfile(run.neuron_file(rate), target / run.neuron_file(rate).name)
        shutil.copyfile(folder / "stats.safetensors", target / "stats.safetensors")
        log(f"[demo] neuron sets copied to {target}")
    summary["timings"] = {**run.timings, "total": round(time.perf_counter() - started, 1)}
    write_json_atomic(folder / "summary.json", summary)
    log(headline(summary))
    log(f"[demo] report: {folder / 'report.md'} ({summary['timings']['total']:.0f} s in all)")
    return summary


def _ensure_corpus(corpus: str | Path | None, model: str, log) -> Path:
    from lape_harness.paths import corpus_dir

    if corpus is not None:
        folder = Path(corpus)
        if not (folder / "train").is_dir() or not (folder / "heldout").is_dir():
            raise InputError(
                f"corpus folder {folder} needs train/<lang>.txt and heldout/<lang>.txt; "
                "build one with `lape-harness corpus --out DIR` or leave --corpus out"
            )
        return folder
    folder = corpus_dir()
    if not (folder / "manifest.json").is_file():
        from lape_harness.starter_corpus.build import build_corpus

        log(f"[demo] building the starter corpus in {folder} (once) ...")
        build_corpus(out=folder, tokenizer=model)
    return folder


def _choose_languages(corpus: Path, mode: Mode, languages: Sequence[str] | None, log) -> list[str]:
    from lape_harness.languages import PAPER_CODES, all_languages, get_language

    available = {
        p.stem for p in (corpus / "train").glob("*.txt") if (corpus / "heldout" / p.name).is_file()
    }
    wanted = [get_language(code).code for code in languages] if languages else list(mode.languages or ())
    if not wanted:
        order = list(PAPER_CODES) + [lang.code for lang in all_languages() if lang.code not in PAPER_CODES]
        wanted = [code for code in order if code in available]
    missing = [code for code in wanted if code not in available]
    if missing:
        log(f"warning: no train and held-out text for {', '.join(missing)} in {corpus}; they are left out")
    chosen = [code for code in wanted if code in available]
    if len(chosen) < 2:
        raise InputError(
            f"the demo needs text in at least two languages; {corpus} has {', '.join(sorted(available)) or 'none'}; "
            "build the starter corpus with `lape-harness corpus` or pass --languages"
        )
    return chosen


def _load_model(run: DemoRun, batch_size: int, device: str | None):
    """The ``hf-steered`` model, loaded once for every evaluation (holding the perplexity neuron set)."""
    from lape_harness.model_loading import pick_device
    from lape_harness.plugin.hf_steered import HFSteeredLM

    with run.stage("load model"):
        options = {"batch_size": batch_size, "device": pick_device(device)}
        arguments = {"pretrained": run.path, "neurons": str(run.neuron_file(run.mode.ppl_rate)), "steer": "none"}
        return HFSteeredLM.create_from_arg_obj(arguments, options)


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
    sources = open_corpus(run.corpus / "train", run.languages)
    if path.is_file():
        stats = ActivationStats.load(path)
        stale = _why_stale(stats, run, sources)
        if stale is None:
            run.log(f"[demo] reusing {path}")
            return stats
        run.log(f"[demo] not reusing {path}: {stale}; profiling again")
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


def _heldout(run: DemoRun, tokenizer) -> dict[str, dict[str, int]]:
    """The first paragraphs of each held-out file, up to the mode's token budget, in ``<run>/data``.

    Returns per language the paragraphs, tokens (as lm-eval scores them: the tokenizer's
    own special tokens included) and UTF-8 bytes.
    """
    from lape_harness.task_support.task_data import heldout_documents

    counts = {}
    with _data_root(run.corpus):
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
def _data_root(folder: Path):
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


def _sweep(run: DemoRun, lm, name: str, plans: list[str], tasks: list[str], batch_size, device,
           **options) -> dict[str, Run]:
    """Run lape-harness's sweep on the loaded model; returns {plan label: its results}.

    Plans without ``@file`` use the perplexity set (the model is given it back when a plan of an
    earlier sweep left another set, e.g. a control, in place)."""
    from lape_harness.studies.sweep import run_sweep

    default = str(run.neuron_file(run.mode.ppl_rate))
    if lm.neurons_path != default:
        lm.set_neurons(default)
    model_args = f"pretrained={run.path},neurons={default}"
    outcomes = run_sweep(
        model_args, plans, tasks, run.folder / "results" / name, lm=lm, batch_size=batch_size, device=device,
        log=lambda message: run.log(f"[demo] {name}: {message}"), **options,
    )  # fmt: skip
    return {o.entry.label: read_run(o.path) for o in outcomes}


def _perplexity_matrix(run: DemoRun, lm, heldout: dict, batch_size, device) -> dict[str, Any]:
    """``none`` and ``-L`` for every language, with the set and with its random control."""
    control = run.control_file(run.mode.ppl_rate)
    plans = ["none"] + [f"-{lang}" for lang in run.languages]
    tasks = [f"lape_ppl_{lang}" for lang in run.languages]
    with _data_root(run.folder / "data"):
        name = f"perplexity_{rate_tag(run.mode.ppl_rate)}_{run.mode.heldout_tokens}tok"  # the sweep's inputs
        runs = _sweep(run, lm, name, plans + [f"{plan}@{control}" for plan in plans[1:]], tasks, batch_size, device)
    control_runs = {plan: runs.pop(f"{plan}@{control}") for plan in plans[1:]}
    return perplexity_summary(runs, run.languages, heldout, rate_tag(run.mode.ppl_rate), control_runs)


def _forcing(run: DemoRun, lm, batch_size, device) -> dict[str, Any]:
    mode = run.mode
    pairs = [(s, t) for s in run.forcing_languages for t in run.forcing_languages if s != t]
    tasks = [f"lape_forcing_{s}_to_{t}" for s, t in pairs]
    conditions: dict[str, dict[str, Any]] = {"none": {"condition": "none"}}
    labels = {"none": "none"}
    grid = mode.forcing_grid()
    for rate, strength in grid:
        for condition, spec in strength.plans().items():
            label = f"{spec}@{run.neuron_file(rate)}"
            labels[label] = f"{spec}@{rate_tag(rate)}"
            info = {"condition": condition, "rate": rate, "alpha": strength.alpha,
                    "fill": strength.fill if condition != "activate" else None, "steer": spec}  # fmt: skip
            conditions.setdefault(label, info)
            if (rate, strength) == grid[0]:  # the main setting is also run with the set's random control
                control = f"{spec}@{run.control_file(rate)}"
                labels[control] = f"{labels[label]}-control"
                conditions.setdefault(control, {**info, "control_of": labels[label]})
    runs = _sweep(
        run, lm, "forcing", list(conditions), tasks, batch_size, device,
        limit=mode.forcing_prompts, gen_kwargs=f"max_gen_toks={mode.max_gen_toks}", log_samples=True,
    )  # fmt: skip
    summary = forcing_summary(runs, conditions, pairs, labels)
    return {**summary, "prompts_per_pair": mode.forcing_prompts, "max_gen_toks": mode.max_gen_toks}
