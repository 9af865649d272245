"""The Language Confusion Benchmark's two prompt forms: the ``lape_lcb_base_*`` tasks give a base model
the benchmark's own ``Q: {message}\\nA:`` (checked against its ``turns_to_prompt``, ported in
references/language_confusion_prompting.py) and stop where its scorer cuts; each mirrors its
``lape_lcb_*`` task in everything else; a run in the wrong form is warned about."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from references.language_confusion_prompting import STOP, turns_to_prompt, zero_shot_prompt

from lape_harness.errors import InputError
from lape_harness.plugin.lcb_prompt_check import prompt_form_warnings
from lape_harness.plugin.steered_lm import SteeredLM
from lape_harness.task_support.confusion import scores_from_results
from lape_harness.task_support.lcb_prompt_forms import base_prompt, counterpart, lcb_tasks_for, prompt_form, task_name
from lape_harness.task_support.task_data import DATA_ENV, LCB_TEST_SETS
from lape_harness.task_support.task_languages import task_family, task_languages

REPO = Path(__file__).resolve().parents[1]
LCB = REPO / "tasks" / "lape_lcb"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "data"
# the fixture test sets (tests/fixtures/data/for-ai/language-confusion/test_sets)
FIXTURE_TASKS = ("crosslingual_okapi_ja", "monolingual_okapi_de")


def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def loaded():
    """Both forms of the fixture test sets, loaded by lm-eval from the task YAMLs, offline."""
    from lm_eval.tasks import TaskManager

    names = [f"{prefix}_{rest}" for rest in FIXTURE_TASKS for prefix in ("lape_lcb", "lape_lcb_base")]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(DATA_ENV, str(FIXTURES))
        manager = TaskManager(include_path=str(REPO / "tasks"), include_defaults=False)
        return manager.load(names)["tasks"]


def _contexts(task, **chat) -> list[str]:
    task.build_all_requests(rank=0, world_size=1, **chat)
    return [instance.args[0] for instance in sorted(task.instances, key=lambda instance: instance.doc_id)]


def _render(messages, add_generation_prompt=True) -> str:
    """A stand-in chat template."""
    return "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in messages) + "<assistant>"


@pytest.mark.parametrize("message", [
    "Reply in Japanese. What is tea?",
    " leading and trailing spaces ",
    "two\nlines\n",
    "\nstarts with a newline",
])
def test_base_prompt_is_the_benchmarks(message):
    assert base_prompt(message) == turns_to_prompt([{"role": "User", "message": message}])


def test_base_tasks_prompt_as_the_benchmark_and_chat_tasks_give_the_message(loaded):
    multiline = 0
    for rest in FIXTURE_TASKS:
        base, chat = loaded[f"lape_lcb_base_{rest}"], loaded[f"lape_lcb_{rest}"]
        messages = [doc["prompt"] for doc in base.test_docs()]
        assert len(messages) >= 3
        multiline += sum("\n" in message for message in messages)
        # what the model receives, without a chat template
        assert _contexts(base) == [zero_shot_prompt(message) for message in messages]
        assert _contexts(chat) == messages
        assert base.config.generation_kwargs["until"] == [STOP] == chat.config.generation_kwargs["until"]
    assert multiline > 0  # a message's own newlines stay inside Q: ... A:


def test_base_tasks_mirror_the_chat_tasks(loaded):
    """Same data, generation, metrics and metadata; only the prompt differs."""
    for rest in FIXTURE_TASKS:
        base, chat = loaded[f"lape_lcb_base_{rest}"].config, loaded[f"lape_lcb_{rest}"].config
        assert base.generation_kwargs == chat.generation_kwargs
        assert {**base.metadata, "config_source": None} == {**chat.metadata, "config_source": None}
        assert [(m["metric"], m["aggregation"].__name__) for m in base.metric_list] == \
               [(m["metric"], m["aggregation"].__name__) for m in chat.metric_list]
        assert base.process_results.__name__ == chat.process_results.__name__ == "process_results"
        assert list(loaded[f"lape_lcb_base_{rest}"].test_docs()) == list(loaded[f"lape_lcb_{rest}"].test_docs())
    for path in LCB.glob("lape_lcb_base_*.yaml"):
        config = _yaml(path)
        twin = _yaml(LCB / f"{counterpart(config['task'])}.yaml")
        assert config.pop("include") == twin.pop("include").replace("_lape_lcb_", "_lape_lcb_base_")
        assert config.pop("task") == "lape_lcb_base_" + twin.pop("task").removeprefix("lape_lcb_")
        assert config == twin


def test_base_groups_list_every_test_set():
    expected = {setting: [task_name(setting, source, code, "base") for source, codes in sources.items() for code in codes]
                for setting, sources in LCB_TEST_SETS.items()}
    assert _yaml(LCB / "_lape_lcb_base.yaml")["task"] == ["lape_lcb_base_monolingual", "lape_lcb_base_crosslingual"]
    for setting, tasks in expected.items():
        group = _yaml(LCB / f"_lape_lcb_base_{setting}.yaml")["task"]
        assert group == tasks == [counterpart(name) for name in _yaml(LCB / f"_lape_lcb_{setting}.yaml")["task"]]
        assert all((LCB / f"{name}.yaml").is_file() for name in tasks)
    assert sum(len(tasks) for tasks in expected.values()) == 66 == len(list(LCB.glob("lape_lcb_base_*.yaml")))


def test_names_languages_and_choice():
    assert lcb_tasks_for(False) == ["lape_lcb_base"] and lcb_tasks_for(True) == ["lape_lcb"]
    assert lcb_tasks_for(False, "monolingual") == ["lape_lcb_base_monolingual"]
    with pytest.raises(InputError, match="unknown LCB setting 'mono'.*monolingual, crosslingual"):
        lcb_tasks_for(True, "mono")
    with pytest.raises(InputError, match="unknown LCB prompt form 'instruct'.*chat, base"):
        task_name("monolingual", "okapi", "de", "instruct")
    with pytest.raises(InputError, match="not a Language Confusion Benchmark task"):
        counterpart("lape_xnli_de")
    assert prompt_form("lape_lcb_base") == "base" and prompt_form("lape_lcbx") is None
    languages = task_languages("lape_lcb_base_crosslingual_complex_prompts_zh")
    assert (languages.kind, languages.source, languages.target) == ("crosslingual", "en", "zh")
    assert task_family("lape_lcb_base_monolingual_native_ja") == "lape_lcb_base_monolingual_native"
    results = {"lape_lcb_base_monolingual_okapi_de": {"lpr,none": 0.5}, "lape_lcb_monolingual_okapi_de": {"lpr,none": 1.0}}
    assert scores_from_results(results, "monolingual", "base") == {("okapi", "de"): {"lpr": 0.5, "wpr": None}}
    assert scores_from_results(results, "monolingual") == {("okapi", "de"): {"lpr": 1.0, "wpr": None}}


def test_a_run_in_the_wrong_form_is_warned_about(loaded):
    def warnings(name: str, has_template: bool | None = None, **chat) -> dict[str, str]:
        task = loaded[name]
        task.build_all_requests(rank=0, world_size=1, **chat)
        return prompt_form_warnings(task.instances, has_template)

    templated = {"apply_chat_template": True, "chat_template": _render}
    chat, base = "lape_lcb_crosslingual_okapi_ja", "lape_lcb_base_crosslingual_okapi_ja"
    assert warnings(chat, **templated) == {} and warnings(base) == {}
    bare = warnings(chat, has_template=False)[chat]
    assert "bare message" in bare and "no chat template" in bare and base in bare and "lape_lcb_base," in bare
    assert "add --apply_chat_template" in warnings(chat, has_template=True)[chat]
    wrapped = warnings(base, **templated)[base]
    assert "inside a chat template" in wrapped and f"run {chat}" in wrapped
    assert prompt_form_warnings([SimpleNamespace(task_name="lape_xnli_de", doc={"prompt": "x"}, args=("x",))], None) == {}


def test_steered_models_warn_once_per_task(loaded, caplog):
    task = loaded["lape_lcb_monolingual_okapi_de"]
    task.build_all_requests(rank=0, world_size=1)
    model = SimpleNamespace(tokenizer=SimpleNamespace(chat_template=None), _warned_tasks=set())
    model._warn_once = lambda name, message: SteeredLM._warn_once(model, name, message)
    with caplog.at_level(logging.WARNING, logger="lape_harness.plugin.steered_lm"):
        SteeredLM._warn_lcb_prompt_forms(model, task.instances)
        SteeredLM._warn_lcb_prompt_forms(model, task.instances)
    assert [record.getMessage().split(" gives")[0] for record in caplog.records] == \
           ["task lape_lcb_monolingual_okapi_de"]
    assert "this model has no chat template" in caplog.records[0].getMessage()
