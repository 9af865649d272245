"""lape_harness.plugin.side_by_side: jobs' engine calls merged per round, answers routed back, errors raised."""

from __future__ import annotations

import threading

import pytest

from lape_harness.plugin.side_by_side import current_job, engine_call, run_side_by_side


def test_jobs_with_different_numbers_of_calls_get_their_own_answers():
    """Job j makes j+1 calls; each round merges the calls still waiting (finished jobs drop out)."""
    rounds = []

    def job(number: int):
        return [engine_call(f"{number}.{call}") for call in range(number + 1)]

    def merged(waiting):
        rounds.append([job for job, _payload in waiting])
        assert threading.current_thread() is threading.main_thread()  # the engine runs in the caller's thread
        return [payload.upper() + "!" for _job, payload in waiting]

    results = run_side_by_side([lambda n=n: job(n) for n in range(3)], merged)
    assert results == [["0.0!"], ["1.0!", "1.1!"], ["2.0!", "2.1!", "2.2!"]]
    assert rounds == [[0, 1, 2], [1, 2], [2]]
    assert current_job() is None


def test_jobs_run_one_at_a_time():
    running, most = [0], [0]

    def job():
        for _ in range(3):
            running[0] += 1
            most[0] = max(most[0], running[0])
            running[0] -= 1
            engine_call(None)

    run_side_by_side([job] * 4, lambda waiting: [None] * len(waiting))
    assert most[0] == 1


def test_an_error_in_a_job_or_in_the_merged_call_stops_every_job():
    finished = []

    def waiting_job():
        try:
            engine_call("x")
        finally:
            finished.append("waiting")

    def failing_job():
        raise ValueError("bad request")

    with pytest.raises(ValueError, match="bad request"):
        run_side_by_side([waiting_job, failing_job], lambda waiting: [None] * len(waiting))
    assert finished == ["waiting"]

    def engine_fails(waiting):
        raise RuntimeError("engine down")

    with pytest.raises(RuntimeError, match="engine down"):
        run_side_by_side([waiting_job, waiting_job], engine_fails)
    assert finished == ["waiting"] * 3


def test_engine_call_outside_a_job_is_an_error():
    with pytest.raises(RuntimeError, match="outside"):
        engine_call("x")
