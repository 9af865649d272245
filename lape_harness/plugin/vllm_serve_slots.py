"""The served engine's plan slots, shared by concurrent requests: which plan each slot holds, who is
using it, and which idle slot a new plan may take.

Slot 0 holds the server's default plan for good. Every other slot holds one plan at a time; a
request :meth:`SlotPool.acquire`\\ s the slot of its plan (loading the plan into the least recently
used idle slot when no slot holds it) and :meth:`SlotPool.release`\\ s it when its response has
ended. A slot in use is never reloaded: when every slot is in use by other plans, a request waits
until one is released. A load runs as a task of its own, so a client that goes away while its plan
is being written leaves no half-written slot behind; requests for the plan being loaded wait for
that one load.

Example:
    >>> import asyncio
    >>> async def demo():
    ...     pool = SlotPool(3, pinned="none")
    ...     async def load(slot, plan): pass          # write the plan into every rank's tables
    ...     a = await pool.acquire("-de", load)
    ...     b = await pool.acquire("-de", load)       # the same slot, no second load
    ...     return pool.acquire_nowait("none"), a, b, pool.loads
    >>> asyncio.run(demo())
    (0, 1, 1, 1)
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from lape_harness.errors import InputError


class SlotPool:
    """``slots`` plan slots, slot 0 pinned to ``pinned`` (see the module docstring)."""

    def __init__(self, slots: int, pinned: str) -> None:
        if slots < 2:
            raise InputError(f"--plan-slots {slots}: the server needs at least 2 plan slots (slot 0 holds the default "
                             "plan, the others the plans requests ask for)")
        self.slots = slots
        self.plan_of: dict[int, str | None] = {slot: None for slot in range(slots)}
        self.plan_of[0] = pinned
        self.slot_of: dict[str, int] = {pinned: 0}
        self.users = [0] * slots
        self.idle: OrderedDict[int, None] = OrderedDict((slot, None) for slot in range(1, slots))  # LRU first
        self.loading: dict[int, asyncio.Task] = {}
        self._waiters: list[asyncio.Future] = []
        self.loads = 0
        self.waits = 0

    def acquire_nowait(self, plan: str) -> int | None:
        """The slot already holding ``plan`` (counted as in use), else None."""
        slot = self.slot_of.get(plan)
        if slot is None:
            return None
        if slot:
            self.users[slot] += 1
            self.idle.pop(slot, None)
        return slot

    async def acquire(self, plan: str, load: Callable[[int, str], Awaitable[None]]) -> int:
        """A slot holding ``plan``, in use by the caller until :meth:`release`; ``load(slot, plan)``
        writes a plan into a slot. Waits while every slot is in use by other plans."""
        while True:
            slot = self.acquire_nowait(plan)
            if slot is None and self.idle:
                slot = self._take_idle(plan, load)
            if slot is not None:
                break
            self.waits += 1
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        task = self.loading.get(slot)
        if task is not None:
            try:
                await asyncio.shield(task)
            except BaseException:
                self.release(slot)
                raise
        return slot

    def _take_idle(self, plan: str, load) -> int:
        slot, _ = self.idle.popitem(last=False)  # the least recently used
        old = self.plan_of[slot]
        if old is not None:
            del self.slot_of[old]
        self.plan_of[slot], self.slot_of[plan] = plan, slot
        self.users[slot] = 1
        self.loads += 1
        task = asyncio.ensure_future(load(slot, plan))
        self.loading[slot] = task
        task.add_done_callback(lambda done, slot=slot, plan=plan: self._loaded(done, slot, plan))
        return slot

    def _loaded(self, task: asyncio.Task, slot: int, plan: str) -> None:
        self.loading.pop(slot, None)
        if task.cancelled() or task.exception() is not None:  # the slot holds no known plan
            if self.slot_of.get(plan) == slot:
                del self.slot_of[plan]
            self.plan_of[slot] = None

    def release(self, slot: int) -> None:
        """The caller's response has ended: ``slot`` may be reloaded once no one else uses it."""
        if slot == 0:
            return
        self.users[slot] -= 1
        if self.users[slot] == 0:
            self.idle[slot] = None  # most recently used last
            if self.plan_of[slot] is None:
                self.idle.move_to_end(slot, last=False)  # an empty slot is taken first
            for waiter in self._waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def state(self) -> dict:
        """What each slot holds and how many requests use it (for logs and tests)."""
        return {"plans": dict(self.plan_of), "users": list(self.users), "loads": self.loads, "waits": self.waits}
