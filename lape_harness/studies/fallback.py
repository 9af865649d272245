"""The fallback study: switch off languages one after another and see where the model goes.

Following the paper (Gurgurov et al. 2025, fallbacks.py): the neurons of high-resource
languages are deactivated cumulatively in a fixed order (default en, fr, es, it, pt, ru,
de, ar, zh, ko, ja: step k deactivates the union of the first k languages' neurons, each
set to the fill value c, default −1.5 = the paper's "negative" method), the model answers
everyday English questions at every step (greedy, ``"Q: " + question + "A: "`` as the paper,
at most 128 new tokens, stopping at a new ``Q:``/``A:``), and each answer's language is
identified (:func:`lape_harness.langid.identify_language`). Step 0 is the unsteered model.

The report is the distribution of answer languages per step: which language the model
falls back to once its first choices are gone. Results are saved after every step; a
re-run with the same settings resumes after the last finished step.

Example:
    >>> lm = HFSteeredLM(pretrained="lape:gemma-3-270m", neurons="neuron_cache/gemma-3-270m/lape-top1.safetensors")  # doctest: +SKIP
    >>> study = run_fallback(lm, output="results/fallback")         # doctest: +SKIP
    >>> study.steps[1].most_common                                  # doctest: +SKIP
    'de'
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lape_harness.atomic import write_json_atomic, write_text_atomic
from lape_harness.errors import InputError

PAPER_ORDER = ("en", "fr", "es", "it", "pt", "ru", "de", "ar", "zh", "ko", "ja")
PAPER_FILL = -1.5
STOP = ["\nQ:", "\nA:"]

# Everyday English questions written for lape-harness (the paper used Tang et al.'s 70
# mvicuna questions, which are not redistributed here).
QUESTIONS = (
    "What is a good way to start the morning?",
    "How can I learn to cook simple meals at home?",
    "Why do people enjoy walking in the park?",
    "What should I pack for a weekend trip to the mountains?",
    "How do I keep my houseplants healthy?",
    "What are some tips for sleeping better at night?",
    "How can I save money on groceries?",
    "What is the best way to learn a new language?",
    "Why is it important to drink enough water?",
    "How do I write a polite email to my neighbour?",
    "What can I do on a rainy afternoon?",
    "How can I make new friends in a new city?",
    "What are the benefits of reading books?",
    "How should I prepare for a job interview?",
    "What is a healthy breakfast?",
    "How do I teach a child to ride a bicycle?",
    "Why do leaves change colour in autumn?",
    "What are some ways to reduce stress at work?",
    "How can I organise my kitchen better?",
    "What should I do if I miss my train?",
    "How do I take care of a new puppy?",
    "What makes a good birthday present for a friend?",
    "How can I stay focused while studying?",
    "Why do people like to travel?",
    "What is the easiest way to fix a flat bicycle tyre?",
    "How often should I call my parents?",
    "What are good habits for a tidy home?",
    "How can I get better at public speaking?",
    "What should I cook for a dinner party of six?",
    "How do I choose a good book to read?",
)


def format_prompt(question: str) -> str:
    """The paper's prompt: no newline and no space before ``A:``.

    >>> format_prompt("How are you?")
    'Q: How are you?A: '
    """
    return "Q: " + question + "A: "


def fallback_steps(order, fill: float = PAPER_FILL) -> list[tuple[list[str], str]]:
    """``[(deactivated languages, steer spec), ...]`` for steps 0..len(order).

    >>> fallback_steps(["en", "fr"], -1.5)
    [([], 'none'), (['en'], '-en=-1.5'), (['en', 'fr'], '-en=-1.5-fr=-1.5')]
    """
    fill_text = format(float(fill), "g")
    steps = [([], "none")]
    for k in range(1, len(order) + 1):
        languages = list(order[:k])
        steps.append((languages, "".join(f"-{code}={fill_text}" for code in languages)))
    return steps


@dataclass
class FallbackStep:
    step: int
    deactivated: list[str]
    steer: str
    answers: list[str]
    languages: list[str]  # identified language per answer ("unknown" when undecidable)
    distribution: dict[str, float] = field(default_factory=dict)  # language -> share of answers
    most_common: str = ""


@dataclass
class FallbackStudy:
    settings: dict[str, Any]
    questions: list[str]
    steps: list[FallbackStep]

    def to_json(self) -> dict[str, Any]:
        return {"settings": self.settings, "questions": self.questions, "steps": [asdict(s) for s in self.steps]}


def _summarize(step: int, deactivated: list[str], steer: str, answers: list[str]) -> FallbackStep:
    from lape_harness.langid import identify_language

    languages = [identify_language(answer) for answer in answers]
    counts = Counter(languages)
    total = max(len(languages), 1)
    distribution = {code: n / total for code, n in counts.most_common()}
    return FallbackStep(step, deactivated, steer, answers, languages, distribution,
                        counts.most_common(1)[0][0] if counts else "")


def generate(lm, prompts: list[str], gen_kwargs: dict[str, Any]) -> list[str]:
    """Greedy answers from an lm-eval model's ``generate_until`` under its current plan."""
    from lm_eval.api.instance import Instance

    requests = [
        Instance(request_type="generate_until", doc={"prompt": prompt}, arguments=(prompt, dict(gen_kwargs)),
                 idx=0, metadata=("lape_fallback", position, 1))
        for position, prompt in enumerate(prompts)
    ]
    return [answer.strip() for answer in lm.generate_until(requests)]


