"""Applying a compiled plan to a Hugging Face model: one forward hook per layer's activation module.

:class:`SteeringHooks` finds each layer's neuron activation module (:mod:`lape_harness.sites`),
compiles a plan (:func:`~lape_harness.steering.compiled.compile_plan`), keeps each layer's
:class:`~lape_harness.steering.compiled.LayerEdit` as a float master copy on the device where that
layer computes, casts it to the activation's dtype, and edits the activation output in place
inside :meth:`SteeringHooks.active`. The ``scope`` (``all``, ``prompt``, ``generated``) decides
which positions of which forward passes are steered, ``start_tokens`` which positions never are;
a steered call in which some steered layer's hook did not fire raises
:class:`~lape_harness.errors.HookNeverFiredError` instead of returning unsteered results.

Example:
    >>> from lape_harness.neurons import NeuronSet
    >>> from lape_harness.steering import parse_steer
    >>> hooks = SteeringHooks(model, NeuronSet.load("lape-top1.safetensors"), scope="generated")  # doctest: +SKIP
    >>> hooks.use(parse_steer("-en+de"))                                  # doctest: +SKIP
    >>> with torch.no_grad(), hooks.active(generating=True):              # doctest: +SKIP
    ...     tokens = model.generate(input_ids, max_new_tokens=20)
    >>> hooks.remove()                                                    # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

from lape_harness.errors import HookNeverFiredError, InputError, LapeError
from lape_harness.steering.compiled import LayerEdit, compile_plan
from lape_harness.steering.plan import NO_STEERING, SteeringPlan
from lape_harness.steering.spec import check_scope, require_neurons


class SteeringHooks:
    """One forward hook per layer's activation module, registered once (when a plan first steers
    something: a model that only ever runs ``none`` has no hooks at all); plans swap tensors.

    ``scope``: ``all`` steers every position; ``prompt`` only the prompt (the whole input of
    log-likelihood requests, the prefill of generation); ``generated`` the positions that produce
    generated tokens: the last prompt position in the prefill (it gives the first new token) and
    every decode step. ``start_tokens``: token ids whose positions in the input (log-likelihood
    requests, generation's prompt) are left unedited, e.g. the start token (``steer_bos=false``);
    empty (the default): every position in scope is edited.

    >>> hooks = SteeringHooks(model, neuron_set, scope="all")   # doctest: +SKIP
    >>> hooks.use(parse_steer("-de+fr"))                          # doctest: +SKIP
    >>> with hooks.active(generating=False):                      # doctest: +SKIP
    ...     logits = model(input_ids).logits
    """

    def __init__(self, model: torch.nn.Module, neurons=None, scope: str = "all", start_tokens: Sequence[int] = ()):
        from lape_harness.sites import find_sites, unwrap

        self.scope = check_scope(scope)
        self.start_tokens = tuple(int(token) for token in start_tokens)
        self.neurons = neurons
        self.sites = find_sites(model)
        self.num_layers, self.width = len(self.sites), self.sites[0].width
        if neurons is not None:
            neurons.validate_for(self.num_layers, self.width)
        self.plan: SteeringPlan = NO_STEERING
        self._masters: list[LayerEdit | None] = [None] * self.num_layers  # float, where each layer computes
        self._edits: list[LayerEdit | None] = [None] * self.num_layers  # the masters cast to the activation dtype
        self._placed: dict[SteeringPlan, list[LayerEdit | None]] = {}  # master copies per plan, reused on switching
        self._steered_layers: frozenset[int] = frozenset()
        self._idle: list[LayerEdit | None] = [None] * self.num_layers
        self._live = self._idle  # what the hooks apply now: the plan's edits while steering, else nothing
        self._fired: set[int] = set()
        self._went_live = False
        self._phase = "idle"  # idle | score | prefill | decode
        self._last_only = False  # generated scope, prefill: only the last prompt position
        self._keep: dict[torch.device, torch.Tensor] | None = None  # positions to edit (start tokens excluded)
        self._model = unwrap(model)
        self._handles: list = []  # registered once, by the first plan that steers anything

    def _register(self) -> None:
        self._handles = [
            site.activation.register_forward_hook(self._make_hook(site.layer)) for site in self.sites
        ]
        if self.start_tokens:  # the input ids tell where the start tokens are
            self._handles.append(self._model.register_forward_pre_hook(self._before_model_forward, with_kwargs=True))
        if self.scope != "all" or self.start_tokens:  # they need to know when generation's prefill is over
            self._handles.append(self._model.register_forward_hook(self._after_model_forward))

    def use(self, plan: SteeringPlan) -> None:
        """Switch to ``plan``: compile it and place each layer's master copy where that layer computes,
        cast to the layer's dtype when its weights are floating point (quantized weights: at the first
        forward pass, to the activation's dtype)."""
        require_neurons(plan, self.neurons)
        masters = self._placed.get(plan)
        if masters is None:
            masters = [None] * self.num_layers
            for layer, edit in compile_plan(plan, self.neurons, self.num_layers, self.width).items():
                device = self.sites[layer].execution_device
                masters[layer] = edit.to(device, torch.float32 if device.type == "mps" else torch.float64)
            if len(self._placed) >= 64:  # bounded: a long sweep does not pile up device memory
                self._placed.pop(next(iter(self._placed)))
            self._placed[plan] = masters
        if plan and not self._handles:
            self._register()
        self.plan, self._masters = plan, list(masters)
        self._edits = [None if master is None else _cast(master, self.sites[layer].dtype)
                       for layer, master in enumerate(masters)]
        self._steered_layers = frozenset(layer for layer, edit in enumerate(masters) if edit is not None)

    def edits(self) -> dict[int, LayerEdit]:
        """The placed per-layer edits of the current plan (for inspection and tests)."""
        return {layer: edit for layer, edit in enumerate(self._edits) if edit is not None}

    @contextmanager
    def active(self, generating: bool = False) -> Iterator[None]:
        """Steer the forward passes inside; afterwards, check every steered layer's hook fired."""
        self._fired = set()
        self._went_live = False
        self._set_phase("prefill" if generating else "score")
        try:
            yield
        finally:
            self._set_phase("idle")
        missing = self._steered_layers - self._fired
        if self._went_live and missing:
            raise HookNeverFiredError(
                f"steering hooks of layers {sorted(missing)} did not fire during a steered call: the forward "
                "pass bypassed the MLP activation modules (e.g. a fused kernel or a replaced module), so "
                "lape-harness cannot steer this model configuration; load the model with plain transformers "
                "modules (no fused MLP kernels)"
            )

    def _set_phase(self, phase: str) -> None:
        """Enter a phase; the hooks steer in it when the scope covers it."""
        self._phase = phase
        steer = phase != "idle" and (
            self.scope == "all"
            or (self.scope == "prompt" and phase != "decode")
            or (self.scope == "generated" and phase != "score")
        )
        self._last_only = self.scope == "generated" and phase == "prefill"
        self._live = self._edits if steer else self._idle
        self._went_live = self._went_live or steer
        self._keep = None

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _make_hook(self, layer: int):
        site = self.sites[layer]

        def hook(module, inputs, output):
            edit = self._live[layer]
            if edit is None:
                return None
            self._fired.add(layer)
            if not output.is_floating_point():
                raise InputError(
                    f"{site.name} produced {output.dtype} activations: lape-harness steers floating-point "
                    "activations only; load the model so that its MLP activations are float (e.g. bitsandbytes "
                    "keeps them in its compute dtype, fully integer kernels do not)"
                )
            if edit.shift.dtype is not output.dtype or edit.index.device != output.device:
                # e.g. autocast, or quantized weights: cast the float master copy, never the last cast
                edit = self._edits[layer] = self._masters[layer].to(output.device, output.dtype)
            if output.requires_grad:  # keep autograd valid; inference (no_grad) edits in place
                output = output.clone()
            keep = self._keep_mask(output)
            if self._last_only:
                edit.apply_(output[..., -1:, :], None if keep is None else keep[..., -1:])
            else:
                edit.apply_(output, keep)
            return output

        return hook

    def _keep_mask(self, output: torch.Tensor) -> torch.Tensor | None:
        """The positions to edit on ``output``'s device (None: all of them)."""
        if self._keep is None:
            return None
        keep = self._keep.get(output.device)
        if keep is None:
            keep = self._keep[output.device] = next(iter(self._keep.values())).to(output.device)
        if keep.shape != output.shape[:-1]:
            raise LapeError(
                f"steer_bos=false: the activations have shape {tuple(output.shape)} but the input ids "
                f"{tuple(keep.shape)}; this model does not keep one activation row per input token"
            )
        return keep

    def _before_model_forward(self, module, args, kwargs):
        if self._live is self._idle or self._phase == "decode":  # decode steps hold generated tokens only
            return None
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        if not isinstance(input_ids, torch.Tensor):
            raise InputError(
                "steer_bos=false leaves the start token's positions unedited and needs the input ids to find "
                "them; this call passed none (inputs_embeds?): call the model with input_ids, or use steer_bos=true"
            )
        keep = input_ids != self.start_tokens[0]
        for token in self.start_tokens[1:]:
            keep &= input_ids != token
        self._keep = {keep.device: keep}
        return None

    def _after_model_forward(self, module, inputs, output):
        if self._phase == "prefill":
            self._set_phase("decode")
        self._keep = None


def _cast(master: LayerEdit, dtype: torch.dtype) -> LayerEdit:
    """``master`` in the layer's dtype when that is a float type (else the hook casts it later)."""
    return master.to(master.index.device, dtype) if dtype.is_floating_point else master
