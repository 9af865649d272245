"""The compiled, engine-neutral form of a plan: per layer, neuron indices with a scale and a shift.

Every method is the affine edit ``a ← s·a + b`` of a neuron's activation ``a`` (add: ``s = 1``;
replace and deactivate: ``s = 0``; multiply: ``b`` scaled too), so a whole plan composes, per
neuron, into one ``(scale, shift)`` pair. :func:`compile_plan` does that on the CPU in float64
from a plan (:mod:`lape_harness.steering.plan`) and a neuron set, without any model; an engine
places each :class:`LayerEdit` on the layer's device and dtype (:meth:`LayerEdit.to`) and edits
the layer's activation with :meth:`LayerEdit.apply` (or with its own kernel from ``index``,
``scale`` and ``shift``). The Hugging Face engine is :mod:`lape_harness.steering.hooks`.

Example:
    >>> import torch
    >>> from lape_harness.steering import parse_steer
    >>> from lape_harness.neurons import LanguageNeurons, NeuronSet
    >>> def language(index, mean):
    ...     n = len(index)
    ...     return LanguageNeurons(torch.zeros(n, dtype=torch.long), torch.tensor(index),
    ...                            torch.tensor(mean), torch.zeros(n), torch.zeros(n))
    >>> neurons = NeuronSet(["de", "fr"], 1, 4, {"de": language([0, 1], [1.0, 2.0]),
    ...                                          "fr": language([1, 3], [5.0, 6.0])}, {})
    >>> edit = compile_plan(parse_steer("-de+fr"), neurons, num_layers=1, width=4)[0]
    >>> edit.kind, edit.index.tolist(), edit.scale.tolist(), edit.shift.tolist()
    ('affine', [0, 1, 3], [0.0, 0.0, 1.0], [0.0, 5.0, 6.0])
    >>> edit.apply(torch.ones(1, 4, dtype=torch.float64)).tolist()   # a[..., index] ← scale·a + shift
    [[0.0, 5.0, 1.0, 7.0]]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lape_harness.steering.plan import SteeringPlan, Term

KINDS = ("add", "set", "affine")


@dataclass
class LayerEdit:
    """What a plan does at one layer: ``a[..., index] ← scale·a[..., index] + shift``.

    ``index`` (int64), ``scale`` and ``shift`` (one value per indexed neuron) are plain tensors,
    as compiled (CPU, float64) or placed (the layer's device and dtype, see :meth:`to`).
    ``kind`` tells which exact kernel is cheapest: ``add`` (every scale is 1: only add the
    shift), ``set`` (every scale is 0: write the shift) or ``affine`` (scale, then shift).
    """

    index: torch.Tensor
    scale: torch.Tensor
    shift: torch.Tensor
    kind: str

    def to(self, device: torch.device | str, dtype: torch.dtype) -> LayerEdit:
        """The same edit with its tensors on ``device``, ``scale``/``shift`` in ``dtype``."""
        return LayerEdit(
            self.index.to(device),
            self.scale.to(device=device, dtype=dtype),
            self.shift.to(device=device, dtype=dtype),
            self.kind,
        )

    def apply(self, activation: torch.Tensor) -> torch.Tensor:
        """Edit ``activation`` (shape ``[..., width]``, on this edit's device and dtype) in place
        when autograd allows, and return it: one indexed kernel, no full-width temporaries."""
        if activation.requires_grad:  # keep autograd valid; inference (no_grad) edits in place
            activation = activation.clone()
        return self.apply_(activation)

    def apply_(self, activation: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Edit ``activation`` in place and return it; with ``keep`` (bool, ``activation``'s shape
        without the last dimension), only the positions where ``keep`` is True. The masked form
        works on the edited columns only (gather, edit, select, scatter) and never synchronizes
        with the host.

        >>> edit = LayerEdit(torch.tensor([1]), torch.tensor([0.0]), torch.tensor([9.0]), "set")
        >>> edit.apply_(torch.zeros(1, 2, 3), keep=torch.tensor([[False, True]])).tolist()
        [[[0.0, 0.0, 0.0], [0.0, 9.0, 0.0]]]
        """
        if keep is None:
            if self.kind == "add":
                activation.index_add_(-1, self.index, self.shift.expand(*activation.shape[:-1], -1))
            elif self.kind == "set":
                activation.index_copy_(-1, self.index, self.shift.expand(*activation.shape[:-1], -1))
            else:
                edited = torch.addcmul(self.shift, activation.index_select(-1, self.index), self.scale)
                activation.index_copy_(-1, self.index, edited)
            return activation
        columns = activation.index_select(-1, self.index)
        if self.kind == "add":
            edited = columns + self.shift
        elif self.kind == "set":
            edited = self.shift.expand_as(columns)
        else:
            edited = torch.addcmul(self.shift, columns, self.scale)
        activation.index_copy_(-1, self.index, torch.where(keep.unsqueeze(-1), edited, columns))
        return activation


def compile_plan(plan: SteeringPlan, neurons, num_layers: int, width: int) -> dict[int, LayerEdit]:
    """Compose the plan's terms per neuron into ``{layer: LayerEdit}`` (CPU, float64).

    ``neurons`` is a :class:`~lape_harness.neurons.NeuronSet` (a language missing from it is an
    :class:`~lape_harness.errors.InputError` that lists the file's languages). Layers without
    any of the plan's neurons are absent. Vectorized over neurons: one pass over the terms on
    flat ``layer·width + index`` arrays.
    """
    if not plan:
        return {}
    plan.check_languages(neurons)
    scale = torch.ones(num_layers * width, dtype=torch.float64)
    shift = torch.zeros(num_layers * width, dtype=torch.float64)
    touched = torch.zeros(num_layers * width, dtype=torch.bool)
    for term in plan.terms:
        entry = neurons[term.language]
        flat = entry.layer.long() * width + entry.index.long()
        touched[flat] = True
        if term.op == "deactivate":
            scale[flat] = 0.0
            shift[flat] = term.strength
        elif term.op == "multiply":
            scale[flat] *= term.strength
            shift[flat] *= term.strength
        else:
            value = _term_value(term, entry)
            if term.op == "add":
                shift.index_add_(0, flat, term.strength * value)
            else:
                scale[flat] = 0.0
                shift[flat] = term.strength * value
    edits = {}
    positions = touched.nonzero().squeeze(1)
    layers = positions // width
    for layer in layers.unique().tolist():
        flat = positions[layers == layer]
        layer_scale = scale[flat]
        if bool((layer_scale == 1).all()):
            kind = "add"
        elif bool((layer_scale == 0).all()):
            kind = "set"
        else:
            kind = "affine"
        edits[int(layer)] = LayerEdit(flat - layer * width, layer_scale, shift[flat], kind)
    return edits


def _term_value(term: Term, entry) -> torch.Tensor:
    if term.value == "mean":
        return entry.mean.double()
    if term.value == "diff":
        return entry.mean.double() - entry.others_mean.double()
    return entry.probability.double()
