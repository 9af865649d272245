"""The whole study on one model, end to end: corpus → profile → identify → evaluate → report.

``lape-harness demo`` runs it on the embedded Gemma-3-270m (``lape:gemma-3-270m``) by default:

1. the starter corpus (:mod:`lape_harness.starter_corpus`), built once into the cache;
2. activation statistics of every language with text (:mod:`lape_harness.profile`);
3. LAPE neuron sets at the top rates 1%…5% (:mod:`lape_harness.lape`);
4. lm-eval with the ``hf-steered`` model, all plans on one model load (:mod:`lape_harness.sweep`):
   the perplexity matrix (plan ``-L`` for each language L on every ``lape_ppl_<M>`` task,
   relative to no steering) and language forcing (``lape_forcing_<S>_to_<T>``, plans
   ``none``, ``auto:-src=c+α*tgt`` and ``auto:+α*tgt``, swept over ratios and strengths one at a time);
5. a report folder: ``report.md`` with the tables, PNG plots, the lm-eval results JSONs.

Modes trade coverage for time (:data:`MODES`); each stage keeps its output in the run
folder, so a second run reuses what the first computed, and an interrupted one resumes.

Example:
    >>> summary = run_demo(mode="quick")                     # doctest: +SKIP
    >>> summary["perplexity"]["row_dominance_rate"]          # doctest: +SKIP
    0.83
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from lape_harness.atomic import write_json_atomic, write_text_atomic
from lape_harness.errors import InputError
from lape_harness.paths import cache_dir, model_slug

DEFAULT_MODEL = "lape:gemma-3-270m"
FORCING_LANGUAGES = ("en", "de", "fr", "es", "it", "pt", "nl", "ru", "pl", "sv")


@dataclass(frozen=True)
class Strength:
    """One forcing setting: activate the target with α, deactivate the source with fill ``c``."""

    alpha: float
    fill: float = 0.0

    def plans(self) -> dict[str, str]:
        """The two steered conditions as ``steer=`` specs."""
        fill = "" if self.fill == 0 else f"={_num(self.fill)}"
        alpha = "" if self.alpha == 1 else f"{_num(self.alpha)}*"
        return {
            "deactivate+activate": f"auto:-src{fill}+{alpha}tgt",
            "activate": f"auto:+{alpha}tgt",
        }


@dataclass(frozen=True)
class Mode:
    """What one demo mode runs (see :data:`MODES`)."""

    name: str
    languages: tuple[str, ...] | None  # profiled and in the perplexity matrix; None = all with text
    profile_tokens: int | None  # per language; None = all training text
    seq_len: int
    heldout_tokens: int  # per language, for the perplexity matrix
    ppl_rate: float  # the neuron set whose deactivation the perplexity matrix measures
    forcing_languages: tuple[str, ...]
    forcing_prompts: int  # questions per (source, target) pair
    forcing_rates: tuple[float, ...]
    strengths: tuple[Strength, ...]  # the first is the centre of the sweep
    max_gen_toks: int
    top_rates: tuple[float, ...] = (0.01, 0.02, 0.03, 0.04, 0.05)

    def describe(self) -> dict[str, Any]:
        return asdict(self)

    def forcing_grid(self) -> list[tuple[float, Strength]]:
        """The forcing settings, one factor at a time: every ratio at the first strength, then
        every other strength at the perplexity set's ratio (or the first ratio if it is not swept).

        >>> MODES["full"].forcing_grid()[:2]
        [(0.01, Strength(alpha=2.0, fill=0.0)), (0.02, Strength(alpha=2.0, fill=0.0))]
        """
        centre = self.ppl_rate if self.ppl_rate in self.forcing_rates else self.forcing_rates[0]
        grid = [(rate, self.strengths[0]) for rate in self.forcing_rates]
        return grid + [(centre, strength) for strength in self.strengths[1:]]


# quick and default force with the setting the --full sweep chose (docs/demo.md): 2 % set, α = 2, c = 0.
MODES: dict[str, Mode] = {
    "quick": Mode(
        name="quick", languages=("en", "de", "fr", "es", "ru", "zh"), profile_tokens=2048, seq_len=256,
        heldout_tokens=256, ppl_rate=0.03, forcing_languages=("en", "de", "fr", "es"), forcing_prompts=2,
        forcing_rates=(0.02,), strengths=(Strength(2.0),), max_gen_toks=24,
    ),
    "default": Mode(
        name="default", languages=FORCING_LANGUAGES + ("zh", "ar", "hi", "ja"), profile_tokens=6144, seq_len=512,
        heldout_tokens=512, ppl_rate=0.03, forcing_languages=FORCING_LANGUAGES, forcing_prompts=3,
        forcing_rates=(0.02,), strengths=(Strength(2.0),), max_gen_toks=32,
    ),
    "full": Mode(
        name="full", languages=None, profile_tokens=None, seq_len=512, heldout_tokens=2000, ppl_rate=0.03,
        forcing_languages=FORCING_LANGUAGES, forcing_prompts=6, forcing_rates=(0.01, 0.02, 0.03, 0.04, 0.05),
        strengths=(Strength(2.0), Strength(1.0), Strength(4.0), Strength(2.0, -1.0), Strength(4.0, -1.0)),
        max_gen_toks=32,
    ),
}  # fmt: skip


def _num(value: float) -> str:
    return f"{value:g}"


def rate_tag(rate: float) -> str:
    """``0.03`` → ``top3`` (the neuron-set file is ``lape-top3.safetensors``)."""
    return f"top{_num(rate * 100)}"


# ----------------------------------------------------------------------------- analysis


def perplexity_change(
    perplexity: dict[str, dict[str, float]], languages: Sequence[str]
) -> list[list[float]]:
    """``change[i][j]`` = ppl(language j | deactivate language i) / ppl(j | no steering) − 1.

    ``perplexity`` maps a plan (``"none"`` or ``"-L"``) to {evaluated language: perplexity}.
    """
    base = perplexity["none"]
    return [[perplexity[f"-{row}"][col] / base[col] - 1.0 for col in languages] for row in languages]


def dominance(change: list[list[float]], languages: Sequence[str]) -> dict[str, Any]:
    """How specific the deactivations are.

    * row dominance of L: deactivating L raises L's perplexity more than any other language's;
    * column dominance of M: M's perplexity rises more when M is deactivated than any other L;
    * own/other ratio of L: the change in L divided by the mean change in the other languages
      (``inf`` when that mean is ≤ 0 and the own change is positive).
    """
    n = len(languages)
    rows = {
        lang: all(change[i][i] > change[i][j] for j in range(n) if j != i) for i, lang in enumerate(languages)
    }
    cols = {
        lang: all(change[j][j] > change[i][j] for i in range(n) if i != j) for j, lang in enumerate(languages)
    }
    ratios = {}
    for i, lang in enumerate(languages):
        others = [change[i][j] for j in range(n) if j != i]
        mean_other = sum(others) / len(others) if others else 0.0
        own = change[i][i]
        ratios[lang] = own / mean_other if mean_other > 0 else (math.inf if own > 0 else 0.0)
    return {
        "row_dominance": rows,
        "column_dominance": cols,
        "own_other_ratio": ratios,
        "row_dominance_rate": sum(rows.values()) / n if n else 0.0,
        "column_dominance_rate": sum(cols.values()) / n if n else 0.0,
        "median_own_other_ratio": statistics.median(ratios.values()) if ratios else 0.0,
    }


def forcing_means(per_pair: dict[tuple[str, str], dict[str, float]]) -> dict[str, float]:
    """Means of the forcing metrics over the off-diagonal (source ≠ target) pairs."""
    pairs = [metrics for (source, target), metrics in per_pair.items() if source != target]
    names = ("target_rate", "clean_target_rate", "degenerate_rate", "source_rate")
    return {name: sum(m[name] for m in pairs) / len(pairs) if pairs else 0.0 for name in names}


# ----------------------------------------------------------------------------- pipeline


@dataclass
class Run:
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
    run = Run(folder, mode, model, path, corpus_folder, chosen, forcing, log)
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
        _report(run, summary, neuron_sets)
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
        from lape_harness.starter_corpus import build_corpus

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


def _load_model(run: Run, batch_size: int, device: str | None):
    """The ``hf-steered`` model, loaded once for every evaluation (holding the perplexity neuron set)."""
    from lape_harness.model import HFSteeredLM, pick_device

    with run.stage("load model"):
        options = {"batch_size": batch_size, "device": pick_device(device)}
        arguments = {"pretrained": run.path, "neurons": str(run.neuron_file(run.mode.ppl_rate)), "steer": "none"}
        return HFSteeredLM.create_from_arg_obj(arguments, options)


def _profile(run: Run, device: str | None):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lape_harness.corpora import open_corpus
    from lape_harness.neurons import ActivationStats
    from lape_harness.profile import profile_model

    path = run.folder / "stats.safetensors"
    if path.is_file():
        stats = ActivationStats.load(path)
        same = (stats.languages, stats.meta.get("seq_len"), stats.meta.get("max_tokens"))
        if same == (run.languages, run.mode.seq_len, run.mode.profile_tokens):
            run.log(f"[demo] reusing {path}")
            return stats
    sources = open_corpus(run.corpus / "train", run.languages)
    partial = run.folder / "stats.partial"
    model = AutoModelForCausalLM.from_pretrained(run.path, dtype="auto").eval()
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


def _identify(run: Run, stats) -> dict:
    from lape_harness.lape import identify_many
    from lape_harness.neurons import NeuronSet

    files = {rate: run.neuron_file(rate) for rate in run.mode.top_rates}
    if all(path.is_file() for path in files.values()):
        sets = {rate: NeuronSet.load(path) for rate, path in files.items()}
        if all(s.meta.get("stats_hash") == stats.content_hash() for s in sets.values()):
            return sets
    sets = identify_many(stats, run.mode.top_rates)
    for rate, neuron_set in sets.items():
        neuron_set.save(files[rate])
    return sets


def _heldout(run: Run, tokenizer) -> dict[str, dict[str, int]]:
    """The first paragraphs of each held-out file, up to the mode's token budget, in ``<run>/data``.

    Returns per language the paragraphs, tokens (as lm-eval scores them: the tokenizer's
    own special tokens included) and UTF-8 bytes.
    """
    from lape_harness.task_data import heldout_documents

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
    from lape_harness.task_data import DATA_ENV

    before = os.environ.get(DATA_ENV)
    os.environ[DATA_ENV] = str(folder)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(DATA_ENV, None)
        else:
            os.environ[DATA_ENV] = before


def _sweep(run: Run, lm, name: str, plans: list[str], tasks: list[str], batch_size, device,
           **options) -> dict[str, dict]:
    """Run lape-harness's sweep on the loaded model; returns {plan label: lm-eval results}.

    Plans without ``@file`` use the neuron set the model holds (the perplexity set)."""
    from lape_harness.sweep import run_sweep

    model_args = f"pretrained={run.path},neurons={lm.neurons_path}"
    outcomes = run_sweep(
        model_args, plans, tasks, run.folder / "results" / name, lm=lm, batch_size=batch_size, device=device,
        log=lambda message: run.log(f"[demo] {name}: {message}"), **options,
    )  # fmt: skip
    return {o.entry.label: json.loads(o.path.read_text(encoding="utf-8")) for o in outcomes}


def _perplexity_matrix(run: Run, lm, heldout: dict, batch_size, device) -> dict[str, Any]:
    languages = run.languages
    plans = ["none"] + [f"-{lang}" for lang in languages]
    tasks = [f"lape_ppl_{lang}" for lang in languages]
    with _data_root(run.folder / "data"):
        name = f"perplexity_{rate_tag(run.mode.ppl_rate)}_{run.mode.heldout_tokens}tok"  # the sweep's inputs
        results = _sweep(run, lm, name, plans, tasks, batch_size, device)
    byte_ppl = {
        plan: {lang: results[plan]["results"][f"lape_ppl_{lang}"]["byte_perplexity,none"] for lang in languages}
        for plan in plans
    }
    # Token-level perplexity from lm-eval's byte-level one: log ppl_tok = log ppl_byte · bytes / tokens.
    token_ppl = {
        plan: {
            lang: math.exp(math.log(value) * heldout[lang]["bytes"] / heldout[lang]["tokens"])
            for lang, value in row.items()
        }
        for plan, row in byte_ppl.items()
    }
    change = perplexity_change(token_ppl, languages)
    return {
        "neuron_set": rate_tag(run.mode.ppl_rate),
        "languages": languages,
        "baseline_token_perplexity": token_ppl["none"],
        "token_perplexity": token_ppl,
        "byte_perplexity": byte_ppl,
        "change": change,
        **dominance(change, languages),
        # The same summary on lm-eval's byte-level perplexity (no token conversion), for comparison.
        "byte_level": {key: value for key, value in dominance(perplexity_change(byte_ppl, languages), languages).items()
                       if key.endswith(("rate", "ratio"))},
    }


def _forcing(run: Run, lm, batch_size, device) -> dict[str, Any]:
    mode = run.mode
    pairs = [(s, t) for s in run.forcing_languages for t in run.forcing_languages if s != t]
    tasks = [f"lape_forcing_{s}_to_{t}" for s, t in pairs]
    conditions: dict[str, dict[str, Any]] = {"none": {"condition": "none"}}
    for rate, strength in mode.forcing_grid():
        for condition, spec in strength.plans().items():
            label = f"{spec}@{run.neuron_file(rate)}"
            conditions.setdefault(label, {"condition": condition, "rate": rate, "alpha": strength.alpha,
                                          "fill": strength.fill if condition != "activate" else None,
                                          "steer": spec})  # fmt: skip
    results = _sweep(
        run, lm, "forcing", list(conditions), tasks, batch_size, device,
        limit=mode.forcing_prompts, gen_kwargs=f"max_gen_toks={mode.max_gen_toks}", log_samples=True,
    )  # fmt: skip
    rows = []
    for label, info in conditions.items():
        per_pair = {
            (s, t): {
                name: results[label]["results"][f"lape_forcing_{s}_to_{t}"][f"{name},none"]
                for name in ("target_rate", "clean_target_rate", "degenerate_rate", "source_rate")
            }
            for s, t in pairs
        }
        rows.append({**info, "label": label.split("@")[0] + (f"@{rate_tag(info['rate'])}" if "rate" in info else ""),
                     **forcing_means(per_pair),
                     "per_pair": {f"{s}->{t}": m for (s, t), m in per_pair.items()}})  # fmt: skip
    baseline = rows[0]
    steered = rows[1:]
    best = max(steered, key=lambda row: (row["clean_target_rate"], -row["degenerate_rate"])) if steered else None
    return {
        "pairs": len(pairs),
        "prompts_per_pair": mode.forcing_prompts,
        "max_gen_toks": mode.max_gen_toks,
        "conditions": rows,
        "baseline": {k: baseline[k] for k in ("target_rate", "clean_target_rate", "degenerate_rate")},
        "best": best and {k: best[k] for k in ("label", "target_rate", "clean_target_rate", "degenerate_rate")},
    }


# ----------------------------------------------------------------------------- report


def headline(summary: dict[str, Any]) -> str:
    """The numbers a reader wants first, in a few lines."""
    lines = [f"[demo] {summary['model']} ({summary['mode']['name']} mode), {len(summary['languages'])} languages"]
    ppl = summary["perplexity"]
    n = len(ppl["languages"])
    lines.append(
        f"  perplexity ({ppl['neuron_set']} set): deactivating L hurts L most for "
        f"{sum(ppl['row_dominance'].values())}/{n} languages (row dominance), "
        f"column dominance {sum(ppl['column_dominance'].values())}/{n}, "
        f"median own/other change ratio {ppl['median_own_other_ratio']:.2f}"
    )
    forcing = summary.get("forcing")
    if forcing:
        base, best = forcing["baseline"], forcing["best"]
        lines.append(
            f"  forcing over {forcing['pairs']} pairs: unsteered target_rate {base['target_rate']:.2f} "
            f"(clean {base['clean_target_rate']:.2f}); best {best['label']}: target_rate {best['target_rate']:.2f}, "
            f"clean {best['clean_target_rate']:.2f}, degenerate {best['degenerate_rate']:.2f}"
        )
    return "\n".join(lines)


def _report(run: Run, summary: dict[str, Any], neuron_sets: dict) -> None:
    from lape_harness import plots

    folder = run.folder
    figures = {}
    main_set = neuron_sets[run.mode.ppl_rate]
    plots.plot_neurons_per_layer(main_set, folder / "neurons_per_layer.png")
    plots.plot_overlap(main_set, folder / "overlap.png")
    figures["neurons per layer"], figures["language overlap"] = "neurons_per_layer.png", "overlap.png"
    ppl = summary["perplexity"]
    import numpy as np

    plots.plot_ppl_change(
        plots.Matrix([f"-{lang}" for lang in ppl["languages"]], list(ppl["languages"]), np.array(ppl["change"]),
                     run.model, f"relative token-perplexity change ({ppl['neuron_set']} set)"),
        folder / "perplexity_change.png",
    )  # fmt: skip
    figures["perplexity change"] = "perplexity_change.png"
    forcing = summary.get("forcing")
    if forcing:
        best = next(row for row in forcing["conditions"] if row["label"] == forcing["best"]["label"])
        langs = run.forcing_languages
        values = np.array([[best["per_pair"][f"{s}->{t}"]["clean_target_rate"] if s != t else np.nan for t in langs]
                           for s in langs])  # fmt: skip
        plots.plot_forcing(
            plots.Matrix(list(langs), list(langs), values, run.model, f"clean_target_rate under {best['label']}"),
            folder / "forcing.png",
        )
        figures["forcing"] = "forcing.png"
    write_text_atomic(folder / "report.md", _markdown(run, summary, figures))


def _markdown(run: Run, summary: dict[str, Any], figures: dict[str, str]) -> str:
    mode, ppl, forcing = run.mode, summary["perplexity"], summary.get("forcing")
    langs = ppl["languages"]
    out = [
        f"# lape-harness demo: {summary['model']} ({mode.name} mode)",
        "",
        f"Languages ({len(langs)}): {' '.join(langs)}. Corpus: `{run.corpus}`. "
        f"Profiled up to {mode.profile_tokens or 'all'} tokens per language (sequence length {mode.seq_len}); "
        f"held-out perplexity on up to {mode.heldout_tokens} tokens per language.",
        "",
        "| language | profiled tokens | held-out tokens | " + " | ".join(f"neurons {t}" for t in summary["neurons"]) + " |",
        "|---|---|---|" + "---|" * len(summary["neurons"]),
    ]
    for lang in langs:
        counts = " | ".join(str(summary["neurons"][tag].get(lang, 0)) for tag in summary["neurons"])
        out.append(f"| {lang} | {summary['tokens_per_language'][lang]} | {summary['heldout'][lang]['tokens']} | {counts} |")
    out += ["", f"![neurons per layer]({figures['neurons per layer']})", f"![language overlap]({figures['language overlap']})", ""]
    out += [
        f"## Perplexity matrix ({ppl['neuron_set']} set)",
        "",
        "Row: the language whose neurons are deactivated (`steer=-L`); column: the held-out text; cell: the "
        "relative change of token-level perplexity against no steering, in %. Bold: the row's largest change.",
        "",
        "| deactivated \\ text | " + " | ".join(langs) + " |",
        "|---|" + "---|" * len(langs),
    ]
    for i, row in enumerate(ppl["change"]):
        top = max(range(len(row)), key=row.__getitem__)
        cells = [f"**{v * 100:.1f}**" if j == top else f"{v * 100:.1f}" for j, v in enumerate(row)]
        out.append(f"| {langs[i]} | " + " | ".join(cells) + " |")
    ratio = ppl["median_own_other_ratio"]
    out += [
        "",
        f"- row dominance (deactivating L hurts L most): {sum(ppl['row_dominance'].values())}/{len(langs)} "
        f"({', '.join(l for l, ok in ppl['row_dominance'].items() if ok) or 'none'})",
        f"- column dominance (L's text suffers most from deactivating L): {sum(ppl['column_dominance'].values())}/{len(langs)}",
        f"- median ratio of own-language change to mean other-language change: {ratio:.2f}",
        f"- on lm-eval's byte-level perplexity instead: row dominance {ppl['byte_level']['row_dominance_rate']:.2f}, "
        f"column dominance {ppl['byte_level']['column_dominance_rate']:.2f}, median ratio "
        f"{ppl['byte_level']['median_own_other_ratio']:.2f}",
        f"- baseline token perplexity: " + ", ".join(f"{l} {v:.1f}" for l, v in ppl["baseline_token_perplexity"].items()),
        "",
        f"![perplexity change]({figures['perplexity change']})",
        "",
    ]  # fmt: skip
    if forcing:
        out += [
            "## Language forcing",
            "",
            f"{forcing['pairs']} source→target pairs of {' '.join(run.forcing_languages)}, {forcing['prompts_per_pair']} "
            f"questions each, greedy, up to {forcing['max_gen_toks']} new tokens. Means over the off-diagonal pairs. "
            "`src`/`tgt` are the prompt and target languages; α scales the target's mean activation, c is the "
            "fill of the deactivated source neurons.",
            "",
            "| plan | ratio | α | c | target_rate | clean_target_rate | degenerate_rate | source_rate |",
            "|---|---|---|---|---|---|---|---|",
        ]  # fmt: skip
        for row in forcing["conditions"]:
            rate = rate_tag(row["rate"]) if "rate" in row else "-"
            fill = "-" if row.get("fill") is None else _num(row["fill"])
            alpha = _num(row["alpha"]) if "alpha" in row else "-"
            out.append(f"| `{row.get('steer', 'none')}` | {rate} | {alpha} | {fill} | {row['target_rate']:.2f} | "
                       f"{row['clean_target_rate']:.2f} | {row['degenerate_rate']:.2f} | {row['source_rate']:.2f} |")  # fmt: skip
        out += ["", f"Best by clean_target_rate: `{forcing['best']['label']}`.", "", f"![forcing]({figures['forcing']})", ""]
    out += [
        "## Time",
        "",
        " · ".join(f"{name} {seconds:.0f} s" for name, seconds in run.timings.items()),
        "",
        "## Files",
        "",
        "- `stats.safetensors`: activation statistics; `neurons/lape-top*.safetensors`: neuron sets",
        "- `results/perplexity_*/steer=*/`, `results/forcing/steer=*/`: lm-eval results JSONs (and forcing samples)",
        "- `summary.json`: every number above",
        "",
    ]
    return "\n".join(out)
