"""Applying a compiled plan to a Hugging Face model: one forward hook per layer's activation module.

:class:`SteeringHooks` finds each layer's neuron activation module (:mod:`lape_harness.sites`),
compiles a plan (:func:`~lape_harness.steering.compiled.compile_plan`), places each layer's
:class:`~lape_harness.steering.compiled.LayerEdit` on the device and dtype where that layer
computes, and edits the activation output in place inside :meth:`SteeringHooks.active`. The
``scope`` (``all``, ``prompt``, ``generated``) decides which forward passes are steered; a
steered call in which some steered layer's hook did not fire raises
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

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from lape_harness.errors import HookNeverFiredError, InputError
from lape_harness.steering.compiled import LayerEdit, compile_plan
from lape_harness.steering.plan import NO_STEERING, SCOPES, SteeringPlan


class SteeringHooks:
    """One forward hook per layer's activation module, registered once (when a plan first steers
    something: a model that only ever runs ``none`` has no hooks at all); plans swap tensors.

    ``scope``: ``all`` steers every position; ``prompt`` only the prompt (the whole input of
    log-likelihood requests, the prefill of generation); ``generated`` only decode steps.

    >>> hooks = SteeringHooks(model, neuron_set, scope="all")   # doctest: +SKIP
    >>> hooks.use(parse_steer("-de+fr"))                          # doctest: +SKIP
    >>> with hooks.active(generating=False):                      # doctest: +SKIP
    ...     logits = model(input_ids).logits
    """

    def __init__(self, model: torch.nn.Module, neurons=None, scope: str = "all"):
        from lape_harness.sites import find_sites, unwrap

        if scope not in SCOPES:
            raise InputError(f"steer_scope={scope!r} is not one of {', '.join(SCOPES)}; e.g. steer_scope=generated")
        self.scope = scope
        self.neurons = neurons
        self.sites = find_sites(model)
        self.num_layers, self.width = len(self.sites), self.sites[0].width
        if neurons is not None:
            neurons.validate_for(self.num_layers, self.width)
        self.plan: SteeringPlan = NO_STEERING
        self._edits: list[LayerEdit | None] = [None] * self.num_layers
        self._placed: dict[SteeringPlan, list[LayerEdit | None]] = {}  # compiled plans, reused on switching
        self._steered_layers: frozenset[int] = frozenset()
        self._idle: list[LayerEdit | None] = [None] * self.num_layers
        self._live = self._idle  # what the hooks apply now: the plan's edits while steering, else nothing
        self._fired: set[int] = set()
        self._went_live = False
        self._phase = "idle"  # idle | score | prefill | decode
        self._model = unwrap(model)
        self._handles: list = []  # registered once, by the first plan that steers anything

    def _register(self) -> None:
        self._handles = [
            site.activation.register_forward_hook(self._make_hook(site.layer)) for site in self.sites
        ]
        if self.scope != "all":  # only scoped steering needs to know when generation's prefill is over
            self._handles.append(self._model.register_forward_hook(self._after_model_forward))

    def use(self, plan: SteeringPlan) -> None:
        """Switch to ``plan``: compile it and place each layer's tensors on that layer's device/dtype."""
        if plan and self.neurons is None:
            raise InputError(f"steer={plan} needs a neuron set: add neurons=path/to/lape-top1.safetensors")
        placed = self._placed.get(plan)
        if placed is None:
            placed = [None] * self.num_layers
            for layer, edit in compile_plan(plan, self.neurons, self.num_layers, self.width).items():
                site = self.sites[layer]
                placed[layer] = edit.to(site.execution_device, site.dtype)
            if len(self._placed) >= 64:  # bounded: a long sweep does not pile up device memory
                self._placed.pop(next(iter(self._placed)))
            self._placed[plan] = placed
        if plan and not self._handles:
            self._register()
        self.plan, self._edits = plan, list(placed)
        self._steered_layers = frozenset(layer for layer, edit in enumerate(placed) if edit is not None)

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
            self.scope == "all" or (self.scope == "generated") == (phase == "decode")
        )
        self._live = self._edits if steer else self._idle
        self._went_live = self._went_live or steer

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _make_hook(self, layer: int):
        def hook(module, inputs, output):
            edit = self._live[layer]
            if edit is None:
                return None
            self._fired.add(layer)
            if edit.shift.dtype is not output.dtype or edit.index.device != output.device:
                edit = self._edits[layer] = edit.to(output.device, output.dtype)  # e.g. under autocast
            return edit.apply(output)

        return hook

    def _after_model_forward(self, module, inputs, output):
        if self._phase == "prefill":
            self._set_phase("decode")

