"""Under lm-eval's command line an ``hf-steered`` or ``vllm-steered`` error prints as its message, not a
traceback (``lape_harness.plugin.error_display``; issue 14, item 13)."""

from __future__ import annotations

from lape_harness.errors import InputError


def test_lm_eval_prints_an_hf_steered_error_plainly(tiny_llama, ppl_tasks, tmp_path):
    import os
    import subprocess
    import sys

    command = [sys.executable, "-m", "lm_eval", "--model", "hf-steered", "--model_args",
               f"pretrained={tiny_llama},steer=-de", "--tasks", "tinyppl_de", "--include_path", str(ppl_tasks),
               "--device", "cpu"]
    env = {key: value for key, value in os.environ.items() if key != "LAPE_HARNESS_TRACEBACK"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "error: steer=-de needs a neuron set: add neurons=" in result.stderr
    assert result.stderr.rstrip().splitlines()[-1].startswith("(from lm-eval's model hf-steered")


def test_marked_errors_print_plainly_and_others_keep_their_traceback(capsys, monkeypatch):
    import sys

    from lape_harness.plugin import error_display
    from lape_harness.plugin.error_display import plain_errors

    seen = []
    monkeypatch.setattr(error_display, "_previous", error_display._previous)  # restored afterwards
    monkeypatch.setattr(sys, "excepthook", lambda *args: seen.append(args[1]))

    @plain_errors
    def fails(error):
        raise error

    for error in (InputError("bad steer=; write steer=-de"), RuntimeError("a bug")):
        try:
            fails(error)
        except Exception as caught:  # noqa: BLE001
            sys.excepthook(type(caught), caught, caught.__traceback__)
    assert [str(error) for error in seen] == ["a bug"]
    assert "error: bad steer=; write steer=-de" in capsys.readouterr().err
    monkeypatch.setenv("LAPE_HARNESS_TRACEBACK", "1")
    try:
        fails(InputError("again"))
    except InputError as caught:
        sys.excepthook(type(caught), caught, caught.__traceback__)
    assert [str(error) for error in seen] == ["a bug", "again"]


def test_a_plain_error_names_the_model_it_came_from(capsys, monkeypatch):
    import sys

    from lape_harness.plugin import error_display
    from lape_harness.plugin.error_display import plain_errors

    monkeypatch.setattr(error_display, "_previous", error_display._previous)
    monkeypatch.setattr(sys, "excepthook", sys.__excepthook__)
    monkeypatch.delenv("LAPE_HARNESS_TRACEBACK", raising=False)

    class Engine:
        model_name = "vllm-steered"

        @plain_errors
        def start(self):
            return self.check()

        @plain_errors
        def check(self):
            raise InputError("plan_slots=0: give at least 1")

    try:
        Engine().start()
    except InputError as caught:
        sys.excepthook(type(caught), caught, caught.__traceback__)
    assert capsys.readouterr().err.rstrip().splitlines()[-1].startswith("(from lm-eval's model vllm-steered;")
