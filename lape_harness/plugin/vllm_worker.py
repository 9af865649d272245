"""Steering inside vLLM's worker processes: every MLP neuron gets a persistent scale and shift.

vLLM fuses gated MLPs: ``gate_up_proj`` computes ``[g, u]`` and one act-and-mul op returns
``act(g)·u``, so the activation ``a = act(g)`` that a plan edits never exists as a tensor. Every
plan term is the affine edit ``a ← s·a + b`` (:mod:`lape_harness.steering.compiled`), and

    (s·act(g) + b)·u = s·(act(g)·u) + b·u,

so :class:`SteeredActAndMul` wraps the act-and-mul op and computes ``s·out + b·u`` with ``s``
and ``b`` over this rank's tensor-parallel shard of the layer's neurons (``s = 1, b = 0``: the
plain model). Non-gated MLPs (``act(h)`` then a down projection) get :class:`SteeredActivation`:
``s·act(h) + b``.

Plan slots: each wrapper holds a small table of plans, ``scale`` and ``shift`` of shape
``[slots, width]`` (slot 0: the engine's current plan), and every token picks its row through one
per-token slot index shared by all layers, so one forward pass can run requests under different
plans. A request names its slot in ``SamplingParams.extra_args["lape_plan_slot"]`` (none: slot
0); :class:`~lape_harness.plugin.vllm_slots.SlotRouter` fills the index before each forward pass from the scheduler's output, in
the model runner's token order.

The wrappers are installed while vLLM loads the model (:func:`install_on_load`, run when vLLM
imports this module as the engine's ``worker_extension_cls``), before vLLM compiles the model
or captures graphs: the compiled model reads the tables and the slot index as buffers at fixed
addresses, and switching plans writes into them in place
(:meth:`SteeringWorkerExtension.lape_write_plan`) with no reload and no recompilation. The number
of slots is read at load time from the engine's ``additional_config["lape_plan_slots"]``
(default 1). ``lape_harness.plugin.vllm_steered`` drives this from the lm-eval process through
``collective_rpc``.

Example (inside a worker; the lm-eval side calls these through ``llm.collective_rpc``):
    >>> llm.collective_rpc("lape_layout")                       # doctest: +SKIP
    [{'layers': 18, 'width': 2048, 'offset': 0, 'rank': 0, 'slots': 16, ...}]
    >>> llm.collective_rpc("lape_route_slots")                  # doctest: +SKIP
    [16]
    >>> llm.collective_rpc("lape_write_plan", args=(edits, 3))  # slot 3  # doctest: +SKIP
    [412]
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from lape_harness.plugin.vllm_slots import route_slots

#: act-and-mul ops whose output is ``act(first half)·(second half)``.
ACT_THEN_UP = ("SiluAndMul", "GeluAndMul", "GeluAndMulSparse", "SiluAndMulWithClamp", "FatreluAndMul",
               "NewGELUAndMul", "QuickGELUAndMul", "ReLUSquaredAndMul", "GELUTanhAndMul")
#: act-and-mul ops whose output is ``(first half)·act(second half)``.
UP_THEN_ACT = ("MulAndSilu",)
#: the engine's ``additional_config`` key giving the number of plan slots per layer (or "auto").
SLOTS_CONFIG = "lape_plan_slots"
#: ``plan_slots=auto``: table memory per rank, and the most slots it gives.
AUTO_SLOT_BYTES = 256 * 2**20
MAX_AUTO_SLOTS = 512
#: one MLP per decoder layer: ``...layers.<n>.mlp`` (vision or audio towers are not steered).
_DECODER_MLP = re.compile(r"(^|\.)layers\.(\d+)\.(mlp|feed_forward)$")
_OTHER_TOWERS = re.compile(r"vision|visual|audio|image|speech")




class _PlanTable(nn.Module):
    """Rows of ``scale`` and ``shift`` per plan slot over ``width`` neurons, and the shared
    per-token slot index that picks a row for every token of the batch."""

    def __init__(self, width: int, slot_index: torch.Tensor, slots: int, dtype: torch.dtype, device) -> None:
        super().__init__()
        self.width = width
        self.register_buffer("lape_scale", torch.ones(slots, width, dtype=dtype, device=device), persistent=False)
        self.register_buffer("lape_shift", torch.zeros(slots, width, dtype=dtype, device=device), persistent=False)
        self.register_buffer("lape_slot", slot_index, persistent=False)

    def rows(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each token's ``(scale, shift)``, shaped like ``out`` (tokens first, neurons last)."""
        slot = self.lape_slot[: out.numel() // self.width]
        return (self.lape_scale[slot].view(out.shape), self.lape_shift[slot].view(out.shape))


class SteeredActAndMul(_PlanTable):
    """``act_and_mul(x)`` with this rank's neurons edited: ``scale·act(g)·u + shift·u``."""

    def __init__(self, act_and_mul: nn.Module, width: int, up_first: bool, dtype: torch.dtype, device,
                 slot_index: torch.Tensor | None = None, slots: int = 1) -> None:
        super().__init__(width, _slot_index(slot_index, device), slots, dtype, device)
        self.act_and_mul, self.up_first = act_and_mul, up_first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = x[..., : self.width] if self.up_first else x[..., self.width :]
        out = self.act_and_mul(x)
        scale, shift = self.rows(out)
        return torch.addcmul(out * scale, up, shift)


class SteeredActivation(_PlanTable):
    """``act(h)`` of a non-gated MLP with this rank's neurons edited: ``scale·act(h) + shift``."""

    def __init__(self, activation: nn.Module, width: int, dtype: torch.dtype, device,
                 slot_index: torch.Tensor | None = None, slots: int = 1) -> None:
        super().__init__(width, _slot_index(slot_index, device), slots, dtype, device)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.activation(x)
        scale, shift = self.rows(out)
        return torch.addcmul(shift, out, scale)


def _slot_index(slot_index: torch.Tensor | None, device, tokens: int = 8192) -> torch.Tensor:
    """The shared per-token slot index (all zeros: every token on slot 0)."""
    return torch.zeros(tokens, dtype=torch.long, device=device) if slot_index is None else slot_index


STEERED = (SteeredActAndMul, SteeredActivation)


def decoder_mlps(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``[(name, mlp), ...]`` of the decoder layers in layer order."""
    found = []
    for name, module in model.named_modules():
        match = _DECODER_MLP.search(name)
        if match and not _OTHER_TOWERS.search(name):
            found.append((int(match.group(2)), name, module))
    return [(name, module) for _layer, name, module in sorted(found, key=lambda item: item[0])]


def install(model: nn.Module, dtype: torch.dtype, slots: int | str = 1, max_tokens: int = 8192) -> int:
    """Wrap every decoder layer's activation with ``slots`` plan slots (``"auto"``: :func:`auto_slots`)
    and one slot index for up to ``max_tokens`` tokens per forward pass; returns how many layers can
    be steered.

    A layer whose MLP has no form this module knows is left alone (the lm-eval side then
    refuses the model with the reason, see :func:`layout`).
    """
    steered, plans = 0, []
    for _name, mlp in decoder_mlps(model):
        if wrapper_of(mlp) is not None:
            steered += 1
            continue
        down = getattr(mlp, "down_proj", None) or getattr(mlp, "c_proj", None) or getattr(mlp, "fc2", None)
        width = getattr(down, "input_size_per_partition", None)  # not the weight's shape: CPU builds repack it
        act_fn = getattr(mlp, "act_fn", None)
        kind = type(act_fn).__name__
        if width is None:
            continue
        if hasattr(mlp, "gate_up_proj") and kind in ACT_THEN_UP + UP_THEN_ACT:
            plans.append((mlp, "act_fn", width, next(down.parameters()).device, kind in UP_THEN_ACT))
        elif not hasattr(mlp, "gate_up_proj") and isinstance(getattr(mlp, "act", None), nn.Module):
            plans.append((mlp, "act", width, next(down.parameters()).device, None))
    if not plans:
        return steered
    if slots == "auto":
        slots = auto_slots(len(plans), plans[0][2], torch.empty((), dtype=dtype).element_size())
    slot_index = torch.zeros(max_tokens, dtype=torch.long, device=plans[0][3])
    for mlp, attribute, width, device, up_first in plans:
        inner = getattr(mlp, attribute)
        wrapper = SteeredActivation(inner, width, dtype, device, slot_index, int(slots)) if up_first is None else \
            SteeredActAndMul(inner, width, up_first, dtype, device, slot_index, int(slots))
        setattr(mlp, attribute, wrapper)
        steered += 1
    return steered


def auto_slots(layers: int, width: int, element_size: int) -> int:
    """Plan slots for ``plan_slots=auto``: as many as :data:`AUTO_SLOT_BYTES` of tables hold on this
    rank (a scale and a shift row per slot, layer and neuron), from 2 up to :data:`MAX_AUTO_SLOTS`,
    so a grid's plans (a 21×21 forcing grid: 441) run in one engine call where they fit.

    >>> auto_slots(18, 2048, 2), auto_slots(32, 14336, 2), auto_slots(32, 1792, 2)
    (512, 146, 512)
    """
    per_slot = 2 * layers * width * element_size
    return max(2, min(MAX_AUTO_SLOTS, AUTO_SLOT_BYTES // per_slot))


def wrapper_of(mlp: nn.Module) -> nn.Module | None:
    """The wrapper :func:`install` put on ``mlp``, or None."""
    for name in ("act_fn", "act"):
        if isinstance(getattr(mlp, name, None), STEERED):
            return getattr(mlp, name)
    return None


def steered_modules(model: nn.Module) -> list[nn.Module]:
    """The wrappers of :func:`install`, in layer order."""
    return [wrapper for _name, mlp in decoder_mlps(model) if (wrapper := wrapper_of(mlp)) is not None]


def layout(model: nn.Module) -> dict:
    """What this rank can steer: decoder layers, steered layers, the shard's width and offset,
    and the MLP forms seen (for the lm-eval side's checks and error messages)."""
    mlps = decoder_mlps(model)
    modules = steered_modules(model)
    rank = _rank()
    width = modules[0].width if modules else 0
    slots = modules[0].lape_scale.shape[0] if modules else 0
    forms = sorted({f"{type(mlp).__name__}({type(getattr(mlp, 'act_fn', getattr(mlp, 'act', None))).__name__})"
                    for _name, mlp in mlps})
    return {"layers": len(mlps), "steered": len(modules), "width": width, "offset": rank * width, "rank": rank,
            "slots": slots, "forms": forms}


def write_plan(model: nn.Module, edits: dict[int, tuple[list[int], list[float], list[float]]], slot: int = 0) -> int:
    """Write a compiled plan into plan slot ``slot`` of this rank's tables: ``edits`` maps a layer to
    the full layer's neuron indices with their scale and shift; this rank keeps the indices of its
    shard. Every other neuron of the slot returns to ``scale 1, shift 0``. Returns how many neurons
    this rank edits."""
    modules = steered_modules(model)
    written = 0
    for layer, module in enumerate(modules):
        scale_row, shift_row = module.lape_scale[slot], module.lape_shift[slot]
        scale_row.fill_(1.0)
        shift_row.zero_()
        if layer not in edits:
            continue
        index, scale, shift = (torch.tensor(values, dtype=torch.float64) for values in edits[layer])
        offset = module.width * _rank()
        mine = (index >= offset) & (index < offset + module.width)
        local = (index[mine] - offset).long().to(scale_row.device)
        scale_row[local] = scale[mine].to(scale_row.device, scale_row.dtype)
        shift_row[local] = shift[mine].to(shift_row.device, shift_row.dtype)
        written += int(mine.sum())
    return written


def wrapper_self_test(model: nn.Module, rank: int) -> dict[str, Any]:
    """Check every decoder layer's wrapper on this rank (part 1 of the start-up check,
    :mod:`lape_harness.plugin.vllm_startup_check`): present; shift multiplied by the half of the
    op's input the op itself is linear in; ``s·op(x) + b·up`` on a test batch."""
    failures = []
    mlps = decoder_mlps(model)
    for layer, (_name, mlp) in enumerate(mlps):
        wrapper = wrapper_of(mlp)
        problem = "it has no steering wrapper" if wrapper is None else _wrapper_problem(wrapper)
        if problem:
            failures.append(f"layer {layer} on rank {rank}: {problem}")
    return {"rank": rank, "layers": len(mlps), "failures": failures}


def _wrapper_problem(wrapper) -> str | None:
    width, dtype, device = wrapper.width, wrapper.lape_scale.dtype, wrapper.lape_scale.device
    generator = torch.Generator().manual_seed(0)
    gated = isinstance(wrapper, SteeredActAndMul)
    x = torch.randn(4, 2 * width if gated else width, generator=generator).to(device, dtype)
    op = wrapper.act_and_mul if gated else wrapper.activation
    with torch.no_grad():
        base = op(x).float()
        up = None
        if gated:
            first, second = x[..., :width], x[..., width:]
            linear = [torch.allclose(op(torch.cat(halves, -1)).float(), 2 * base, rtol=1e-2, atol=1e-2)
                      for halves in ((2 * first, second), (first, 2 * second))]
            if linear[0] == linear[1]:
                return "cannot tell which half of its act-and-mul op's input is the up projection"
            if wrapper.up_first != linear[0]:
                return (f"it multiplies the shift by the {'first' if wrapper.up_first else 'second'} half of the "
                        f"op's input, but the op's up projection is the {'first' if linear[0] else 'second'} half")
            up = (first if linear[0] else second).float()
        slot = wrapper.lape_scale.shape[0] - 1
        saved = wrapper.lape_scale[slot].clone(), wrapper.lape_shift[slot].clone(), wrapper.lape_slot[:4].clone()
        scale = (torch.rand(width, generator=generator) + 0.5).to(device, dtype)
        shift = torch.randn(width, generator=generator).to(device, dtype)
        try:
            wrapper.lape_scale[slot], wrapper.lape_shift[slot] = scale, shift
            wrapper.lape_slot[:4] = slot
            got = wrapper(x).float()
        finally:
            wrapper.lape_scale[slot], wrapper.lape_shift[slot] = saved[0], saved[1]
            wrapper.lape_slot[:4] = saved[2]
        expected = scale.float() * base + shift.float() * (up if gated else 1.0)
        tolerance = 1e-4 if dtype == torch.float32 else 3e-2
        if not torch.allclose(got, expected, rtol=tolerance, atol=tolerance * float(expected.abs().max())):
            return (f"it computes {float((got - expected).abs().max()):.3g} away from scale·op(x) + shift"
                    f"{'·up' if gated else ''} on a test batch")
    return None


def table_digest(model: nn.Module, rank: int, slot: int) -> dict[str, Any]:
    """Per layer, this rank's rows of ``slot`` summarised by global neuron index: ``Σ (i+1)·(scale_i − 1)``
    and ``Σ (i+1)·shift_i`` over its shard (part 2 of the start-up check)."""
    digests = []
    for module in steered_modules(model):
        weight = torch.arange(module.width, dtype=torch.float64) + module.width * rank + 1
        scale = module.lape_scale[slot].detach().to("cpu", torch.float64)
        shift = module.lape_shift[slot].detach().to("cpu", torch.float64)
        digests.append((float((weight * (scale - 1)).sum()), float((weight * shift).sum())))
    return {"rank": rank, "digests": digests}


def _rank() -> int:
    from vllm.distributed import get_tensor_model_parallel_rank

    return get_tensor_model_parallel_rank()


class SteeringWorkerExtension:
    """Mixed into vLLM's worker (``worker_extension_cls``): the calls the lm-eval side makes
    through ``collective_rpc``. Names start with ``lape_`` so they never clash with vLLM's."""

    def lape_layout(self) -> dict:
        return layout(self.model_runner.model)

    def lape_route_slots(self) -> int:
        return route_slots(self.model_runner, steered_modules(self.model_runner.model))

    def lape_write_plan(self, edits: dict, slot: int = 0) -> int:
        return write_plan(self.model_runner.model, {int(layer): edit for layer, edit in edits.items()}, slot)

    def lape_self_test(self) -> dict:
        return wrapper_self_test(self.model_runner.model, _rank())

    def lape_table_digest(self, slot: int) -> dict:
        return table_digest(self.model_runner.model, _rank(), slot)


def install_on_load() -> None:
    """Make vLLM's model loader install the wrappers on every model it loads in this process,
    before the model is compiled (idempotent)."""
    from vllm.model_executor.model_loader.base_loader import BaseModelLoader

    if getattr(BaseModelLoader.load_model, "lape_steering", False):
        return
    load_model = BaseModelLoader.load_model

    def load_and_install(self, vllm_config, model_config, *args, **kwargs):
        model = load_model(self, vllm_config, model_config, *args, **kwargs)
        extra = vllm_config.additional_config if isinstance(vllm_config.additional_config, dict) else {}
        slots = extra.get(SLOTS_CONFIG, 1)
        install(model, model_config.dtype, slots if slots == "auto" else int(slots),
                vllm_config.scheduler_config.max_num_batched_tokens)
        return model

    load_and_install.lape_steering = True
    BaseModelLoader.load_model = load_and_install


install_on_load()
