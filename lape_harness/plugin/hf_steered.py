"""``hf-steered``: lm-eval's ``hf`` model with language arithmetics on the MLP neurons.

Every ``hf`` argument keeps working; five more select the steering::

    lm_eval --model hf-steered \\
        --model_args pretrained=meta-llama/Llama-3.1-8B,neurons=neuron_cache/llama-3.1-8b/lape-top1.safetensors,steer=-en+de \\
        --tasks belebele_deu_Latn,xnli_de

* ``neurons=``: a neuron-set file from ``lape-harness identify``;
* ``steer=``: a plan in the grammar of :mod:`lape_harness.steering` (``none``, ``auto``, ``-de+fr``, ...);
* ``steer_scope=all|prompt|generated``: which token positions are steered;
* ``allow_other_model=True``: steer with a neuron set made for another model on purpose
  (otherwise an error, see :mod:`lape_harness.identity`);
* ``steer_bos=true|false``: whether the start token's positions are steered too (default true,
  as the paper's code does; false leaves them as profiling does, which never counts them).

The spec, the neuron file, the plan's languages (each must have neurons in the file) and the
model the file was made for (its id and configuration hash against the model's configuration)
are checked before any weights load; the file's layer count and width are checked against the
loaded model. Under the ``lm_eval`` command an error of these checks prints as its message,
without lm-eval's traceback (:mod:`lape_harness.plugin.error_display`). Steering applies in ``loglikelihood``,
``loglikelihood_rolling``, ``generate_until`` (KV cache on) and batch-size auto-detection.
``steer=auto`` steers each request by its task's languages, grouping requests by plan.
The results JSON gets a ``steering`` entry (see :meth:`HFSteeredLM.steering_signature`), and
lm-eval's request cache (``--use_cache``) keeps one plan's answers apart from another's
(:mod:`lape_harness.plugin.request_cache`).

Example:
    >>> lm = HFSteeredLM(pretrained="lape:gemma-3-270m", neurons="lape-top1.safetensors", steer="de")  # doctest: +SKIP
    >>> lm.set_plan("-de+2*fr")            # no reload: swaps per-layer tensors       # doctest: +SKIP
    >>> lm.steering_signature()["signature"]                                           # doctest: +SKIP
    'lape-steer|plan:-de+2*fr|methods:deactivate,additive|scope:all|steer_bos:true|neurons:lape-top1.safetensors@3f2a9c1e0b7d|v:0.1.0'
"""

from __future__ import annotations

from lm_eval.models.huggingface import HFLM

from lape_harness.neurons import NeuronSet
from lape_harness.plugin.steered_lm import SteeredLM
from lape_harness.steering import SteeringHooks, SteeringPlan


class HFSteeredLM(SteeredLM, HFLM):
    """``HFLM`` whose forward passes steer language neurons by a plan (see module docstring)."""

    model_name = "hf-steered"

    def _engine_started(self, pretrained) -> None:
        self._split_requests_across_cpu_processes()
        self._start_token_ids = self._start_tokens()
        self.steering: SteeringHooks | None = None

    def _split_requests_across_cpu_processes(self) -> None:
        """Data parallel on CPU as on GPUs: ``HFLM`` splits requests across launched processes only with >1 GPU.

        ``ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 -m lm_eval --model hf-steered ...``
        """
        accelerator = getattr(self, "accelerator", None)
        if accelerator is not None and accelerator.num_processes > 1 and self.world_size == 1 and self.device.type == "cpu":
            self._rank, self._world_size = accelerator.process_index, accelerator.num_processes

    def _start_tokens(self) -> tuple[int, ...]:
        """The token ids left unedited under ``steer_bos=false``: lm-eval's prefix token (BOS, or EOS
        for a model without one) and the special tokens the tokenizer puts before text (what
        profiling never counts)."""
        if self.steer_bos:
            return ()
        from lape_harness.corpora import special_prefix

        return tuple(dict.fromkeys([self.prefix_token_id, *special_prefix(self.tokenizer)]))

    # ---------------------------------------------------------------- plans

    def _install_plan(self, plan: SteeringPlan) -> None:
        """Swap the hooks' per-layer tensors to ``plan`` (compiled once, cached)."""
        self.steering.use(plan)

    def _install_neurons(self, neuron_set: NeuronSet | None) -> None:
        """New hooks for ``neuron_set`` (checked against the model's layers and width), then the old ones removed."""
        hooks = SteeringHooks(self.model, neuron_set, scope=self.steer_scope, start_tokens=self._start_token_ids)
        if self.steering is not None:
            self.steering.remove()
        self.steering = hooks

    def _detect_batch_size(self, requests=None, pos: int = 0):
        """``batch_size=auto``: lm-eval detects the largest batch that fits at every call of a request
        method, and ``steer=auto`` calls them once per plan group (441 groups for forcing): each
        detection is several full-length forward passes, and a cross-rank ``all_gather`` that hangs
        when ranks hold different groups. The full-length detection does not depend on the plan,
        so it runs once; the per-length one (``auto:N``) is already kept by lm-eval."""
        if requests is not None:
            return super()._detect_batch_size(requests, pos)
        if getattr(self, "_full_length_batch_size", None) is None:
            self._full_length_batch_size = super()._detect_batch_size()
        return self._full_length_batch_size

    # ---------------------------------------------------------------- the two places every forward pass goes through

    def _model_call(self, inps, attn_mask=None, labels=None):
        with self.steering.active(generating=False):
            return super()._model_call(inps, attn_mask=attn_mask, labels=labels)

    def _model_generate(self, context, max_length, stop, **generation_kwargs):
        with self.steering.active(generating=True):
            return super()._model_generate(context, max_length, stop, **generation_kwargs)
