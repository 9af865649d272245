"""``vllm-steered``'s start-up check: proof, in the engine configuration actually running, that every
wrapped layer on every tensor-parallel rank applies its plan, before any result is produced.

Three parts, cheapest first; each failure is a :class:`~lape_harness.errors.HookNeverFiredError`
naming the layer and the rank:

1. **The wrappers, eagerly, on every rank**
   (:func:`~lape_harness.plugin.vllm_worker.wrapper_self_test`, run in the workers): every
   decoder layer has a wrapper; the half of the act-and-mul op's input the wrapper multiplies the
   shift by is the half the op is linear in (the up projection), found from the op itself, not from
   its name; on a synthetic batch the wrapper returns ``s·op(x) + b·up`` for a random scale and shift.
2. **The tables, on every rank** (:func:`~lape_harness.plugin.vllm_worker.table_digest`): after each probe plan is written, each rank's
   rows of every layer hold exactly the plan's values at the plan's neurons of its shard (weighted
   sums of ``scale − 1`` and ``shift`` by global neuron index, so a wrong shard offset, a rank that
   was never written or a lost layer shows).
3. **The compiled engine** (:func:`run_startup_check`): per layer and rank, one request whose
   slot scales that rank's shard of that layer by −3 to −4.5 and one whose slot shifts it by +4 to
   +5.5 (values stepping with the neuron index, exact in bf16), batched beside a request on slot 0:
   each probe must move the next-token log-probabilities by more than :data:`TOLERANCE` nats, and
   the slot-0 neighbour must not move (no leak between requests). Then the decode steps: with
   every neuron zeroed, the second generated token's log-probabilities must equal a prefill of the
   prompt plus the first token under the same plan (and differ from the unsteered one), so decode
   steps (CUDA graphs included) read the tables too.

What it does not prove: that vLLM's neuron ``j`` of a shard is the model's neuron
``offset + j`` (vLLM's column-parallel layout, read in its source; docs/architecture.md), and
numerical parity with ``hf-steered`` (``benchmarks/gpu_check.py``, ``tests/test_vllm.py``).

Example:
    >>> report = run_startup_check(lm)        # doctest: +SKIP
    >>> report["probes"], round(report["seconds"], 1)    # doctest: +SKIP
    (36, 1.8)
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from lape_harness.errors import HookNeverFiredError
from lape_harness.plugin.vllm_slots import SLOT_KEY

logger = logging.getLogger(__name__)

PROBE_TEXT = "The capital of France is"
#: nats a probe must move the next-token log-probabilities by, and a slot-0 neighbour may not
TOLERANCE = 0.1
#: the probes' edits on a shard: a ← −3·a (scale), a ← a + 4 (shift), stepping by 0.5 with the index
PROBE_SCALE, PROBE_SHIFT = -3.0, 4.0


# ------------------------------------------------------------------- in the lm-eval process


def expected_digests(edits: dict[int, tuple[list[int], list[float], list[float]]], layers: int, offset: int,
                     width: int) -> list[tuple[float, float]]:
    """What :func:`table_digest` of a rank holding neurons ``offset..offset+width-1`` must report."""
    digests = [(0.0, 0.0)] * layers
    for layer, (index, scale, shift) in edits.items():
        mine = [(i, s, b) for i, s, b in zip(index, scale, shift) if offset <= i < offset + width]
        digests[layer] = (math.fsum((i + 1) * (s - 1) for i, s, _ in mine), math.fsum((i + 1) * b for i, _, b in mine))
    return digests


def run_startup_check(lm) -> dict[str, Any]:
    """Run the whole check on a started ``vllm-steered`` model (see the module docstring); returns
    what it ran and how long it took. Every slot it used is cleared again."""
    started = time.perf_counter()
    failures = [failure for report in lm.model.collective_rpc("lape_self_test") for failure in report["failures"]]
    if failures:
        raise HookNeverFiredError(f"vllm-steered start-up check: {'; '.join(failures[:6])}"
                                  + (f" (and {len(failures) - 6} more)" if len(failures) > 6 else ""))
    layouts = sorted(lm.model.collective_rpc("lape_layout"), key=lambda layout: layout["rank"])
    probes = [(layer, layout, kind) for layer in range(lm.num_layers) for layout in layouts
              for kind in ("scale", "shift")]
    prober = _Prober(lm, layouts)
    try:
        plain = prober.generate([(0, None)], max_tokens=2)[0]
        free = list(range(1, lm.plan_slots)) or [0]
        for start in range(0, len(probes), len(free)):
            chunk = list(zip(free, probes[start:start + len(free)]))
            for slot, (layer, layout, kind) in chunk:
                prober.write(slot, _probe_edits(layer, layout, kind))
            neighbour = [(0, None)] if free != [0] else []
            outputs = prober.generate(neighbour + [(slot, None) for slot, _ in chunk], max_tokens=1)
            if neighbour:
                _check_neighbour(plain, outputs[0], "a probe")
            for (_slot, (layer, layout, kind)), output in zip(chunk, outputs[len(neighbour):]):
                moved = _largest_change(plain[0], output[0])
                if moved <= TOLERANCE:
                    raise HookNeverFiredError(
                        f"vllm-steered start-up check: layer {layer} on rank {layout['rank']}: its "
                        f"{'scale' if kind == 'scale' else 'shift'} ({_describe(kind, layout)}) moved the output by "
                        f"{moved:.3g} nats only, so the compiled engine ignores that layer's table; try "
                        "enforce_eager=True and report the vLLM version")
        _check_decode(prober, plain, slot=free[-1])
    finally:
        for slot in sorted(prober.used):
            lm.clear_slot(slot)
        lm.model.reset_prefix_cache()
    seconds = time.perf_counter() - started
    logger.info("vllm-steered: start-up check passed: %d probes on %d layer(s) × %d rank(s), prefill and decode, "
                "in %.1f s", len(probes), lm.num_layers, len(layouts), seconds)
    return {"probes": len(probes), "layers": lm.num_layers, "ranks": len(layouts), "seconds": round(seconds, 3)}


def _probe_edits(layer: int, layout: dict, kind: str) -> dict[int, tuple[list[int], list[float], list[float]]]:
    """Every neuron of the rank's shard of ``layer``; the values step with the neuron index (−3, −3.5,
    −4, −4.5, ... or +4, +4.5, ...: exact in bf16) so that a neuron written to the wrong place shows
    in the digests."""
    neurons = list(range(layout["offset"], layout["offset"] + layout["width"]))
    steps = [0.5 * (neuron % 4) for neuron in neurons]
    if kind == "scale":
        return {layer: (neurons, [PROBE_SCALE - step for step in steps], [0.0] * len(neurons))}
    return {layer: (neurons, [1.0] * len(neurons), [PROBE_SHIFT + step for step in steps])}


def _describe(kind: str, layout: dict) -> str:
    edit = f"a ← ({PROBE_SCALE:g} to {PROBE_SCALE - 1.5:g})·a" if kind == "scale" else \
        f"a ← a + ({PROBE_SHIFT:g} to {PROBE_SHIFT + 1.5:g})"
    return f"{edit} on its {layout['width']} neurons from {layout['offset']}"


def _check_decode(prober: _Prober, plain, slot: int) -> None:
    """The second generated token, steered in a decode step, equals a prefill of prompt + first token."""
    lm = prober.lm
    everything = {layer: (list(range(lm.width)), [0.0] * lm.width, [0.0] * lm.width) for layer in range(lm.num_layers)}
    prober.write(slot, everything)
    requests = ([(0, None)] if slot else []) + [(slot, None)]
    outputs = prober.generate(requests, max_tokens=2)
    if slot:
        _check_neighbour(plain, outputs[0], "a request with every neuron zeroed")
    decoded = outputs[-1]
    first = decoded[2]
    prefilled = prober.generate([(slot, first)], max_tokens=1)[0]
    unsteered = prober.generate([(0, first)], max_tokens=1)[0]
    if _largest_change(prefilled[0], decoded[1]) > TOLERANCE or _largest_change(prefilled[0], unsteered[0]) <= TOLERANCE:
        raise HookNeverFiredError(
            "vllm-steered start-up check: in a decode step the plan did not apply as in a prefill (the second "
            "generated token's log-probabilities differ from a prefill of the prompt and the first token under "
            "the same plan), e.g. CUDA graphs captured without the tables; try enforce_eager=True or "
            "compilation_config={\"cudagraph_mode\": \"PIECEWISE\"} and report the vLLM version")


def _check_neighbour(plain, neighbour, what: str) -> None:
    moved = _largest_change(plain[0], neighbour[0])
    if plain[1] and neighbour[1] and plain[2] == neighbour[2]:  # the decode step, after the same first token
        moved = max(moved, _largest_change(plain[1], neighbour[1]))
    if moved > TOLERANCE:
        raise HookNeverFiredError(
            f"vllm-steered start-up check: a request on plan slot 0 moved by {moved:.3g} nats when {what} ran beside "
            "it on another slot, so plans would leak between requests in this engine configuration (e.g. a model "
            "runner that orders tokens differently): pass plan_slots=1 to run plans one after another, and report "
            "the vLLM version")


class _Prober:
    """Writes probe plans into slots (checking every rank's tables) and runs the probe prompt."""

    def __init__(self, lm, layouts: list[dict]) -> None:
        self.lm, self.layouts = lm, layouts
        self.tokens = lm.tok_encode(PROBE_TEXT)
        self.calls = 0
        self.used: set[int] = set()

    def write(self, slot: int, edits: dict) -> None:
        self.used.add(slot)
        self.lm.write_slot_edits(edits, slot)
        for report in self.lm.model.collective_rpc("lape_table_digest", args=(slot,)):
            layout = next(layout for layout in self.layouts if layout["rank"] == report["rank"])
            expected = expected_digests(edits, self.lm.num_layers, layout["offset"], layout["width"])
            for layer, (got, want) in enumerate(zip(report["digests"], expected)):
                if any(not math.isclose(g, w, rel_tol=1e-6, abs_tol=1e-6) for g, w in zip(got, want)):
                    raise HookNeverFiredError(
                        f"vllm-steered start-up check: layer {layer} on rank {report['rank']}: plan slot {slot} holds "
                        f"other values than written (digest {got}, expected {want}): the rank's table was not "
                        "written, or written at the wrong neurons of its shard")

    def generate(self, requests: list[tuple[int, int | None]], max_tokens: int) -> list[tuple]:
        """Per request ``(slot, extra token)``: ``(logprobs of step 1, of step 2 or {}, first token)``."""
        from vllm import SamplingParams, TokensPrompt

        self.calls += 1
        prompts, params = [], []
        for number, (slot, extra) in enumerate(requests):
            tokens = self.tokens + ([extra] if extra is not None else [])
            prompts.append(TokensPrompt(prompt_token_ids=tokens, cache_salt=f"lape-probe-{self.calls}-{number}"))
            params.append(SamplingParams(temperature=0.0, max_tokens=max_tokens, logprobs=5,
                                         extra_args={SLOT_KEY: slot}))
        self.lm.model.reset_prefix_cache()
        outputs = self.lm.model.llm.generate(prompts, params, use_tqdm=False)
        found = []
        for output in outputs:
            steps = [{token: entry.logprob for token, entry in step.items()} for step in output.outputs[0].logprobs]
            found.append((steps[0], steps[1] if len(steps) > 1 else {}, output.outputs[0].token_ids[0]))
        return found


def _largest_change(before: dict[int, float], after: dict[int, float]) -> float:
    """The largest log-probability change over ``before``'s top tokens (inf if one left the top)."""
    return max(abs(value - after[token]) if token in after else math.inf for token, value in before.items())
