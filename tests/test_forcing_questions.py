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
from lape_harness.task_data import read_questions

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


def test_own_questions_through_the_plain_lm_eval_cli(tiny_llama, tmp_path):
    questions = tmp_path / "mine.json"
    questions.write_text(json.dumps(MINE, ensure_ascii=False), encoding="utf-8")
    tasks = ["lape_forcing_de_to_fr", "lape_forcing_fr_to_de", "lape_forcing_de_to_de"]
    command = [str(LM_EVAL), "--model", "hf", "--model_args", f"pretrained={tiny_llama},dtype=float32",
               "--device", "cpu", "--tasks", ",".join(tasks), "--gen_kwargs", "max_gen_toks=4",
               "--metadata", json.dumps({"questions": str(questions)}),
               "--output_path", str(tmp_path / "out"), "--log_samples"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]

    [results_file] = (tmp_path / "out").rglob("results_*.json")
    results = json.loads(results_file.read_text(encoding="utf-8"))
    identity = f"mine.json@sha256:{hashlib.sha256(questions.read_bytes()).hexdigest()}"
    for task in tasks:
        assert results["results"][task]["questions_file,none"] == identity
        assert results["configs"][task]["metadata"]["questions"] == str(questions)
    for task, source in (("lape_forcing_de_to_fr", "deu_Latn"), ("lape_forcing_fr_to_de", "fr")):
        [samples_file] = (tmp_path / "out").rglob(f"samples_{task}_*.jsonl")
        samples = [json.loads(line) for line in samples_file.read_text(encoding="utf-8").splitlines()]
        assert [sample["arguments"]["gen_args_0"]["arg_0"] for sample in samples] == [
            f"Q: {question} \nA:" for question in MINE[source]
        ]
