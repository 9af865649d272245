"""The steering operations one neuron at a time: the reference the compiled plans, the hooks, the
``hf-steered`` and ``vllm-steered`` models, baking, the sweep and the fallback study are checked against.

The operations are those of Gurgurov et al. 2025, "Language Arithmetics: Towards Systematic
Language Neuron Identification and Manipulation" (arXiv 2507.22608), as docs/steering.md states
them for an activation ``a`` of a language L's neuron: deactivate ``a ← c`` (``c`` = 0 unless a fill
is given), multiply ``a ← β·a``, add ``a ← a + α·v_L`` and replace ``a ← α·v_L``, with ``v_L`` the
neuron's mean ``μ_L``, its ``diff`` ``μ_L − μ̄_¬L`` or its activation probability ``p_L``. Every step
is applied to every neuron of its language in turn, in the order given; ``CASES`` lists, for each
spec, the steps in the paper's execution order (all deactivations, then multiplications, then
additions and replacements in the order written). The edited activation is the output of each
layer's MLP activation module, at every position unless ``positions`` says otherwise.

Two references score and generate with a plain transformers Llama whose deactivated neurons are
set by a forward hook written here: :func:`rolling_loglikelihood_deactivated` (lm-eval's rolling
log-likelihood: the tokenizer's own encoding after one BOS prefix token) and
:func:`greedy_answer_deactivated`; :func:`greedy_without_cache` is generation recomputed from
scratch at every step (no KV cache).

Example:
    >>> import torch
    >>> from builders import random_neuron_set
    >>> neurons = random_neuron_set(num_layers=1, width=8, languages=["de"], per_layer=2)
    >>> edited = reference_edit(torch.ones(8), 0, [("multiply", "de", 3.0, "mean")], neurons)
    >>> sorted(edited.tolist())
    [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 3.0, 3.0]
"""

from __future__ import annotations

import torch

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


def reference_edit(a: torch.Tensor, layer: int, steps: list[tuple], neurons) -> torch.Tensor:
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
    """Replace every layer's activation module by a :class:`ReferenceActivation`; returns an undo.
    ``positions(n)`` gives the positions to edit of an ``n``-token forward pass ([T] or [B, T])."""
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


def greedy_without_cache(model, ids, steps_count):
    """Greedy generation of ``steps_count`` tokens, each from a full forward over everything so far."""
    for _ in range(steps_count):
        with torch.no_grad():
            next_token = model(ids).logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, next_token], dim=1)
    return ids


def _deactivate(model, index_of_layer, fill: float) -> list:
    """Forward hooks on a Llama's ``mlp.act_fn`` setting ``index_of_layer(layer)`` to ``fill``; their handles."""
    handles = []
    for layer, decoder_layer in enumerate(model.model.layers):
        index = index_of_layer(layer)
        if index is not None and len(index):
            def hook(module, inputs, output, index=index):
                output = output.clone()
                output[..., index] = fill
                return output
            handles.append(decoder_layer.mlp.act_fn.register_forward_hook(hook))
    return handles


def rolling_loglikelihood_deactivated(model_path, text: str, plan: str, neurons_path) -> float:
    """lm-eval's rolling log-likelihood of ``text`` (one window) under ``plan`` "none" or "-L":
    the sum of token log-probs of the tokenizer's own encoding (with its BOS) after one BOS prefix
    token, with L's neurons set to 0 by hand."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lape_harness.neurons import NeuronSet

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path).eval()
    handles = []
    if plan != "none":
        entry = NeuronSet.load(neurons_path)[plan.lstrip("-")]
        handles = _deactivate(model, lambda layer: entry.index[entry.layer == layer], 0.0)
    ids = [tokenizer.bos_token_id] + tokenizer(text)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double().log_softmax(-1)
    for handle in handles:
        handle.remove()
    return float(sum(logits[i, ids[i + 1]] for i in range(len(ids) - 1)))


def greedy_answer_deactivated(model, tokenizer, prompt: str, off: list[str], neuron_set, fill: float, max_new: int,
                              stop: list[str]) -> str:
    """Plain transformers greedy generation with the neurons of the languages ``off`` set to
    ``fill``, cut at the first of ``stop`` and stripped."""

    def index_of_layer(layer):
        return torch.cat([neuron_set[c].index[neuron_set[c].layer == layer] for c in off]) if off else None

    handles = _deactivate(model, index_of_layer, fill)
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
    for handle in handles:
        handle.remove()
    text = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    for word in stop:
        text = text.split(word)[0]
    return text.strip()