def run_fallback(
    lm,
    order=PAPER_ORDER,
    fill: float = PAPER_FILL,
    questions=QUESTIONS,
    max_gen_toks: int = 128,
    repetition_penalty: float = 1.1,
    output: str | os.PathLike | None = None,
    log: Callable[[str], None] = print,
) -> FallbackStudy:
    """Run every step on ``lm`` (an ``HFSteeredLM`` with a neuron set) and return the study.

    With ``output``, ``fallback.json`` is written after each step and reused by a re-run
    with the same settings.
    """
    order = [str(code) for code in order]
    questions = [str(q).strip() for q in questions if str(q).strip()]
    if not order:
        raise InputError("the deactivation order is empty; pass e.g. --order en,fr,es")
    if len(set(order)) != len(order):
        raise InputError(f"the deactivation order {','.join(order)} names a language twice; list each once")
    if not questions:
        raise InputError("no questions to ask; the prompts file is empty")
    neuron_set = lm.steering.neurons
    if neuron_set is None:
        raise InputError("the fallback study deactivates neurons: add neurons=path/to/lape-top1.safetensors to --model-args")
    missing = [code for code in order if code not in neuron_set.languages]
    if missing:
        raise InputError(f"the neuron set has no neurons for {', '.join(missing)}; it has "
                         f"{', '.join(neuron_set.languages)}: drop them from --order")
    gen_kwargs = {"until": STOP, "max_gen_toks": int(max_gen_toks), "do_sample": False, "temperature": 0.0}
    if repetition_penalty != 1.0:
        gen_kwargs["repetition_penalty"] = float(repetition_penalty)
    settings = {"order": order, "fill": float(fill), "max_gen_toks": int(max_gen_toks),
                "repetition_penalty": float(repetition_penalty), "prompt_format": "Q: {question}A: ",
                "stop": STOP, "model": _model_name(lm)}
    study = FallbackStudy(settings, questions, [])
    saved = Path(output) / "fallback.json" if output is not None else None
    if saved is not None and saved.is_file():
        earlier = json.loads(saved.read_text(encoding="utf-8"))
        if earlier.get("settings") == settings and earlier.get("questions") == questions:
            study.steps = [FallbackStep(**step) for step in earlier["steps"]]
            if study.steps:
                log(f"resuming after step {study.steps[-1].step} from {saved}")
    prompts = [format_prompt(q) for q in questions]
    for step, (deactivated, steer) in enumerate(fallback_steps(order, fill)):
        if step < len(study.steps):
            continue
        lm.set_plan(steer)
        answers = generate(lm, prompts, gen_kwargs)
        result = _summarize(step, deactivated, steer, answers)
        study.steps.append(result)
        shares = ", ".join(f"{code} {share:.0%}" for code, share in list(result.distribution.items())[:4])
        log(f"step {step} (off: {','.join(deactivated) or 'nothing'}): {shares}")
        if saved is not None:
            write_json_atomic(saved, study.to_json())
    lm.set_plan("none")
    return study


