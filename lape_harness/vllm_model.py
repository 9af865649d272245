"""``vllm-steered``: lm-eval's ``vllm`` model with language arithmetics on the MLP neurons.

The same ``neurons=``, ``steer=`` (every method and combination, plan files, ``auto`` and
``auto:<template>`` grouped by task plan) as ``hf-steered``, the same steering signature in the
results JSON and the same per-plan request-cache keys (:mod:`lape_harness.steered_lm`); every
``vllm`` argument keeps working (``tensor_parallel_size``, ``dtype``, ``max_model_len``,
``gpu_memory_utilization``, ``enforce_eager``, ...)::

    lm_eval --model vllm-steered \\
        --model_args pretrained=meta-llama/Llama-3.1-8B,tensor_parallel_size=2,neurons=neuron_cache/llama-3.1-8b/lape-top1.safetensors,steer=auto \\
        --tasks lape_forcing_de

How: vLLM imports :mod:`lape_harness.vllm_worker` in each worker process as the engine's
``worker_extension_cls``, which wraps every decoder MLP's activation while the model loads,
before vLLM compiles it or captures graphs. Switching plans compiles the plan once
(:func:`~lape_harness.steering.compiled.compile_plan`) and writes each layer's scale and shift
into the workers' vectors (each tensor-parallel rank keeps its shard of the neurons), then
resets vLLM's prefix cache so that no KV computed under one plan serves another.

Checks: the model's MLPs must be of a form the workers could wrap and match the neuron file
(layers, width across ranks); at start-up, zeroing every MLP neuron must change a probe
prompt's next-token log-probabilities (else :class:`~lape_harness.errors.HookNeverFiredError`:
the steering would be a silent no-op); each plan switch must reach exactly the plan's neurons.
Only ``steer_scope=all`` and ``steer_bos=true`` are supported; ``data_parallel_size > 1`` (independent Ray engines) is
refused.

Example:
    >>> lm = VLLMSteeredLM(pretrained="lape:gemma-3-270m", neurons="lape-top2.safetensors", steer="auto")  # doctest: +SKIP
    >>> lm.set_plan("-de+2*fr")      # writes the workers' vectors: no reload, no recompilation      # doctest: +SKIP
"""

from __future__ import annotations

import logging
from typing import Any

from lape_harness.embedded import resolve_pretrained
from lape_harness.error_display import plain_errors
from lape_harness.errors import HookNeverFiredError, InputError
from lape_harness.sites import UnsupportedArchitectureError
from lape_harness.steered_lm import SteeredLM
from lape_harness.steering.compiled import compile_plan
from lape_harness.steering.plan import SteeringPlan
from lape_harness.vllm_setup import cpu_defaults, lm_eval_vllm_class

logger = logging.getLogger(__name__)

VLLM = lm_eval_vllm_class()
WORKER_EXTENSION = "lape_harness.vllm_worker.SteeringWorkerExtension"
PROBE_TEXT = "The capital of France is"


