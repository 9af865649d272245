"""The demo's numbers from its lm-eval runs (read through :mod:`lape_harness.analysis.results`): the
perplexity matrix with its dominance summary (computed by :mod:`lape_harness.analysis.result_matrices`,
on token-level and on byte-level perplexity) and the forcing table.

Example:
    >>> forcing_means({("en", "de"): {"target_rate": 1.0, "clean_target_rate": 1.0,
    ...                                "degenerate_rate": 0.0, "source_rate": 0.0}})["target_rate"]
    1.0
    >>> round(token_perplexity(4.0, {"bytes": 300, "tokens": 100}), 6)
    64.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from lape_harness.analysis.result_matrices import control_specificity, dominance, ppl_change
from lape_harness.analysis.results import BASELINE, Run, family_scores

FORCING_METRICS = ("target_rate", "clean_target_rate", "degenerate_rate", "source_rate")


def token_perplexity(byte_perplexity: float, counts: dict[str, int]) -> float:
    """Token-level perplexity of a text from lm-eval's byte-level one:
    log ppl_token = log ppl_byte · bytes / tokens (``counts`` has the text's bytes and tokens)."""
    return math.exp(math.log(byte_perplexity) * counts["bytes"] / counts["tokens"])


def perplexity_summary(runs: dict[str, Run], languages: Sequence[str], heldout: dict[str, dict[str, int]],
                       neuron_set: str, control_runs: dict[str, Run] | None = None) -> dict[str, Any]:
    """The perplexity matrix of the runs of plans ``none`` and ``-L`` (L in ``languages``) on
    the ``lape_ppl_<L>`` tasks: perplexities, the token-level change matrix (rows: deactivated
    language, columns: evaluated language, both in ``languages`` order) and its dominance, plus
    the dominance on lm-eval's byte-level perplexity for comparison.

    ``control_runs`` (plans ``-L`` run with the set's random control) add ``control``: the
    control's change matrix and dominance, and per language the own-language change with the
    set and with the control and their ratio, the specificity
    (:func:`~lape_harness.analysis.result_matrices.control_specificity`), on token-level perplexity."""
    languages = list(languages)
    rows = [f"-{lang}" for lang in languages]

    def perplexities(plans: dict[str, Run]) -> tuple[dict, dict]:
        scores = {plan: family_scores(run, "lape_ppl", "byte_perplexity") for plan, run in plans.items()}
        byte_ppl = {plan: {lang: found[lang] for lang in languages} for plan, found in scores.items()}
        token_ppl = {plan: {lang: token_perplexity(value, heldout[lang]) for lang, value in row.items()}
                     for plan, row in byte_ppl.items()}  # fmt: skip
        return token_ppl, byte_ppl

    def change(perplexity, baseline):
        steered = {plan: row for plan, row in perplexity.items() if plan != BASELINE}
        return ppl_change(baseline, steered).take(rows, languages)

    token_ppl, byte_ppl = perplexities(runs)
    token_change, byte_change = change(token_ppl, token_ppl[BASELINE]), change(byte_ppl, byte_ppl[BASELINE])
    control = None
    if control_runs:
        control_ppl = perplexities(control_runs)[0]
        control_change = change(control_ppl, token_ppl[BASELINE])
        control = {
            "token_perplexity": control_ppl,
            "change": control_change.values.tolist(),
            **{key: value for key, value in dominance(control_change, languages).items() if key.endswith(("rate", "ratio"))},
            **control_specificity(token_change, control_change, languages),
        }  # fmt: skip
    return {
        "neuron_set": neuron_set,
        "languages": languages,
        "baseline_token_perplexity": token_ppl[BASELINE],
        "token_perplexity": token_ppl,
        "byte_perplexity": byte_ppl,
        "change": token_change.values.tolist(),
        **dominance(token_change, languages),
        "byte_level": {key: value for key, value in dominance(byte_change, languages).items()
                       if key.endswith(("rate", "ratio"))},
        "control": control,
    }


def forcing_means(per_pair: dict[tuple[str, str], dict[str, float]]) -> dict[str, float]:
    """Means of the forcing metrics over the off-diagonal (source ≠ target) pairs."""
    pairs = [metrics for (source, target), metrics in per_pair.items() if source != target]
    return {name: sum(m[name] for m in pairs) / len(pairs) if pairs else 0.0 for name in FORCING_METRICS}


def forcing_summary(runs: dict[str, Run], conditions: dict[str, dict[str, Any]], pairs: list[tuple[str, str]],
                    labels: dict[str, str]) -> dict[str, Any]:
    """The forcing table: per condition (a plan label of ``runs``, described by ``conditions``,
    shown as ``labels``) the means over ``pairs`` and each pair's metrics; the unsteered
    condition comes first, and the best steered one is chosen by clean_target_rate, then by
    the lowest degenerate_rate. A condition whose ``control_of`` names another's label is that
    plan run with the set's random control: the plan's row gets ``control_clean_target_rate``
    its gain in clean_target_rate over no steering (``gain``), the control's (``control_gain``),
    their difference (``gain_over_control``) and ``specificity``, their ratio, defined (not None)
    only where the control gains something."""
    rows = []
    for label, info in conditions.items():
        scores = {name: family_scores(runs[label], "lape_forcing", name) for name in FORCING_METRICS}
        per_pair = {(s, t): {name: scores[name][f"{s}→{t}"] for name in FORCING_METRICS} for s, t in pairs}
        rows.append({**info, "label": labels[label], **forcing_means(per_pair),
                     "per_pair": {f"{s}->{t}": m for (s, t), m in per_pair.items()}})
    baseline = rows[0]
    by_label = {row["label"]: row for row in rows}
    for row in rows:
        real = by_label.get(row.get("control_of"))
        if real is not None:  # the plan's row gets its control's rate and the ratio of their effects
            real["control_clean_target_rate"] = row["clean_target_rate"]
            gain = real["clean_target_rate"] - baseline["clean_target_rate"]
            control_gain = row["clean_target_rate"] - baseline["clean_target_rate"]
            real.update(gain=gain, control_gain=control_gain, gain_over_control=gain - control_gain,
                        specificity=gain / control_gain if control_gain > 0 else None)
    steered = [row for row in rows[1:] if not row.get("control_of")]
    best = max(steered, key=lambda row: (row["clean_target_rate"], -row["degenerate_rate"])) if steered else None
    return {
        "pairs": len(pairs),
        "conditions": rows,
        "baseline": {k: baseline[k] for k in ("target_rate", "clean_target_rate", "degenerate_rate")},
        "best": best and {k: best[k] for k in ("label", "target_rate", "clean_target_rate", "degenerate_rate")},
    }
