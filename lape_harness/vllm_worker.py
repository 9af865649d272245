"""Steering inside vLLM's worker processes: every MLP neuron gets a persistent scale and shift.

vLLM fuses gated MLPs: ``gate_up_proj`` computes ``[g, u]`` and one act-and-mul op returns
``act(g)·u``, so the activation ``a = act(g)`` that a plan edits never exists as a tensor. Every
plan term is the affine edit ``a ← s·a + b`` (:mod:`lape_harness.steering.compiled`), and

    (s·act(g) + b)·u = s·(act(g)·u) + b·u,

so :class:`SteeredActAndMul` wraps the act-and-mul op and computes ``s·out + b·u`` with two
vectors over this rank's tensor-parallel shard of the layer's neurons (``s = 1, b = 0``: the
plain model). Non-gated MLPs (``act(h)`` then a down projection) get :class:`SteeredActivation`:
``s·act(h) + b``.

The wrappers are installed while vLLM loads the model (:func:`install_on_load`, run when vLLM
imports this module as the engine's ``worker_extension_cls``), before vLLM compiles the model
or captures graphs: the compiled model reads the two vectors as buffers, and switching plans
writes into them in place (:meth:`SteeringWorkerExtension.lape_write_plan`) with no reload and
no recompilation. ``lape_harness.vllm_model`` drives this from the lm-eval process through
``collective_rpc``.

Example (inside a worker; the lm-eval side calls these through ``llm.collective_rpc``):
    >>> llm.collective_rpc("lape_layout")                    # doctest: +SKIP
    [{'layers': 18, 'width': 2048, 'offset': 0, 'rank': 0}]
    >>> llm.collective_rpc("lape_write_plan", args=(edits,))  # doctest: +SKIP
    [412]
"""

from __future__ import annotations

import re

import torch
from torch import nn

#: act-and-mul ops whose output is ``act(first half)·(second half)``.
ACT_THEN_UP = ("SiluAndMul", "GeluAndMul", "GeluAndMulSparse", "SiluAndMulWithClamp", "FatreluAndMul",
               "NewGELUAndMul", "QuickGELUAndMul", "ReLUSquaredAndMul", "GELUTanhAndMul")
#: act-and-mul ops whose output is ``(first half)·act(second half)``.
UP_THEN_ACT = ("MulAndSilu",)
#: one MLP per decoder layer: ``...layers.<n>.mlp`` (vision or audio towers are not steered).
_DECODER_MLP = re.compile(r"(^|\.)layers\.(\d+)\.(mlp|feed_forward)$")
_OTHER_TOWERS = re.compile(r"vision|visual|audio|image|speech")


