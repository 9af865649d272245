"""Where a "neuron" lives: the per-layer module whose output is the MLP neuron activation.

Gated MLPs (Llama, Mistral, Qwen, Gemma, Cohere/Aya, Phi-3, ...) compute
``down_proj(act_fn(gate_proj(x)) * up_proj(x))``; the neuron activation is the ``act_fn``
output, before it is multiplied by ``up_proj``. Non-gated MLPs (GPT-2, GPT-NeoX, OPT,
BLOOM, ...) compute ``fc_out(act(fc_in(x)))``; the neuron activation is the ``act`` output.
Neuron ``j`` of a layer is column ``j`` of that layer's down projection input.

Example:
    >>> sites = find_sites(model)                      # doctest: +SKIP
    >>> sites[0].name, sites[0].width                  # doctest: +SKIP
    ('model.layers.0.mlp.act_fn', 14336)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lape_harness.errors import InputError


@dataclass(frozen=True)
class SiteSpec:
    """Module paths for one architecture: the decoder layer list (from the top-level model; the
    first of several alternatives that exists), and, relative to a layer, the activation module
    and the down projection."""

    layers: str | tuple[str, ...]
    activation: str
    down_proj: str
    gated: bool

    @property
    def layer_paths(self) -> tuple[str, ...]:
        return (self.layers,) if isinstance(self.layers, str) else self.layers


_GATED_LLAMA_LIKE = SiteSpec("model.layers", "mlp.act_fn", "mlp.down_proj", gated=True)
# Fused gate and up projection (``gate_up_proj``), activation module ``activation_fn``: Phi-3, GLM, GLM-4.
_GATED_FUSED = SiteSpec("model.layers", "mlp.activation_fn", "mlp.down_proj", gated=True)
# Multimodal checkpoints whose text decoder is Llama-like (Gemma-3 4B/12B/27B, Mistral-Small-3.1/3.2):
# transformers ≥ 4.52 nests it as model.language_model, 4.50-4.51 as language_model.model.
_GATED_MULTIMODAL = SiteSpec(
    ("model.language_model.layers", "language_model.model.layers", "language_model.layers"),
    "mlp.act_fn", "mlp.down_proj", gated=True,
)

# One table: model_type -> where its neurons are. tests/test_sites.py builds a tiny random model of
# every entry and checks its sites, so an entry cannot land untested.
SITE_TABLE: dict[str, SiteSpec] = {
    **{
        name: _GATED_LLAMA_LIKE
        for name in (
            "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "cohere", "cohere2", "olmo",
            "olmo2", "olmo3", "granite", "smollm3", "ministral", "exaone4", "helium", "stablelm",
        )
    },
    **{name: _GATED_FUSED for name in ("phi3", "glm", "glm4")},
    **{name: _GATED_MULTIMODAL for name in ("gemma3", "mistral3")},
    "phi": SiteSpec("model.layers", "mlp.activation_fn", "mlp.fc2", gated=False),
    "gpt2": SiteSpec("transformer.h", "mlp.act", "mlp.c_proj", gated=False),
    "gpt_bigcode": SiteSpec("transformer.h", "mlp.act", "mlp.c_proj", gated=False),
    "gptj": SiteSpec("transformer.h", "mlp.act", "mlp.fc_out", gated=False),
    "gpt_neox": SiteSpec("gpt_neox.layers", "mlp.act", "mlp.dense_4h_to_h", gated=False),
    "falcon": SiteSpec("transformer.h", "mlp.act", "mlp.dense_4h_to_h", gated=False),
    "bloom": SiteSpec("transformer.h", "mlp.gelu_impl", "mlp.dense_4h_to_h", gated=False),
    "opt": SiteSpec("model.decoder.layers", "activation_fn", "fc2", gated=False),
    "starcoder2": SiteSpec("model.layers", "mlp.act", "mlp.c_proj", gated=False),
}

# Config attributes that only mixture-of-experts models have (Mixtral, Qwen-MoE, OLMoE, DeepSeek, ...).
_EXPERT_ATTRIBUTES = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts", "num_experts_per_tok")


class UnsupportedArchitectureError(InputError):
    """The model's ``model_type`` has no entry in :data:`SITE_TABLE`."""


@dataclass(frozen=True)
class NeuronSite:
    """One layer's neuron activation module: hook its output (shape ``[..., width]``)."""

    layer: int
    name: str
    activation: nn.Module
    down_proj: nn.Module
    width: int

    @property
    def device(self) -> torch.device:
        return _first_parameter(self.down_proj).device

    @property
    def dtype(self) -> torch.dtype:
        return _first_parameter(self.down_proj).dtype

    @property
    def execution_device(self) -> torch.device:
        """Where this layer computes (see :func:`execution_device`)."""
        return execution_device(self.down_proj)


