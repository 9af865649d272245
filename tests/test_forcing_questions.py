"""The forcing family on a user's own question file: checked when read, passed with lm-eval's
``--metadata``, recorded (name and SHA-256) in the results; end to end through the plain lm_eval CLI."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lape_harness.errors import InputError
from lape_harness.task_support.task_data import read_questions

REPO = Path(__file__).resolve().parents[1]
LM_EVAL = Path(sys.executable).with_name("lm_eval")
MINE = {
    "deu_Latn": ["Welche Farbe hat der Himmel über dem Meer?", "Wie viele Beine hat eine Spinne?"],
    "fr": ["Quelle est la capitale de l'Italie ?"],
}


def test_keys_are_any_table_code_and_the_file_is_identified(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(MINE, ensure_ascii=False), encoding="utf-8")
    questions = read_questions(path)
    assert questions.for_language("de") == MINE["deu_Latn"]
    assert questions.for_language("fra_Latn") == MINE["fr"]
    assert questions.identity == f"mine.json@sha256:{hashlib.sha256(path.read_bytes()).hexdigest()}"
    with pytest.raises(InputError, match=r"no questions for 'ja' \(it has: de, fr\)"):
        questions.for_language("ja")


@pytest.mark.parametrize("content, complaint", [
    ('["Wie geht es?"]', "must hold a JSON object"),
    ('{"de": "Wie geht es?"}', "must be a list of non-empty question strings"),
    ('{"de": ["Wie geht es?", " "]}', "must be a list of non-empty question strings"),
    ('{"de": ["a"], "deu_Latn": ["b"]}', "both name 'de'"),
    ('{"xx": ["a"]}', "unknown language 'xx'"),
    ('{"de": [', "is not UTF-8 JSON"),
])
def test_bad_question_files_are_named(tmp_path, content, complaint):
    path = tmp_path / "q.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=complaint) as error:
        read_questions(path)
    assert str(path) in str(error.value)
    with pytest.raises(InputError, match="cannot read the forcing question file"):
        read_questions(tmp_path / "missing.json")


def _lm_eval(tiny_llama, out: Path, *args: str) -> dict:
    """Run the plain lm_eval CLI on the tiny model; the results JSON and the logged prompts per task."""
    command = [str(LM_EVAL), "--model", "hf", "--model_args", f"pretrained={tiny_llama},dtype=float32",
               "--device", "cpu", "--gen_kwargs", "max_gen_toks=4", "--output_path", str(out), "--log_samples", *args]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, cwd=out.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    [results_file] = out.rglob("results_*.json")
    results = json.loads(results_file.read_text(encoding="utf-8"))
    prompts = {}
    for task in results["results"]:
        [samples_file] = out.rglob(f"samples_{task}_*.jsonl")
        samples = [json.loads(line) for line in samples_file.read_text(encoding="utf-8").splitlines()]
        prompts[task] = [sample["arguments"]["gen_args_0"]["arg_0"] for sample in samples]
    return {"results": results, "prompts": prompts}


def test_own_questions_through_the_plain_lm_eval_cli(tiny_llama, tmp_path):
    questions = tmp_path / "mine.json"
    questions.write_text(json.dumps(MINE, ensure_ascii=False), encoding="utf-8")
    tasks = ["lape_forcing_de_to_fr", "lape_forcing_fr_to_de", "lape_forcing_de_to_de"]
    run = _lm_eval(tiny_llama, tmp_path / "out", "--tasks", ",".join(tasks),
                   "--metadata", json.dumps({"questions": str(questions)}))
    identity = f"mine.json@sha256:{hashlib.sha256(questions.read_bytes()).hexdigest()}"
    for task in tasks:
        assert run["results"]["results"][task]["questions_file,none"] == identity
        assert run["results"]["configs"][task]["metadata"]["questions"] == str(questions)
    for task, source in (("lape_forcing_de_to_fr", "deu_Latn"), ("lape_forcing_fr_to_de", "fr")):
        assert run["prompts"][task] == [f"Q: {question} \nA:" for question in MINE[source]]


def test_a_forcing_task_of_ones_own_for_any_language(tiny_llama, tmp_path):
    """A language outside the paper's 21 (Swahili): the user's task YAML includes the package
    template and names the question file in its metadata, as docs/tasks.md shows."""
    from lape_harness.plugin.registration import task_folder

    questions = tmp_path / "swahili.json"
    questions.write_text(json.dumps({"sw": ["Jina lako ni nani?", "Unaishi wapi?"]}), encoding="utf-8")
    folder = tmp_path / "my_tasks"
    folder.mkdir()
    (folder / "my_forcing_sw_to_en.yaml").write_text(
        f"include: {task_folder() / 'lape_forcing' / '_lape_forcing_template_yaml'}\n"
        "task: my_forcing_sw_to_en\n"
        "metadata:\n  version: 1.0\n  languages: {source: sw, target: en, kind: forcing}\n"
        f"  questions: {questions}\n", encoding="utf-8")
    run = _lm_eval(tiny_llama, tmp_path / "out", "--tasks", "my_forcing_sw_to_en", "--include_path", str(folder))
    assert run["prompts"]["my_forcing_sw_to_en"] == ["Q: Jina lako ni nani? \nA:", "Q: Unaishi wapi? \nA:"]
    result = run["results"]["results"]["my_forcing_sw_to_en"]
    assert result["questions_file,none"] == f"swahili.json@sha256:{hashlib.sha256(questions.read_bytes()).hexdigest()}"
    assert set(result) >= {"target_rate,none", "source_rate,none", "detected_language,none"}