class VLLMSteeredLM(SteeredLM, VLLM):
    """lm-eval's ``VLLM`` whose workers steer language neurons by a plan (see module docstring)."""

    model_name = "vllm-steered"
    supported_scopes = ("all",)
    supports_steer_bos_false = False

    @plain_errors
    def __init__(self, pretrained, neurons: str | None = None, steer: Any = "none", steer_scope: str = "all",
                 allow_other_model: bool = False, **kwargs) -> None:
        spec = self.check_steering_args(neurons, steer, steer_scope, allow_other_model)
        if int(kwargs.get("data_parallel_size", 1)) > 1:
            raise InputError("vllm-steered steers one engine; data_parallel_size>1 starts independent engines "
                             "through Ray that it cannot reach: use tensor_parallel_size=N (or one lm_eval per GPU group)")
        extension = kwargs.setdefault("worker_extension_cls", WORKER_EXTENSION)
        if extension != WORKER_EXTENSION:
            raise InputError(f"vllm-steered needs worker_extension_cls={WORKER_EXTENSION}; remove "
                             f"worker_extension_cls={extension} from --model_args")
        cpu_defaults(kwargs)
        self.check_neurons_model(pretrained, kwargs)
        pretrained = resolve_pretrained(pretrained)
        super().__init__(pretrained=pretrained, **kwargs)
        self.num_layers, self.width = self._steerable_layout(pretrained)
        self._active: SteeringPlan | None = None
        if self.neuron_set is not None:
            self.use_neurons(self.neuron_set)
        self._check_steering_takes_effect()
        self.set_plan(spec)

    # ---------------------------------------------------------------- plans

    def apply_plan(self, plan: SteeringPlan) -> None:
        """Write ``plan`` into every worker's scale and shift vectors and reset the prefix cache."""
        if plan == self._active:
            return
        edits = compile_plan(plan, self.neuron_set, self.num_layers, self.width)
        payload = {layer: (e.index.tolist(), e.scale.tolist(), e.shift.tolist()) for layer, e in edits.items()}
        written = sum(self.model.collective_rpc("lape_write_plan", args=(payload,)))
        expected = sum(len(edit.index) for edit in edits.values())
        self.model.reset_prefix_cache()
        self._active = plan
        if written != expected:
            raise HookNeverFiredError(f"steer={plan}: the vLLM workers edit {written} neurons, the plan {expected}; "
                                      "the engine's layers do not match the neuron file")

    def use_neurons(self, neuron_set) -> None:
        """Check ``neuron_set`` against the engine's layers and width; the next plan is written anew."""
        neuron_set.validate_for(self.num_layers, self.width)
        self._active = None

    # ---------------------------------------------------------------- start-up checks

    def _steerable_layout(self, pretrained) -> tuple[int, int]:
        """``(layers, neurons per layer across tensor-parallel ranks)`` the workers can steer."""
        layouts = self.model.collective_rpc("lape_layout")
        first = layouts[0]
        if first["layers"] == 0 or first["steered"] != first["layers"]:
            raise UnsupportedArchitectureError(
                f"vllm-steered cannot steer {pretrained}: of its {first['layers']} decoder MLPs "
                f"({', '.join(first['forms']) or 'none found'}) {first['steered']} have a form it knows (a fused "
                "gate_up_proj with an act-and-mul op, or a non-gated MLP's act); use --model hf-steered for it"
            )
        return first["layers"], sum(layout["width"] for layout in layouts)

    def _check_steering_takes_effect(self) -> None:
        """Zero every MLP neuron: a probe prompt's next-token log-probabilities must change (else the
        engine runs a model that ignores the vectors, e.g. compiled before they existed)."""
        from vllm import SamplingParams, TokensPrompt

        prompt = [TokensPrompt(prompt_token_ids=self.tok_encode(PROBE_TEXT))]
        params = SamplingParams(temperature=0.0, max_tokens=1, logprobs=5)

        def next_token_logprobs() -> dict[int, float]:
            self.model.reset_prefix_cache()
            output = self.model.generate(prompt, params, use_tqdm=False)[0].outputs[0]
            return {token: entry.logprob for token, entry in output.logprobs[0].items()}

        plain = next_token_logprobs()
        zero = [0.0] * self.width
        everything = {layer: (list(range(self.width)), zero, zero) for layer in range(self.num_layers)}
        self.model.collective_rpc("lape_write_plan", args=(everything,))
        try:
            steered = next_token_logprobs()
        finally:
            self.model.collective_rpc("lape_write_plan", args=({},))
            self.model.reset_prefix_cache()
        if steered == plain:
            raise HookNeverFiredError(
                "vllm-steered: zeroing every MLP neuron did not change the model's output, so steering would "
                "be a silent no-op in this engine configuration; try enforce_eager=True and report the vLLM version"
            )
        logger.info("vllm-steered: steering takes effect in the engine (start-up check passed)")