class SteeredActAndMul(nn.Module):
    """``act_and_mul(x)`` with this rank's neurons edited: ``scale·act(g)·u + shift·u``."""

    def __init__(self, act_and_mul: nn.Module, width: int, up_first: bool, dtype: torch.dtype, device) -> None:
        super().__init__()
        self.act_and_mul, self.width, self.up_first = act_and_mul, width, up_first
        self.register_buffer("lape_scale", torch.ones(width, dtype=dtype, device=device), persistent=False)
        self.register_buffer("lape_shift", torch.zeros(width, dtype=dtype, device=device), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = x[..., : self.width] if self.up_first else x[..., self.width :]
        return torch.addcmul(self.act_and_mul(x) * self.lape_scale, up, self.lape_shift)


class SteeredActivation(nn.Module):
    """``act(h)`` of a non-gated MLP with this rank's neurons edited: ``scale·act(h) + shift``."""

    def __init__(self, activation: nn.Module, width: int, dtype: torch.dtype, device) -> None:
        super().__init__()
        self.activation, self.width = activation, width
        self.register_buffer("lape_scale", torch.ones(width, dtype=dtype, device=device), persistent=False)
        self.register_buffer("lape_shift", torch.zeros(width, dtype=dtype, device=device), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.lape_shift, self.activation(x), self.lape_scale)


STEERED = (SteeredActAndMul, SteeredActivation)


def decoder_mlps(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``[(name, mlp), ...]`` of the decoder layers in layer order."""
    found = []
    for name, module in model.named_modules():
        match = _DECODER_MLP.search(name)
        if match and not _OTHER_TOWERS.search(name):
            found.append((int(match.group(2)), name, module))
    return [(name, module) for _layer, name, module in sorted(found, key=lambda item: item[0])]


def install(model: nn.Module, dtype: torch.dtype) -> int:
    """Wrap every decoder layer's activation; returns how many layers can be steered.

    A layer whose MLP has no form this module knows is left alone (the lm-eval side then
    refuses the model with the reason, see :func:`layout`).
    """
    steered = 0
    for _name, mlp in decoder_mlps(model):
        if isinstance(getattr(mlp, "act_fn", None), STEERED) or isinstance(getattr(mlp, "act", None), STEERED):
            steered += 1
            continue
        down = getattr(mlp, "down_proj", None) or getattr(mlp, "c_proj", None) or getattr(mlp, "fc2", None)
        width = getattr(down, "input_size_per_partition", None)  # not the weight's shape: CPU builds repack it
        if width is None:
            continue
        device = next(down.parameters()).device
        act_fn = getattr(mlp, "act_fn", None)
        kind = type(act_fn).__name__
        if hasattr(mlp, "gate_up_proj") and kind in ACT_THEN_UP + UP_THEN_ACT:
            mlp.act_fn = SteeredActAndMul(act_fn, width, kind in UP_THEN_ACT, dtype, device)
        elif not hasattr(mlp, "gate_up_proj") and isinstance(getattr(mlp, "act", None), nn.Module):
            mlp.act = SteeredActivation(mlp.act, width, dtype, device)
        else:
            continue
        steered += 1
    return steered


def steered_modules(model: nn.Module) -> list[nn.Module]:
    """The wrappers of :func:`install`, in layer order."""
    modules = []
    for _name, mlp in decoder_mlps(model):
        wrapper = getattr(mlp, "act_fn", None)
        wrapper = wrapper if isinstance(wrapper, STEERED) else getattr(mlp, "act", None)
        if isinstance(wrapper, STEERED):
            modules.append(wrapper)
    return modules


def layout(model: nn.Module) -> dict:
    """What this rank can steer: decoder layers, steered layers, the shard's width and offset,
    and the MLP forms seen (for the lm-eval side's checks and error messages)."""
    mlps = decoder_mlps(model)
    modules = steered_modules(model)
    rank = _rank()
    width = modules[0].width if modules else 0
    forms = sorted({f"{type(mlp).__name__}({type(getattr(mlp, 'act_fn', getattr(mlp, 'act', None))).__name__})"
                    for _name, mlp in mlps})
    return {"layers": len(mlps), "steered": len(modules), "width": width, "offset": rank * width, "rank": rank,
            "forms": forms}


def write_plan(model: nn.Module, edits: dict[int, tuple[list[int], list[float], list[float]]]) -> int:
    """Write a compiled plan into this rank's vectors: ``edits`` maps a layer to the full layer's
    neuron indices with their scale and shift; this rank keeps the indices of its shard. Every
    other neuron returns to ``scale 1, shift 0``. Returns how many neurons this rank edits."""
    modules = steered_modules(model)
    written = 0
    for layer, module in enumerate(modules):
        module.lape_scale.fill_(1.0)
        module.lape_shift.zero_()
        if layer not in edits:
            continue
        index, scale, shift = (torch.tensor(values, dtype=torch.float64) for values in edits[layer])
        offset = module.width * _rank()
        mine = (index >= offset) & (index < offset + module.width)
        local = (index[mine] - offset).long().to(module.lape_scale.device)
        module.lape_scale[local] = scale[mine].to(module.lape_scale.device, module.lape_scale.dtype)
        module.lape_shift[local] = shift[mine].to(module.lape_shift.device, module.lape_shift.dtype)
        written += int(mine.sum())
    return written


def _rank() -> int:
    from vllm.distributed import get_tensor_model_parallel_rank

    return get_tensor_model_parallel_rank()


class SteeringWorkerExtension:
    """Mixed into vLLM's worker (``worker_extension_cls``): the calls the lm-eval side makes
    through ``collective_rpc``. Names start with ``lape_`` so they never clash with vLLM's."""

    def lape_layout(self) -> dict:
        return layout(self.model_runner.model)

    def lape_write_plan(self, edits: dict) -> int:
        return write_plan(self.model_runner.model, {int(layer): edit for layer, edit in edits.items()})


def install_on_load() -> None:
    """Make vLLM's model loader install the wrappers on every model it loads in this process,
    before the model is compiled (idempotent)."""
    from vllm.model_executor.model_loader.base_loader import BaseModelLoader

    if getattr(BaseModelLoader.load_model, "lape_steering", False):
        return
    load_model = BaseModelLoader.load_model

    def load_and_install(self, vllm_config, model_config, *args, **kwargs):
        model = load_model(self, vllm_config, model_config, *args, **kwargs)
        install(model, model_config.dtype)
        return model

    load_and_install.lape_steering = True
    BaseModelLoader.load_model = load_and_install


install_on_load()
