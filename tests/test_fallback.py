"""The fallback study on the tiny model: steps, answers equal a manual steered generation."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch
from references.steering import greedy_answer_deactivated

from lape_harness.errors import InputError
from lape_harness.langid import identify_language
from lape_harness.studies.fallback import (
    QUESTIONS,
    fallback_steps,
    format_prompt,
    plot_fallback,
    run_fallback,
    write_report,
)

STOP = ["\nQ:", "\nA:"]


@pytest.fixture(scope="module")
def steered(tiny_llama, neuron_file):
    from lape_harness.plugin.hf_steered import HFSteeredLM

    return HFSteeredLM(pretrained=str(tiny_llama), neurons=str(neuron_file(tiny_llama)), device="cpu", dtype="float32",
                       batch_size=1)


def test_prompt_and_steps_follow_the_paper():
    assert format_prompt("Why is the sky blue?") == "Q: Why is the sky blue?A: "
    assert len(QUESTIONS) >= 20 and len(set(QUESTIONS)) == len(QUESTIONS)
    steps = fallback_steps(["en", "fr", "es"], -1.5)
    assert [s for _, s in steps] == ["none", "-en=-1.5", "-en=-1.5-fr=-1.5", "-en=-1.5-fr=-1.5-es=-1.5"]


def test_fallback_runs_each_step_and_records_a_distribution(steered, tiny_llama, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    questions = list(QUESTIONS[:3])
    study = run_fallback(steered, order=["de", "fr"], fill=-1.5, questions=questions, max_gen_toks=6,
                         repetition_penalty=1.0, output=tmp_path, log=lambda _: None)
    assert [step.deactivated for step in study.steps] == [[], ["de"], ["de", "fr"]]
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    neuron_set = steered.steering.neurons
    for step in study.steps:
        expected = [greedy_answer_deactivated(model, tokenizer, format_prompt(q), step.deactivated, neuron_set, -1.5, 6,
                                              STOP) for q in questions]
        assert step.answers == expected
        assert step.languages == [identify_language(answer) for answer in expected]
        counts = Counter(step.languages)
        assert step.distribution == pytest.approx({code: n / 3 for code, n in counts.items()})
        assert step.most_common == counts.most_common(1)[0][0]
    assert study.steps[0].answers != study.steps[2].answers  # the deactivation changes the answers
    assert steered.steering_signature()["plan"] == "none"  # the model is left unsteered

    # saved after every step; a re-run with the same settings generates nothing
    saved = json.loads((tmp_path / "fallback.json").read_text())
    assert len(saved["steps"]) == 3
    again = run_fallback(steered, order=["de", "fr"], fill=-1.5, questions=questions, max_gen_toks=6,
                         repetition_penalty=1.0, output=tmp_path, log=lambda _: None)
    assert [s.answers for s in again.steps] == [s.answers for s in study.steps]

    written = write_report(study, tmp_path)
    assert "| 2 | de,fr |" in (tmp_path / "fallback.md").read_text()
    numbers = plot_fallback(study, tmp_path / "fallback.png")
    assert numbers["steps"] == ["none", "+de", "+fr"]
    assert [sum(column) for column in zip(*numbers["share_percent"])] == pytest.approx([100, 100, 100])
    assert all((tmp_path / name).stat().st_size > 0 for name in ("fallback.png", "fallback.md")) and len(written) == 3


def test_bad_order(steered):
    with pytest.raises(InputError, match="no neurons for ko"):
        run_fallback(steered, order=["de", "ko"], questions=["Hi?"], log=lambda _: None)
    with pytest.raises(InputError, match="twice"):
        run_fallback(steered, order=["de", "de"], questions=["Hi?"], log=lambda _: None)


def test_command_line_matches_the_library(steered, tiny_llama, tmp_path):
    from lape_harness.cli import main

    questions = list(QUESTIONS[:2])
    (tmp_path / "questions.txt").write_text("\n".join(["", *questions, ""]), encoding="utf-8")
    library = run_fallback(steered, order=["de", "fr"], fill=-1.5, questions=questions, max_gen_toks=6,
                           repetition_penalty=1.0, output=tmp_path / "library", log=lambda _: None)
    # no --device: the command picks this machine's device (lm-eval's hf alone would ask for cuda)
    assert main(["fallback", "--model-args", f"pretrained={tiny_llama},neurons={steered.neurons_path},dtype=float32",
                 "--order", "de,fr", "--fill", "-1.5", "--questions", str(tmp_path / "questions.txt"),
                 "--max-gen-toks", "6", "--repetition-penalty", "1.0", "--out", str(tmp_path / "cli")]) == 0
    saved = json.loads((tmp_path / "cli" / "fallback.json").read_text())
    assert [step["answers"] for step in saved["steps"]] == [step.answers for step in library.steps]
    assert all((tmp_path / "cli" / name).is_file() for name in ("fallback.md", "fallback.png"))
    assert main(["fallback", "--model-args", f"pretrained={tiny_llama},neurons={steered.neurons_path}",
                 "--questions", str(tmp_path / "missing.txt")]) == 2
