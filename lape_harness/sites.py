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
    """Module paths for one architecture: the decoder layer list (from the top-level
    model), and, relative to a layer, the activation module and the down projection."""

    layers: str
    activation: str
    down_proj: str
    gated: bool


_GATED_LLAMA_LIKE = SiteSpec("model.layers", "mlp.act_fn", "mlp.down_proj", gated=True)

# One table: model_type -> where its neurons are.
SITE_TABLE: dict[str, SiteSpec] = {
    **{
        name: _GATED_LLAMA_LIKE
        for name in (
            "llama", "mistral", "mixtral_dense", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text",
            "cohere", "cohere2", "olmo", "olmo2", "granite", "smollm3", "ministral", "exaone4", "glm",
            "helium", "stablelm",
        )
    },
    "phi3": SiteSpec("model.layers", "mlp.activation_fn", "mlp.down_proj", gated=True),
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
    if spec is None:
        raise UnsupportedArchitectureError(
            f"lape-harness does not know where the MLP neurons of model_type {kind!r} are; "
            f"supported: {', '.join(sorted(SITE_TABLE))}. Add an entry to lape_harness.sites.SITE_TABLE "
            "(decoder layer list, activation module, down projection)."
        )
    return spec


def find_sites(model: nn.Module) -> list[NeuronSite]:
    """Every decoder layer's neuron site, in layer order."""
    inner = unwrap(model)
    spec = site_spec(inner)
    try:
        layers = inner.get_submodule(spec.layers)
    except AttributeError as error:
        raise UnsupportedArchitectureError(
            f"model_type {model_type(inner)!r}: expected its decoder layers at {spec.layers!r} ({error})"
        ) from None
    sites = []
    for index, layer in enumerate(layers):
        activation = layer.get_submodule(spec.activation)
        down_proj = layer.get_submodule(spec.down_proj)
        sites.append(
            NeuronSite(
                layer=index,
                name=f"{spec.layers}.{index}.{spec.activation}",
                activation=activation,
                down_proj=down_proj,
                width=down_projection_width(down_proj),
            )
        )
    if not sites:
        raise UnsupportedArchitectureError(
            f"model_type {model_type(inner)!r} has no decoder layers at {spec.layers!r}; correct its entry in "
            "lape_harness.sites.SITE_TABLE"
        )
    return sites


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