def _model_name(lm) -> str:
    config = getattr(lm, "config", None)
    return str(getattr(config, "_name_or_path", "") or type(lm).__name__)


def fallback_table(study: FallbackStudy, top: int = 5) -> str:
    """Markdown: per step the deactivated languages, the most common answer language and the
    distribution (top ``top`` languages with their share of answers)."""
    lines = [
        f"# Fallback study: {study.settings.get('model', '')}",
        "",
        f"Cumulative deactivation (fill {study.settings['fill']:g}) in the order {', '.join(study.settings['order'])}; "
        f"{len(study.questions)} English questions per step, answer language by lape_harness.langid.",
        "",
        "| step | deactivated | most common | answer languages (share) |",
        "|---:|---|---|---|",
    ]
    for step in study.steps:
        shares = ", ".join(f"{code} {share:.0%}" for code, share in list(step.distribution.items())[:top])
        lines.append(f"| {step.step} | {','.join(step.deactivated) or '(none)'} | {step.most_common} | {shares} |")
    return "\n".join(lines) + "\n"


def plot_fallback(study: FallbackStudy, path: str | os.PathLike, top: int = 8) -> dict[str, Any]:
    """Stacked bars: per step the share of answers in each language (the ``top`` most
    frequent languages overall; the rest as "other"). Returns the plotted shares."""
    import numpy as np

    from lape_harness.analysis.figures import pyplot, save_figure

    plt = pyplot()
    totals = Counter()
    for step in study.steps:
        totals.update(step.languages)
    shown = [code for code, _ in totals.most_common(top)]
    has_other = any(code not in shown for step in study.steps for code in step.languages)
    categories = shown + (["other"] if has_other else [])
    shares = np.zeros((len(categories), len(study.steps)))
    for column, step in enumerate(study.steps):
        for code, share in step.distribution.items():
            shares[categories.index(code if code in shown else "other"), column] += share * 100
    labels = ["none"] + [f"+{step.deactivated[-1]}" for step in study.steps[1:]]
    figure, axis = plt.subplots(figsize=(max(7, 0.75 * len(study.steps) + 3), 4.8))
    colours = plt.get_cmap("tab10" if len(categories) <= 10 else "tab20")
    bottom = np.zeros(len(study.steps))
    for row, code in enumerate(categories):
        colour = "lightgray" if code in ("other", "unknown") else colours(row % colours.N)
        axis.bar(range(len(study.steps)), shares[row], bottom=bottom, color=colour, label=code, edgecolor="white")
        for column, value in enumerate(shares[row]):
            if value >= 8:
                axis.text(column, bottom[column] + value / 2, code, ha="center", va="center", fontsize=7)
        bottom += shares[row]
    axis.set_xticks(range(len(study.steps)))
    axis.set_xticklabels(labels, fontsize=8)
    axis.set_xlabel("languages deactivated so far (cumulative, left to right)")
    axis.set_ylabel("answers in each language (%)")
    axis.set_ylim(0, 100)
    axis.legend(title="answer language", bbox_to_anchor=(1.01, 1), loc="upper left", fontsize=8)
    axis.set_title(f"Fallback: answer language as languages are switched off "
                   f"(fill {study.settings['fill']:g}, {len(study.questions)} questions)")
    save_figure(figure, path)
    return {"steps": labels, "languages": categories, "share_percent": shares.tolist()}


def write_report(study: FallbackStudy, out_dir: str | os.PathLike) -> list[str]:
    """``fallback.json`` (answers and languages), ``fallback.md`` and ``fallback.png``."""
    out = Path(out_dir)
    write_json_atomic(out / "fallback.json", study.to_json())
    write_text_atomic(out / "fallback.md", fallback_table(study))
    plot_fallback(study, out / "fallback.png")
    return [str(out / name) for name in ("fallback.json", "fallback.md", "fallback.png")]