def execution_device(module: nn.Module) -> torch.device:
    """Where ``module`` computes: its weights' device, except for a module that accelerate offloads
    (``device_map`` with CPU or disk offload, ``cpu_offload``), whose weights wait on ``meta`` while
    accelerate's hook brings them to its ``execution_device`` for each forward pass. A ``meta``
    module without such a hook stays ``meta``.

    >>> execution_device(nn.Linear(2, 2))
    device(type='cpu')
    """
    device = _first_parameter(module).device
    if device.type != "meta":
        return device
    hook = getattr(module, "_hf_hook", None)
    for candidate in getattr(hook, "hooks", None) or [hook]:  # accelerate's SequentialHook holds several
        target = getattr(candidate, "execution_device", None)
        if target is not None and str(target) != "meta":
            return torch.device(target)
    return device


def unwrap(model: nn.Module) -> nn.Module:
    """The transformers model inside wrappers (PEFT, DDP/accelerate, ``torch.compile``)."""
    while True:
        if hasattr(model, "get_base_model") and callable(model.get_base_model):
            inner = model.get_base_model()
        elif hasattr(model, "_orig_mod"):
            inner = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            inner = model.module
        else:
            return model
        if inner is model:
            return model
        model = inner


def model_type(model: nn.Module) -> str:
    config = getattr(unwrap(model), "config", None)
    return str(getattr(config, "model_type", type(model).__name__))


def site_spec(model: nn.Module) -> SiteSpec:
    """The :class:`SiteSpec` for ``model``, or a clear :class:`UnsupportedArchitectureError`."""
    kind = model_type(model)
    spec = SITE_TABLE.get(kind)
    if spec is None and _is_mixture_of_experts(model):
        raise UnsupportedArchitectureError(
            f"model_type {kind!r} is a mixture-of-experts model: its MLP neurons belong to experts that each see "
            "only the tokens routed to them, so LAPE's per-neuron statistics over all tokens (and steering every "
            "token's neurons) do not apply; lape-harness supports dense models (see docs/profile.md, 'Models')"
        )
    if spec is None:
        raise UnsupportedArchitectureError(
            f"lape-harness does not know where the MLP neurons of model_type {kind!r} are; "
            f"supported: {', '.join(sorted(SITE_TABLE))}. Add an entry to lape_harness.sites.SITE_TABLE "
            "(decoder layer list, activation module, down projection)."
        )
    return spec


def _is_mixture_of_experts(model: nn.Module) -> bool:
    config = getattr(unwrap(model), "config", None)
    configs = [config, getattr(config, "text_config", None)]
    return any(getattr(c, name, None) for c in configs if c is not None for name in _EXPERT_ATTRIBUTES)


def find_sites(model: nn.Module) -> list[NeuronSite]:
    """Every decoder layer's neuron site, in layer order."""
    inner = unwrap(model)
    spec = site_spec(inner)
    layers, path = decoder_layers(inner)
    sites = []
    for index, layer in enumerate(layers):
        try:
            activation = layer.get_submodule(spec.activation)
            down_proj = layer.get_submodule(spec.down_proj)
        except AttributeError as error:
            raise UnsupportedArchitectureError(
                f"model_type {model_type(inner)!r}: layer {index} has no {spec.activation!r} / {spec.down_proj!r} "
                f"({error}); this transformers version builds its MLP differently: correct its entry in "
                "lape_harness.sites.SITE_TABLE"
            ) from None
        sites.append(
            NeuronSite(
                layer=index,
                name=f"{path}.{index}.{spec.activation}",
                activation=activation,
                down_proj=down_proj,
                width=down_projection_width(down_proj),
            )
        )
    if not sites:
        raise UnsupportedArchitectureError(
            f"model_type {model_type(inner)!r} has no decoder layers at {path!r}; correct its entry in "
            "lape_harness.sites.SITE_TABLE"
        )
    return sites


def decoder_layers(model: nn.Module) -> tuple[nn.Module, str]:
    """The decoder layer list of ``model`` and its path (e.g. ``model.layers``)."""
    inner = unwrap(model)
    spec = site_spec(inner)
    for path in spec.layer_paths:
        try:
            return inner.get_submodule(path), path
        except AttributeError:
            continue
    raise UnsupportedArchitectureError(
        f"model_type {model_type(inner)!r}: expected its decoder layers at {' or '.join(map(repr, spec.layer_paths))}"
        "; correct its entry in lape_harness.sites.SITE_TABLE"
    )


