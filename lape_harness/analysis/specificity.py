"""Specificity: a plan's effect with a neuron set against the same plan's effect with its random
control (:mod:`lape_harness.controls`), counted in the direction the plan means.

**Direction.** Each term of a plan says what it means for its language: a deactivation (``-de``),
a multiplication by a factor below 1 (``*0.5*de``) or an addition/replacement with a negative
strength (``+-1*de``) *harms* it; an addition or replacement (``+de``, ``=de``, ``+de.diff``) or a
factor above 1 (``*2*de``) *pushes towards* it; a factor of exactly 1 means nothing. A language
named by several terms takes the direction of the term applied last (the order of operations:
deactivations, then multiplications, then activations), so ``-de+de`` pushes de. Plans that name
several languages (``-de-fr``, ``-en+de``) are scored on each named language in its own direction,
and the effect is the mean over the named languages both runs were scored on. ``auto`` (and
``auto:`` templates) push each task's own language: every language counts, in the direction of the
template's ``tgt`` term.

**Effect.** On a task: the difference from the baseline (the relative change for perplexities),
made positive when it goes the intended way (harm: accuracy down, perplexity up; push: the
reverse). ``difference`` = effect − control effect (the baseline cancels: it is the set's score
minus the control's), with its standard error from lm-eval's per-task standard errors.
``ratio`` = effect / control effect, given only where the control effect is distinguishable from
noise (more than 2 standard errors from 0); else ``ratio`` is None and ``note`` says why (no
standard error for the metric, as for perplexities, or a control effect within the noise).

Example:
    >>> intended_directions("-en+de"), intended_directions("*0.5*de"), intended_directions("auto")
    ({'en': -1, 'de': 1}, {'de': -1}, {'*': 1})
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from lape_harness.analysis.results import is_perplexity

#: how many standard errors from 0 a control effect must be before a ratio is given
NOISE_SE = 2.0
_CONTROL = re.compile(r"^(?P<plan>.+) @(?P<set>.+)-control-s\d+$")


@dataclass
class Specificity:
    """One plan against its random control on one (model, family, metric); see the module docstring."""

    model: str
    family: str
    metric: str
    plan: str
    control: str
    language: str  # the one language scored, else "average"
    effect: float
    control_effect: float
    difference: float
    difference_stderr: float | None
    ratio: float | None
    note: str = ""


def control_of(label: str) -> str | None:
    """The plan label a control plan label is paired with, else None.

    >>> control_of("-de @lape-top3-control-s0"), control_of("-de @lape-top3")
    ('-de @lape-top3', None)
    """
    match = _CONTROL.match(label)
    return f"{match['plan']} @{match['set']}" if match else None


def intended_directions(plan: str) -> dict[str, int]:
    """``{language: +1 (push) | -1 (harm)}`` of a plan's text (``"*"``: every language, for auto)."""
    from lape_harness.steering.plan import OPS, AutoPlan
    from lape_harness.steering.spec import parse_steer

    parsed = parse_steer(plan)
    auto = isinstance(parsed, AutoPlan)
    if auto and parsed.template is None:
        return {"*": 1}
    terms = parsed.template.terms if auto else parsed.terms
    directions: dict[str, int] = {}
    for term in sorted(terms, key=lambda term: OPS.index(term.op) if term.op in OPS else len(OPS)):
        direction = _direction(term.op, term.strength)
        language = "*" if auto and term.language == "tgt" else term.language
        if direction and not (auto and term.language == "src"):
            directions[language] = direction
    return directions


def _direction(op: str, strength: Any) -> int:
    if op == "deactivate":
        return -1
    value = 1.0 if strength is None else float(strength)
    if op == "multiply":
        return 0 if value == 1 else (1 if value > 1 else -1)
    return -1 if value < 0 else 1  # add, replace


def specificity(rows, notes: list[str] | None = None) -> list[Specificity]:
    """Each control plan against its plan, per (model, family, metric), from leaderboard rows
    (:class:`~lape_harness.analysis.leaderboard.Row` with their baseline differences). A control
    run without its plan (or without a language both were scored on) gets a line in ``notes``."""
    by_plan: dict[tuple[str, str, str, str], dict[str, Any]] = defaultdict(dict)
    for row in rows:
        if (row.relative if is_perplexity(row.metric) else row.delta) is not None:
            by_plan[(row.model, row.family, row.metric, row.plan)][row.language] = row
    paired = []
    for (model, family, metric, plan), control in sorted(by_plan.items()):
        real_plan = control_of(plan)
        if real_plan is None:
            continue
        real = by_plan.get((model, family, metric, real_plan), {})
        directions = intended_directions(real_plan.split(" @")[0])
        scored = [lang for lang in control if lang in real and (lang in directions or "*" in directions)]
        if not scored:
            if notes is not None:
                why = "no run of that plan with the set itself" if not real else "no language both were scored on"
                notes.append(f"control run {plan!r} ({family}, {model}) has no pair: {why}; run {real_plan!r} "
                             "on the same tasks to get its specificity")
            continue
        paired.append(_pair(model, family, metric, real_plan, plan, scored, directions, real, control))
    return paired


def _pair(model, family, metric, plan, control_plan, languages, directions, real, control) -> Specificity:
    relative = is_perplexity(metric)

    def oriented(row) -> float:
        change = row.relative if relative else row.delta
        better = -change if relative or not row.higher_is_better else change  # > 0: better for the language
        return directions.get(row.language, directions.get("*", 1)) * better

    n = len(languages)
    effect = sum(oriented(real[lang]) for lang in languages) / n
    control_effect = sum(oriented(control[lang]) for lang in languages) / n
    scale = [(real[lang].baseline if relative else 1.0) for lang in languages]
    score_se = [_root_sum(real[lang].stderr, control[lang].stderr) for lang in languages]
    control_se = [control[lang].delta_stderr for lang in languages]
    difference_se = None if None in score_se else math.sqrt(sum((se / s) ** 2 for se, s in zip(score_se, scale))) / n
    noise = None if None in control_se else NOISE_SE * math.sqrt(sum((se / s) ** 2 for se, s in zip(control_se, scale))) / n
    ratio, note = None, ""
    if noise is None:
        note = "no standard error for this metric: ratio not given"
    elif abs(control_effect) <= noise:
        note = f"control effect within the noise (|{control_effect:.3g}| ≤ {NOISE_SE:g} SE): ratio not given"
    else:
        ratio = effect / control_effect
    language = languages[0] if n == 1 else "average"
    return Specificity(model, family, metric, plan, control_plan, language, effect, control_effect,
                       effect - control_effect, difference_se, ratio, note)


def _root_sum(*errors: float | None) -> float | None:
    return None if any(error is None for error in errors) else math.sqrt(sum(error ** 2 for error in errors))
