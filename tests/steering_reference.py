"""Shared by the steering tests: random neuron sets and the paper's operations one neuron at a time.

``make_neuron_set`` builds overlapping random neuron sets; ``reference_edit`` is the plain
per-neuron reference every compiled plan is checked against; ``patch_reference`` swaps a model's
activation modules for that reference (to compare whole-model outputs with the hooks').
"""

from __future__ import annotations

import torch

from lape_harness.neurons import LanguageNeurons, NeuronSet

LANGUAGES = ["de", "fr", "en", "es"]


def make_neuron_set(num_layers: int, width: int, languages=LANGUAGES, per_layer: int = 12, seed: int = 0,
                    skip_layer: int | None = None) -> NeuronSet:
    """Random neurons per language; languages share some neurons; ``skip_layer`` has none."""
    generator = torch.Generator().manual_seed(seed)
    pool = torch.randperm(width, generator=generator)[: per_layer * 2]  # a small pool, so sets overlap
    neurons = {}
    for language in languages:
        layers, indices = [], []
        for layer in range(num_layers):
            if layer == skip_layer:
                continue
            chosen = pool[torch.randperm(len(pool), generator=generator)[:per_layer]].sort().values
            layers.append(torch.full((per_layer,), layer, dtype=torch.long))
            indices.append(chosen)
        count = sum(len(x) for x in layers)
        neurons[language] = LanguageNeurons(
            layer=torch.cat(layers),
            index=torch.cat(indices),
            mean=torch.randn(count, generator=generator),
            others_mean=torch.randn(count, generator=generator),
            probability=torch.rand(count, generator=generator),
        )
    return NeuronSet(list(languages), num_layers, width, neurons, {"model": {"model_id": "tiny"}})


def reference_edit(a: torch.Tensor, layer: int, steps: list[tuple], neurons: NeuronSet) -> torch.Tensor:
    """The paper's operations one neuron at a time, in the order given: (op, language, strength, value)."""
    a = a.clone()
    for op, language, strength, value in steps:
        entry = neurons[language]
        for l, j, mu, others, p in zip(entry.layer.tolist(), entry.index.tolist(), entry.mean.tolist(),
                                       entry.others_mean.tolist(), entry.probability.tolist()):
            if l != layer:
                continue
            v = {"mean": mu, "diff": mu - others, "p": p}[value]
            if op == "deactivate":
                a[..., j] = strength
            elif op == "multiply":
                a[..., j] = a[..., j] * strength
            elif op == "add":
                a[..., j] = a[..., j] + strength * v
            else:
                a[..., j] = strength * v
    return a


class ReferenceActivation(torch.nn.Module):
    """Wraps an activation module and edits its output by :func:`reference_edit` at chosen positions."""

    def __init__(self, inner, layer, steps, neurons, positions=None):
        super().__init__()
        self.inner, self.layer, self.steps, self.neurons, self.positions = inner, layer, steps, neurons, positions

    def forward(self, x):
        a = self.inner(x)
        edited = reference_edit(a, self.layer, self.steps, self.neurons)
        if self.positions is None:
            return edited
        keep = self.positions(a.shape[-2])
        keep = keep.view(1, -1, 1) if keep.dim() == 1 else keep.unsqueeze(-1)  # [T] or [B, T]
        return torch.where(keep, edited, a)


def patch_reference(model, steps, neurons, positions=None):
    """Replace every layer's activation module by a :class:`ReferenceActivation`; returns an undo."""
    from lape_harness.sites import find_sites

    patched = []
    for site in find_sites(model):
        parent_name, _, attribute = site.name.rpartition(".")
        parent = model.get_submodule(parent_name)
        patched.append((parent, attribute, site.activation))
        setattr(parent, attribute, ReferenceActivation(site.activation, site.layer, steps, neurons, positions))

    def undo():
        for parent, attribute, original in patched:
            setattr(parent, attribute, original)

    return undo


def unedited_tokens(model, tokens):
    """``positions`` for :func:`patch_reference` that leave the input positions holding ``tokens``
    unedited (a [B, T] mask from each forward pass's input ids; decode steps, one token long, are
    edited everywhere). Returns ``(positions, remove)``."""
    current = {}

    def remember(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        current["keep"] = torch.ones_like(ids, dtype=torch.bool) if ids.shape[-1] == 1 else ~torch.isin(
            ids, torch.tensor(list(tokens)))

    handle = model.register_forward_pre_hook(remember, with_kwargs=True)

    def positions(n):
        keep = current["keep"]
        assert keep.shape[-1] == n
        return keep

    return positions, handle.remove


# (spec, the same plan as reference steps in execution order: (op, language, strength, value))
CASES = [
    ("+de", [("add", "de", 1.0, "mean")]),
    ("+2*de", [("add", "de", 2.0, "mean")]),
    ("=de", [("replace", "de", 1.0, "mean")]),
    ("+1.5*de.diff", [("add", "de", 1.5, "diff")]),
    ("+de.p", [("add", "de", 1.0, "p")]),
    ("*0.5*de", [("multiply", "de", 0.5, "mean")]),
    ("-de", [("deactivate", "de", 0.0, "mean")]),
    ("-de=-1.5", [("deactivate", "de", -1.5, "mean")]),
    ("-de+fr", [("deactivate", "de", 0.0, "mean"), ("add", "fr", 1.0, "mean")]),
    ("+fr-de", [("deactivate", "de", 0.0, "mean"), ("add", "fr", 1.0, "mean")]),
    ("-en-fr-es", [("deactivate", x, 0.0, "mean") for x in ("en", "fr", "es")]),
    ("+de=fr*3*es-en=-2.5", [("deactivate", "en", -2.5, "mean"), ("multiply", "es", 3.0, "mean"),
                             ("add", "de", 1.0, "mean"), ("replace", "fr", 1.0, "mean")]),
]
