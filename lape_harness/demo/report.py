"""The study's report: the headline lines and ``report.md`` with its tables and pictures (neurons per
layer and overlap, the perplexity-change and forcing matrices, per hub benchmark none vs plan vs random
control per language), headed by the model, engine, data sources and every steering signature.

Example:
    >>> print(headline(summary))                             # doctest: +SKIP
    [demo] lape:gemma-3-270m (quick mode), 6 languages
      perplexity (top3 set): deactivating L hurts L most for 5/6 languages (row dominance), ...
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lape_harness.analysis.comparison import comparison_markdown, plot_comparison
from lape_harness.analysis.neuron_figures import plot_neurons_per_layer, plot_overlap
from lape_harness.analysis.result_figures import plot_forcing, plot_ppl_change
from lape_harness.analysis.result_matrices import Matrix
from lape_harness.atomic import write_text_atomic
from lape_harness.demo.modes import rate_tag
from lape_harness.steering.plan import format_number


def headline(summary: dict[str, Any]) -> str:
    """The numbers a reader wants first, in a few lines."""
    command = summary.get("command", "demo")
    lines = [f"[{command}] {summary['model']} ({summary['mode']['name']} mode, {summary.get('engine', 'hf-steered')}), "
             f"{len(summary['languages'])} languages"]
    ppl = summary["perplexity"] or {"languages": []}
    n = len(ppl["languages"])
    lines += [] if not n else [
        f"  perplexity ({ppl['neuron_set']} set): deactivating L hurts L most for "
        f"{sum(ppl['row_dominance'].values())}/{n} languages (row dominance), "
        f"column dominance {sum(ppl['column_dominance'].values())}/{n}, "
        f"median own/other change ratio {ppl['median_own_other_ratio']:.2f}"
    ]
    control = ppl.get("control")
    if control:
        lines.append(
            f"  random control (same neurons per language and layer): own-language change median "
            f"{_median_percent(control['own_change'])} with the set, {_median_percent(control['control_own_change'])} "
            f"with the control; {_median_specificity(control)}"
        )
    forcing = summary.get("forcing")
    if forcing:
        base, best = forcing["baseline"], forcing["best"]
        lines.append(
            f"  forcing over {forcing['pairs']} pairs: unsteered target_rate {base['target_rate']:.2f} "
            f"(clean {base['clean_target_rate']:.2f}); best {best['label']}: target_rate {best['target_rate']:.2f}, "
            f"clean {best['clean_target_rate']:.2f}, degenerate {best['degenerate_rate']:.2f}"
        )
        for row in forcing["conditions"]:
            if "gain_over_control" in row:
                lines.append(f"  forcing {row['label']}: clean {row['clean_target_rate']:.2f} ({row['gain']:+.2f} over "
                             f"none), with its random control {row['control_clean_target_rate']:.2f} "
                             f"({row['control_gain']:+.2f}): difference {row['gain_over_control']:+.2f}, "
                             f"{_ratio(row['specificity'], 'the control gains nothing over none')}")  # fmt: skip
    for family, result in (summary.get("benchmarks") or {}).items():
        for plan in result["plans"]:
            rows = [row for row in result["comparison"] if row["plan"].split(" @")[0] == plan]
            if rows:
                lines.append(f"  {family} {plan} ({rows[0]['metric']}, {len(rows)} languages): mean plan − none "
                             f"{_mean(rows, 'plan_delta'):+.3f}, control − none {_mean(rows, 'control_delta'):+.3f}")
    for family, reason in (summary.get("skipped") or {}).items():
        lines.append(f"  {family}: skipped ({reason})")
    return "\n".join(lines)


def _mean(rows: list[dict[str, Any]], key: str) -> float:
    return float(np.mean([row[key] for row in rows]))


def _median_percent(values: dict[str, float]) -> str:
    return f"{float(np.median(list(values.values()))) * 100:+.1f}%"


def write_report(run, summary: dict[str, Any], neuron_sets: dict) -> None:
    """Write the pictures and ``report.md`` of a :class:`~lape_harness.demo.pipeline.DemoRun` into its folder."""
    folder = run.folder
    figures = {}
    main_set = neuron_sets[run.mode.ppl_rate]
    plot_neurons_per_layer(main_set, folder / "neurons_per_layer.png")
    plot_overlap(main_set, folder / "overlap.png")
    figures["neurons per layer"], figures["language overlap"] = "neurons_per_layer.png", "overlap.png"
    ppl = summary["perplexity"]
    if ppl:
        plot_ppl_change(
            Matrix([f"-{lang}" for lang in ppl["languages"]], list(ppl["languages"]), np.array(ppl["change"]),
                   run.model, f"relative token-perplexity change ({ppl['neuron_set']} set)"),
            folder / "perplexity_change.png",
        )  # fmt: skip
        figures["perplexity change"] = "perplexity_change.png"
    for family, result in (summary.get("benchmarks") or {}).items():
        if result["comparison"]:
            metric = result["comparison"][0]["metric"]
            plot_comparison(result["comparison"], folder / f"{family}.png", f"{family} ({metric})")
            figures[family] = f"{family}.png"
    forcing = summary.get("forcing")
    if forcing:
        best = next(row for row in forcing["conditions"] if row["label"] == forcing["best"]["label"])
        langs = run.forcing_languages
        values = np.array([[best["per_pair"][f"{s}->{t}"]["clean_target_rate"] if s != t else np.nan for t in langs]
                           for s in langs])  # fmt: skip
        plot_forcing(
            Matrix(list(langs), list(langs), values, run.model, f"clean_target_rate under {best['label']}"),
            folder / "forcing.png",
        )
        figures["forcing"] = "forcing.png"
    write_text_atomic(folder / "report.md", _markdown(run, summary, figures))


def _markdown(run, summary: dict[str, Any], figures: dict[str, str]) -> str:
    mode, ppl, forcing = run.mode, summary["perplexity"], summary.get("forcing")
    langs = summary["languages"]
    heldout = summary.get("heldout") or {}
    out = [
        f"# lape-harness {summary.get('command', 'demo')}: {summary['model']} ({mode.name} mode)",
        "",
        *_provenance(run, summary),
        f"Languages ({len(langs)}): {' '.join(langs)}. "
        f"Profiled up to {mode.profile_tokens or 'all'} tokens per language (sequence length {mode.seq_len}); "
        f"held-out perplexity on up to {mode.heldout_tokens} tokens per language.",
        "",
        "| language | profiled tokens | held-out tokens | " + " | ".join(f"neurons {t}" for t in summary["neurons"]) + " |",
        "|---|---|---|" + "---|" * len(summary["neurons"]),
    ]
    for lang in langs:
        counts = " | ".join(str(summary["neurons"][tag].get(lang, 0)) for tag in summary["neurons"])
        held = heldout[lang]["tokens"] if lang in heldout else "-"
        out.append(f"| {lang} | {summary['tokens_per_language'][lang]} | {held} | {counts} |")
    out += ["", f"![neurons per layer]({figures['neurons per layer']})", f"![language overlap]({figures['language overlap']})", ""]
    if ppl:
        out += _perplexity_section(ppl, figures)
    if forcing:
        out += [
            "## Language forcing",
            "",
            f"{forcing['pairs']} source→target pairs of {' '.join(run.forcing_languages)}, {forcing['prompts_per_pair']} "
            f"questions each, greedy, up to {forcing['max_gen_toks']} new tokens. Means over the off-diagonal pairs. "
            "`src`/`tgt` are the prompt and target languages; α scales the target's mean activation, c is the "
            "fill of the deactivated source neurons.",
            "",
            "| plan | ratio | α | c | target_rate | clean_target_rate | degenerate_rate | source_rate | specificity |",
            "|---|---|---|---|---|---|---|---|---|",
        ]  # fmt: skip
        for row in forcing["conditions"]:
            rate = rate_tag(row["rate"]) if "rate" in row else "-"
            if row.get("control_of"):
                rate += " control"
            fill = "-" if row.get("fill") is None else format_number(row["fill"])
            alpha = format_number(row["alpha"]) if "alpha" in row else "-"
            specificity = ("—" if row["specificity"] is None else f"{row['specificity']:.2f}") if "specificity" in row else ""
            out.append(f"| `{row.get('steer', 'none')}` | {rate} | {alpha} | {fill} | {row['target_rate']:.2f} | "
                       f"{row['clean_target_rate']:.2f} | {row['degenerate_rate']:.2f} | {row['source_rate']:.2f} | "
                       f"{specificity} |")  # fmt: skip
        out += ["", "Control rows: the same plan with the set's random control. Specificity: the plan's gain in "
                "clean_target_rate over no steering divided by its control's (— where the control gains nothing: the "
                "ratio is then undefined, and the gain itself is the plan's effect beyond its control).", ""]  # fmt: skip
        out += ["", f"Best by clean_target_rate: `{forcing['best']['label']}`.", "", f"![forcing]({figures['forcing']})", ""]
    for family, result in (summary.get("benchmarks") or {}).items():
        out += _benchmark_section(family, result, figures)
    out += [
        "## Time",
        "",
        " · ".join(f"{name} {seconds:.0f} s" for name, seconds in run.timings.items()),
        "",
        "## Files",
        "",
        "- `stats.safetensors`: activation statistics; `neurons/lape-top*.safetensors`: neuron sets "
        "(`*-control-s0`: their random controls)",
        "- `results/<stage>/steer=*/`: lm-eval results JSONs (and forcing samples), one folder per plan",
        "- `summary.json`: every number above",
        "",
    ]
    return "\n".join(out)


def _perplexity_section(ppl: dict[str, Any], figures: dict[str, str]) -> list[str]:
    langs = ppl["languages"]
    out: list[str] = []
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
        f"({', '.join(lang for lang, ok in ppl['row_dominance'].items() if ok) or 'none'})",
        f"- column dominance (L's text suffers most from deactivating L): {sum(ppl['column_dominance'].values())}/{len(langs)}",
        f"- median ratio of own-language change to mean other-language change: {ratio:.2f}",
        f"- on lm-eval's byte-level perplexity instead: row dominance {ppl['byte_level']['row_dominance_rate']:.2f}, "
        f"column dominance {ppl['byte_level']['column_dominance_rate']:.2f}, median ratio "
        f"{ppl['byte_level']['median_own_other_ratio']:.2f}",
        "- baseline token perplexity: " + ", ".join(f"{lang} {v:.1f}" for lang, v in ppl["baseline_token_perplexity"].items()),
        "",
        f"![perplexity change]({figures['perplexity change']})",
        "",
    ]  # fmt: skip
    control = ppl.get("control")
    if control:
        out += [
            "### Against a random control",
            "",
            "The same deactivations with the set's random control (for every language and layer as many neurons "
            "as the set has, drawn from the neurons not selected for the language; `neurons/*-control-s0`). "
            "Specificity = own-language change with the set / with the control (docs/controls.md); — where the "
            "control did not raise the language's perplexity (no ratio is defined there).",
            "",
            "| deactivated L | change of L (set) | change of L (control) | specificity |",
            "|---|---|---|---|",
        ]  # fmt: skip
        for lang in langs:
            ratio = _ratio_cell(control["specificity"].get(lang))
            out.append(f"| {lang} | {control['own_change'][lang] * 100:+.1f}% | "
                       f"{control['control_own_change'][lang] * 100:+.1f}% | {ratio} |")  # fmt: skip
        out += [
            "",
            f"- {_median_specificity(control)}; the control's own matrix: row dominance "
            f"{control['row_dominance_rate']:.2f}, median own/other ratio {control['median_own_other_ratio']:.2f}",
            "",
        ]  # fmt: skip
    return out


def _ratio(value: float | None, why_undefined: str) -> str:
    return f"ratio {value:.2f}" if value is not None else f"ratio undefined ({why_undefined})"


def _ratio_cell(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _median_specificity(control: dict) -> str:
    """The median set/control ratio, and the languages where the control changed nothing (no ratio)."""
    undefined = control.get("undefined") or []
    median = _ratio(control["median_specificity"], "the control raised no language's own perplexity")
    return f"median specificity {median.removeprefix('ratio ')}" + (
        f" ({len(undefined)} language(s) without one: the control did not raise their perplexity)" if undefined else "")


def _benchmark_section(family: str, result: dict[str, Any], figures: dict[str, str]) -> list[str]:
    """None, each plan and its random control per language, with the differences ± SE."""
    rows = result["comparison"]
    out = [
        f"## {family} ({result['family']}, {result['neuron_set']} set)",
        "",
        f"{len(result['tasks'])} tasks ({', '.join(result['tasks'])}), at most {result['examples_per_task']} examples "
        f"each; plans {', '.join(f'`{plan}`' for plan in result['plans'])}, each also with the set's random control. "
        "Differences ± one standard error (lm-eval's per-run standard errors, as independent runs).",
        "",
    ]
    if not rows:
        return out + ["No language has scores under no steering, the plan and its control (see `summary.json` notes).", ""]
    out += comparison_markdown(rows)
    return out + ["", f"![{family}]({figures[family]})", ""]


def _provenance(run, summary: dict[str, Any]) -> list[str]:
    """Model, engine, data sources, skipped families and every steering signature."""
    args = summary.get("engine_args") or {}
    out = [
        f"- model: `{summary['model']}` (`{run.path}`)",
        f"- engine: `{summary.get('engine', 'hf-steered')}`" + (f" with `{','.join(f'{k}={v}' for k, v in args.items())}`"
                                                              if args else "") + f", batch size {run.batch_size}",
        f"- training text: `{run.train or run.corpus / 'train'}`",
    ]  # fmt: skip
    out += [f"- {family} data: {source}" for family, source in (summary.get("sources") or {}).items()]
    out += [f"- {family}: skipped ({reason})" for family, reason in (summary.get("skipped") or {}).items()]
    signatures = summary.get("signatures") or {}
    if signatures:
        out += ["", "<details><summary>steering signatures (one per plan run)</summary>", ""]
        for stage, by_plan in signatures.items():
            out += [f"- {stage}:"] + [f"  - `{signature}`" for signature in sorted(set(by_plan.values()))]
        out += ["", "</details>"]
    return out + [""]
