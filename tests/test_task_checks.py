"""Task-level problems are reported when lm-eval matches the task names, before any model loads
(lape_harness.plugin.task_checks through the registration hook on TaskManager.match_tasks)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from lape_harness.errors import InputError
from lape_harness.plugin.registration import task_folder


def _manager(include_path, metadata=None):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(include_path), include_defaults=False, metadata=metadata or {})


@pytest.fixture(scope="module")
def own_tasks(tmp_path_factory):
    """A folder with a user's task declaring a misspelt language, one with a list, and a group of them."""
    folder = tmp_path_factory.mktemp("own_tasks")
    base = {"dataset_path": "json", "dataset_kwargs": {"data_files": {"test": "/nonexistent.jsonl"}},
            "test_split": "test", "output_type": "generate_until", "doc_to_text": "{{q}}", "doc_to_target": "a",
            "metric_list": [{"metric": "exact_match"}]}
    for name, languages in (("my_typo", {"target": "deu"}), ("my_list", ["de", "fr"]), ("my_fine", {"target": "de"})):
        (folder / f"{name}.yaml").write_text(yaml.safe_dump({**base, "task": name, "metadata": {"languages": languages}}))
    (folder / "my_group.yaml").write_text(yaml.safe_dump({"group": "my_group", "task": ["my_fine", "my_typo"]}))
    return folder


@pytest.mark.parametrize(("name", "message"), [
    ("my_typo", r"task my_typo: metadata.languages .*unknown language 'deu'"),
    ("my_list", r"task my_list: metadata.languages \['de', 'fr'\] is not understood"),
    ("my_group", r"task my_typo: metadata.languages"),  # a group's members are checked
])
def test_a_users_task_declaration_is_checked_when_matched(own_tasks, name, message):
    with pytest.raises(InputError, match=message):
        _manager(own_tasks).match_tasks([name])


def test_a_well_declared_task_passes(own_tasks):
    assert _manager(own_tasks).match_tasks(["my_fine"]) == ["my_fine"]


def test_a_question_file_without_the_source_language(tmp_path):
    questions = tmp_path / "q.json"
    questions.write_text(json.dumps({"de": ["Wie geht es dir heute?"]}))
    manager = _manager(task_folder(), {"questions": str(questions)})
    assert manager.match_tasks(["lape_forcing_de_to_fr"]) == ["lape_forcing_de_to_fr"]
    with pytest.raises(InputError, match="q.json has no questions for 'fr'"):
        manager.match_tasks(["lape_forcing_fr"])  # a group: its members' source is fr
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(InputError, match="broken.json is not UTF-8 JSON"):
        _manager(task_folder(), {"questions": str(tmp_path / "broken.json")}).match_tasks(["lape_forcing_de_to_fr"])


def test_flores_source_and_lcb_data_are_checked(monkeypatch, tmp_path):
    manager = _manager(task_folder())
    monkeypatch.setenv("LAPE_HARNESS_FLORES", "bogus")
    with pytest.raises(InputError, match="LAPE_HARNESS_FLORES='bogus' is not a FLORES source"):
        manager.match_tasks(["lape_flores_en-de"])
    monkeypatch.setenv("LAPE_HARNESS_DATA", str(tmp_path))
    with pytest.raises(InputError, match="has no Language Confusion Benchmark test sets"):
        manager.match_tasks(["lape_lcb_crosslingual_okapi_ja"])


def test_lm_eval_reports_a_task_error_in_one_line_before_the_model(own_tasks, tmp_path):
    """Plain `lm_eval`: one `error:` line, no traceback, and the model (which does not exist) is never loaded."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args",
                           f"pretrained={tmp_path / 'no-such-model'}", "--tasks", "my_typo",
                           "--include_path", str(own_tasks)],
                          capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert done.returncode == 1
    assert "error: task my_typo: metadata.languages" in done.stderr
    assert "Traceback" not in done.stderr and "no-such-model" not in done.stderr
