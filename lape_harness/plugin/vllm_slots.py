"""Routing each token to its request's plan slot inside vLLM's model runner.

Every wrapper of :mod:`lape_harness.plugin.vllm_worker` reads its scale and shift rows through one
per-token slot index shared by all layers. :func:`route_slots` makes the model runner fill that
index before every forward pass, from the scheduler's output, in the runner's token order; a
request names its slot in ``SamplingParams.extra_args[SLOT_KEY]`` (none: slot 0). On GPUs the index
is uploaded from pinned host buffers, asynchronously.

Example:
    >>> router = SlotRouter(torch.zeros(4, dtype=torch.long), slots=2)
    >>> router.slot_of["r"] = 1
    >>> router.fill(["q", "r"], [1, 2])
    >>> router.slot_index.tolist()
    [0, 1, 1, 0]
"""

from __future__ import annotations

import numpy as np
import torch

#: ``SamplingParams.extra_args`` key naming a request's plan slot.
SLOT_KEY = "lape_plan_slot"


class SlotRouter:
    """Fills the shared slot index before each forward pass: request ``r`` runs ``n_r`` tokens
    of the flattened batch, in the model runner's request order, all on ``r``'s plan slot.

    A request's slot comes from ``SamplingParams.extra_args[SLOT_KEY]`` when the scheduler first
    sends it (``scheduled_new_reqs``) and is forgotten when it finishes.

    >>> router = SlotRouter(torch.zeros(6, dtype=torch.long), slots=4)
    >>> router.slot_of.update(a=2, b=3)
    >>> router.fill(["b", "c", "a"], [2, 1, 2])
    >>> router.slot_index.tolist()
    [3, 3, 0, 2, 2, 0]
    """

    def __init__(self, slot_index: torch.Tensor, slots: int) -> None:
        self.slot_index, self.slots = slot_index, slots
        self.slot_of: dict[str, int] = {}
        self._filled = 0  # tokens at the index's start that may hold a slot other than 0
        self._staging = _PinnedStaging(len(slot_index)) if slot_index.is_cuda else None

    def learn(self, scheduler_output) -> None:
        """Record the slots of the step's new requests; forget finished ones."""
        for request in scheduler_output.scheduled_new_reqs:
            extra = getattr(request.sampling_params, "extra_args", None) or {}
            slot = int(extra.get(SLOT_KEY, 0))
            if not 0 <= slot < self.slots:
                raise ValueError(f"request {request.req_id}: {SLOT_KEY}={slot}, but this engine has "
                                 f"{self.slots} plan slots (additional_config lape_plan_slots)")
            if slot:
                self.slot_of[request.req_id] = slot
        for req_id in scheduler_output.finished_req_ids:
            self.slot_of.pop(req_id, None)

    def fill(self, req_ids, num_scheduled_tokens) -> None:
        """Slot of every token, requests in batch order with their token counts."""
        slots = [self.slot_of.get(req_id, 0) for req_id in req_ids]
        if not any(slots):
            if self._filled:
                self.slot_index[: self._filled].zero_()
                self._filled = 0
            return
        per_token = np.repeat(np.asarray(slots, dtype=np.int64), np.asarray(num_scheduled_tokens, dtype=np.int64))
        tokens = len(per_token)
        if self._staging is None:
            self.slot_index[:tokens].copy_(torch.from_numpy(per_token))
        else:
            self._staging.upload(per_token, self.slot_index)
        if self._filled > tokens:
            self.slot_index[tokens : self._filled].zero_()
        self._filled = tokens


class _PinnedStaging:
    """Two pinned host buffers the slot index is uploaded from, asynchronously: a buffer is reused only
    after the copy that last read it has run (its CUDA event), so a fast host never overwrites a
    buffer the device has not read yet."""

    def __init__(self, tokens: int) -> None:
        self.buffers = [torch.empty(tokens, dtype=torch.long, pin_memory=True) for _ in range(2)]
        self.events = [torch.cuda.Event(), torch.cuda.Event()]  # recorded again at every upload
        self.recorded = [False, False]
        self.turn = 0

    def upload(self, per_token: np.ndarray, target: torch.Tensor) -> None:
        buffer, event = self.buffers[self.turn], self.events[self.turn]
        if self.recorded[self.turn]:
            event.synchronize()  # the copy that last read this buffer has run
        tokens = len(per_token)
        buffer[:tokens].copy_(torch.from_numpy(per_token))
        target[:tokens].copy_(buffer[:tokens], non_blocking=True)
        event.record()
        self.recorded[self.turn] = True
        self.turn = 1 - self.turn


def route_slots(runner, modules: list) -> int:
    """Make ``runner`` (vLLM's model runner) fill the slot index of ``modules`` (the steering wrappers,
    which share it) before every forward pass; returns the number of plan slots (idempotent).

    Model runner V1 (``vllm/v1/worker/gpu_model_runner.py``, also the CPU runner's base) lays the
    batch's tokens out request by request in ``input_batch.req_ids`` order with the counts it
    passes to ``_prepare_inputs``; model runner V2 (``vllm/v1/worker/gpu/model_runner.py``) in
    ``batch_req_state.req_ids`` order with ``batch_req_state.num_scheduled_tokens``.
    """
    if not modules:
        return 0
    if isinstance(getattr(runner, "lape_slot_router", None), SlotRouter):
        return runner.lape_slot_router.slots
    router = SlotRouter(modules[0].lape_slot, modules[0].lape_scale.shape[0])
    if hasattr(runner, "_prepare_inputs"):  # model runner V1
        prepare = runner._prepare_inputs

        def prepare_v1(scheduler_output, num_scheduled_tokens, *args, **kwargs):
            router.learn(scheduler_output)
            router.fill(runner.input_batch.req_ids[: len(num_scheduled_tokens)], num_scheduled_tokens)
            return prepare(scheduler_output, num_scheduled_tokens, *args, **kwargs)

        runner._prepare_inputs = prepare_v1
    elif hasattr(runner, "prepare_inputs") and hasattr(runner, "gather_batch_req_state"):  # model runner V2
        prepare = runner.prepare_inputs

        def prepare_v2(scheduler_output, batch_req_state, *args, **kwargs):
            router.learn(scheduler_output)
            router.fill(batch_req_state.req_ids, batch_req_state.num_scheduled_tokens)
            return prepare(scheduler_output, batch_req_state, *args, **kwargs)

        runner.prepare_inputs = prepare_v2
    else:
        raise RuntimeError(f"lape-harness cannot route plan slots in vLLM's {type(runner).__name__}: "
                           "it has neither _prepare_inputs (model runner V1) nor prepare_inputs (V2)")
    runner.lape_slot_router = router
    return router.slots