# Names of the norm after the last decoder layer, beside the layer list (Llama-like: norm, GPT-2/BLOOM/Falcon:
# ln_f, OPT/GPT-NeoX: final_layer_norm, Phi: final_layernorm).
_FINAL_NORM_NAMES = ("norm", "ln_f", "final_layer_norm", "final_layernorm", "final_norm")


def final_norm(model: nn.Module) -> nn.Module:
    """The normalization the model applies to the last decoder layer's output before its LM head:
    the module beside the decoder layer list named like one of :data:`_FINAL_NORM_NAMES`."""
    inner = unwrap(model)
    _layers, path = decoder_layers(inner)
    body = inner.get_submodule(path.rpartition(".")[0]) if "." in path else inner
    for name in _FINAL_NORM_NAMES:
        module = getattr(body, name, None)
        if isinstance(module, nn.Module):
            return module
    raise UnsupportedArchitectureError(
        f"model_type {model_type(inner)!r}: no final norm ({', '.join(_FINAL_NORM_NAMES)}) beside {path!r}; add its "
        "name to lape_harness.sites._FINAL_NORM_NAMES"
    )


@dataclass(frozen=True)
class NeuronSlice:
    """The entries of one weight or bias that belong to a layer's neurons: along ``dim`` of
    ``module.<name>``, neuron ``j`` owns positions ``j + k·width`` (``k`` < ``copies``; a fused
    gate-and-up projection holds 2 copies)."""

    module: nn.Module
    name: str
    dim: int
    copies: int


def neuron_slices(model: nn.Module, layer: int) -> list[NeuronSlice]:
    """Every weight entry that belongs to layer ``layer``'s neurons: the rows of the projections that
    compute them (gated: gate and up, fused or not; non-gated: the input projection, with its bias)
    and the down projection's input columns (its bias belongs to no neuron). The input projections
    are the linear modules beside the down projection whose outputs are as wide as the MLP (or twice).

    >>> [(s.name, s.dim) for s in neuron_slices(model, 0)]    # doctest: +SKIP
    [('weight', 0), ('weight', 0), ('weight', 1)]
    """
    site = find_sites(model)[layer]
    inner = unwrap(model)
    spec = site_spec(inner)
    layer_module = decoder_layers(inner)[0][layer]
    container_path = spec.down_proj.rpartition(".")[0]
    container = layer_module.get_submodule(container_path) if container_path else layer_module
    slices = []
    for child in container.children():
        if child is site.down_proj:
            continue
        weight = getattr(child, "weight", None)
        conv1d = type(child).__name__ == "Conv1D"
        if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or not (isinstance(child, nn.Linear) or conv1d):
            continue
        dim = 1 if conv1d else 0  # the output features: Linear [out, in], Conv1D [in, out]
        copies, remainder = divmod(weight.shape[dim], site.width)
        if remainder or copies not in (1, 2):
            continue
        slices.append(NeuronSlice(child, "weight", dim, copies))
        if isinstance(getattr(child, "bias", None), torch.Tensor):
            slices.append(NeuronSlice(child, "bias", 0, copies))
    found = sum(entry.copies for entry in slices if entry.name == "weight")
    if found != (2 if spec.gated else 1):
        raise UnsupportedArchitectureError(
            f"model_type {model_type(inner)!r}: expected the {'gate and up projections' if spec.gated else 'input projection'} "
            f"of layer {layer}'s MLP beside {spec.down_proj!r} (linear modules {site.width} wide), found {found}; "
            "this MLP is built differently: lape-harness cannot tell which weights belong to a neuron"
        )
    conv1d = type(site.down_proj).__name__ == "Conv1D"
    slices.append(NeuronSlice(site.down_proj, "weight", 0 if conv1d else 1, 1))  # its inputs: Linear dim 1
    return slices


def down_projection_width(down_proj: nn.Module) -> int:
    """Number of input features (= neurons) of a down projection (``nn.Linear`` or GPT-2's ``Conv1D``)."""
    if isinstance(down_proj, nn.Linear):
        return down_proj.in_features
    weight = getattr(down_proj, "weight", None)
    if weight is not None and type(down_proj).__name__ == "Conv1D":
        return int(weight.shape[0])
    if hasattr(down_proj, "in_features"):
        return int(down_proj.in_features)
    raise UnsupportedArchitectureError(
        f"cannot read the input width of down projection {type(down_proj).__name__}; lape-harness reads "
        "nn.Linear, transformers' Conv1D and modules with an in_features attribute: load the model with one of those"
    )


def _first_parameter(module: nn.Module) -> torch.Tensor:
    for parameter in module.parameters():
        return parameter
    raise UnsupportedArchitectureError(
        f"down projection {type(module).__name__} has no parameters, so lape-harness cannot tell its device and "
        "dtype; load the model with plain transformers modules (weights held by the down projection)"
    )
