"""Run several jobs side by side and merge the engine calls they make into one call per round.

``steer=auto`` gives every task its own plan. Each plan's requests must still go through the
engine's own lm-eval code (sorting, truncation, parsing, cache hooks), but an engine that can
run every plan in one batch (``vllm-steered``'s plan slots) should get the requests of all
plans in one call, so that its batching mixes them. :func:`run_side_by_side` runs each job in
a thread of its own, used as a coroutine: only one job runs at a time, and a job that reaches
an engine call (:func:`engine_call`) waits there until every other job has reached its next
engine call or finished; then ``merged`` runs all the waiting calls as one (it gets each
call's job number and payload) and each job resumes with its own answers. Nothing runs concurrently, so the jobs' code needs no locks and
the engine is only ever called from the caller's thread.

Example:
    >>> def job(words):                 # a job: plain code that makes engine calls
    ...     return [answer.upper() for answer in engine_call(words)]
    >>> calls = []
    >>> def merged(waiting):            # one engine call for every job's waiting call
    ...     calls.append(waiting)
    ...     return [[f"{word}{job}" for word in words] for job, words in waiting]
    >>> run_side_by_side([lambda: job(["a", "b"]), lambda: job(["c"])], merged)
    [['A0', 'B0'], ['C1']]
    >>> calls
    [[(0, ['a', 'b']), (1, ['c'])]]
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

_local = threading.local()


class _Abandoned(BaseException):
    """Raised inside a waiting job when another job or the merged call failed."""


class _Job:
    def __init__(self, work: Callable[[], Any], events: queue.SimpleQueue) -> None:
        self.work, self.events = work, events
        self.answers: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, daemon=True, name="lape-side-by-side")

    def _run(self) -> None:
        _local.job = self
        try:
            self.events.put(("done", self.work()))
        except BaseException as error:  # handed to the caller's thread, which raises it
            self.events.put(("error", error))

    def call(self, payload: Any) -> Any:
        """In the job's thread: wait for the answer to ``payload`` from the merged call."""
        self.events.put(("call", payload))
        answer = self.answers.get()
        if isinstance(answer, _Abandoned):
            raise answer
        return answer


def engine_call(payload: Any) -> Any:
    """Inside a job of :func:`run_side_by_side`: hand ``payload`` to the merged call and return its answer."""
    job = current_job()
    if job is None:
        raise RuntimeError("engine_call outside run_side_by_side")
    return job.call(payload)


def current_job() -> _Job | None:
    """The job running in this thread, or None outside :func:`run_side_by_side`."""
    return getattr(_local, "job", None)


def run_side_by_side(jobs: list[Callable[[], Any]], merged: Callable[[list[tuple[int, Any]]], list[Any]]) -> list[Any]:
    """Run ``jobs`` side by side; ``merged([(job number, payload), ...])`` answers each round's
    engine calls (one answer per call, in order; a finished job has no call in later rounds). Returns each job's
    result; the first error of a job or of ``merged`` is
    raised after every other job has been stopped."""
    events: queue.SimpleQueue = queue.SimpleQueue()
    runners = [_Job(work, events) for work in jobs]
    results: list[Any] = [None] * len(runners)
    blocked: dict[int, Any] = {}  # job -> the payload it waits on

    def advance(index: int, answer: Any = None, start: bool = False) -> None:
        """Let job ``index`` run until its next engine call or its end (only it runs meanwhile)."""
        runner = runners[index]
        if start:
            runner.thread.start()
        else:
            runner.answers.put(answer)
        kind, value = events.get()
        if kind == "call":
            blocked[index] = value
        elif kind == "done":
            results[index] = value
        else:
            raise value

    try:
        for index in range(len(runners)):
            advance(index, start=True)
        while blocked:
            calls = sorted(blocked.items())
            answers = merged(calls)
            if len(answers) != len(calls):
                raise RuntimeError(f"merged call answered {len(answers)} of {len(calls)} calls")
            for (index, _payload), answer in zip(calls, answers):
                del blocked[index]
                advance(index, answer)
    except BaseException:
        for index in blocked:
            runners[index].answers.put(_Abandoned())
        for index in blocked:
            runners[index].thread.join()
        raise
    return results
