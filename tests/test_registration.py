"""A plain `lm_eval` sees lape-harness: `hf-steered`, built-in models, our task folder, a cheap and unbreakable start-up.

Most checks run a fresh interpreter of this virtual environment (where lape-harness is installed,
editable or not), because the start-up hook only acts when Python starts.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lape_harness import _boot
from lape_harness.plugin.registration import MODELS, task_folder

MODEL_TARGET = MODELS["hf-steered"]

REPO = Path(__file__).resolve().parents[1]
PTH_SOURCE = REPO / "lape_harness" / "lape_harness.pth"
LM_EVAL = Path(sys.executable).with_name("lm_eval")


def python(code: str, *args: str, env: dict | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter of this environment; fail the test on a non-zero exit."""
    result = subprocess.run([sys.executable, *args, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                            env={**os.environ, **(env or {})}, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def lape_task_names(folder: Path) -> set[str]:
    """Every ``task: lape_...`` name written in the YAML files under ``folder`` (plain text scan)."""
    names = set()
    for path in folder.rglob("*.yaml"):
        names.update(re.findall(r"^task:\s*['\"]?(lape_[\w.-]+)", path.read_text(encoding="utf-8"), re.MULTILINE))
    return names


def test_startup_installs_the_hook_without_importing_torch_or_lm_eval():
    out = python("""
        import sys
        print('torch' in sys.modules, 'lm_eval' in sys.modules, 'transformers' in sys.modules,
              any(type(f).__name__ == 'LmEvalFinder' for f in sys.meta_path))
    """).stdout.split()
    assert out == ["False", "False", "False", "True"]


def test_get_model_finds_hf_steered_and_every_built_in():
    out = python("""
        import importlib.util, inspect
        import lm_eval.api.registry as registry
        from lm_eval.models import MODEL_MAPPING
        print(sorted(set(MODEL_MAPPING) - set(registry.model_registry)))   # built-ins hidden by us?
        print(registry.model_registry._objs['hf-steered'])                 # lazy until first use
        print(registry.model_registry._objs['vllm-steered'])               # lazy: vLLM loads only when asked for
        print(registry.get_model('hf').__name__, registry.get_model('steered').__name__)
        print(len(inspect.getsource(registry)) > 0)                         # the wrapped loader still serves source
        if importlib.util.find_spec('lape_harness.plugin.hf_steered') is not None:
            from lm_eval.models.huggingface import HFLM
            steered = registry.get_model('hf-steered')
            print(steered.__module__ + ':' + steered.__name__, issubclass(steered, HFLM))
        else:
            print('lape_harness.plugin.hf_steered:HFSteeredLM True')  # model module not written yet: the lazy target is checked above
    """).stdout.splitlines()
    assert out[0] == "[]"
    assert out[1] == MODEL_TARGET == "lape_harness.plugin.hf_steered:HFSteeredLM"
    assert out[2] == MODELS["vllm-steered"] == "lape_harness.plugin.vllm_steered:VLLMSteeredLM"
    assert out[3] == "HFLM SteeredModel"
    assert out[4] == "True"
    assert out[5] == f"{MODEL_TARGET} True"


def test_registering_first_does_not_hide_built_ins_even_when_lm_eval_models_comes_first():
    """Importing lm_eval.models first runs the registry hook from inside it; both sets must end up registered."""
    out = python("""
        import lm_eval.models
        from lm_eval.api.registry import model_registry
        print(set(lm_eval.models.MODEL_MAPPING) <= set(model_registry), 'hf-steered' in model_registry)
    """).stdout.split()
    assert out == ["True", "True"]


def test_task_manager_indexes_our_folder_between_lm_eval_and_the_users(tmp_path, monkeypatch):
    from lm_eval.tasks import TaskManager, manager

    assert getattr(TaskManager.__init__, "_lape_harness", False), "the hook did not wrap TaskManager in this process"
    seen: list[list[Path]] = []
    monkeypatch.setattr(manager.TaskIndex, "build", staticmethod(lambda paths, **_: seen.append(list(paths)) or {}))
    builtin = Path(manager.__file__).parent

    TaskManager(include_path=str(tmp_path))
    TaskManager(None, [tmp_path, tmp_path / "b"])                  # positional arguments
    TaskManager(include_path=[str(task_folder()), str(tmp_path)])  # ours given by the user: not twice
    TaskManager(include_path=tmp_path, include_defaults=False)     # "only my folder" stays only that
    assert seen == [
        [builtin, task_folder(), tmp_path],
        [builtin, task_folder(), tmp_path, tmp_path / "b"],
        [builtin, task_folder(), tmp_path],
        [tmp_path],
    ]


def test_task_folder_is_the_checkout_tasks_in_a_source_or_editable_install():
    import lape_harness

    assert Path(lape_harness.__file__).resolve().parent == REPO / "lape_harness", "install with `pip install -e .`"
    assert task_folder() == REPO / "tasks"


@pytest.mark.timeout(180)
def test_lm_eval_ls_tasks_lists_our_tasks_without_include_path():
    expected = lape_task_names(task_folder())
    assert expected, f"no `task: lape_...` YAML under {task_folder()}"
    result = subprocess.run([str(LM_EVAL), "ls", "tasks"], capture_output=True, text=True, timeout=170)
    assert result.returncode == 0, result.stderr[-3000:]
    listed = set(re.findall(r"\blape_[\w.-]+", result.stdout))
    assert expected <= listed, sorted(expected - listed)[:10]


def test_a_failing_hook_warns_once_and_lm_eval_keeps_working():
    result = python("""
        import lape_harness.plugin.registration as registration
        def broken(module):
            raise RuntimeError('simulated plugin bug')
        registration.on_registry = registration.on_task_manager = broken
        from lm_eval.api.registry import get_model, model_registry
        from lm_eval.tasks import TaskManager
        print(get_model('dummy').__name__, 'hf' in model_registry, 'hf-steered' in model_registry,
              getattr(TaskManager.__init__, '_lape_harness', False))
    """, "-W", "always")
    assert result.stdout.split() == ["DummyLM", "True", "False", "False"]
    assert result.stderr.count("RuntimeWarning: lape-harness could not register with lm_eval") == 1
    assert "simulated plugin bug" in result.stderr


def test_a_task_manager_without_the_expected_arguments_is_left_alone_with_one_warning(recwarn):
    """An lm-eval whose TaskManager renamed include_path/include_defaults: no wrapper that would break
    every TaskManager(...), one warning that names the --include_path to pass."""
    import types

    from lape_harness.plugin import registration

    class TaskManager:
        def __init__(self, verbosity=None, paths=None):
            self.paths = paths

    monkey = types.SimpleNamespace(TaskManager=TaskManager)
    original = TaskManager.__init__
    registration.on_task_manager(monkey)
    assert TaskManager.__init__ is original and TaskManager(paths=["x"]).paths == ["x"]
    assert [str(w.message) for w in recwarn if "include_path" in str(w.message)]


def test_the_entry_points_name_the_registered_models():
    """lm-eval releases that read the lm_eval.models entry points find the same classes."""
    import tomllib

    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]["lm_eval.models"]
    assert declared == MODELS


def test_the_variable_switches_the_plugin_off():
    out = python("""
        from lm_eval.api.registry import get_model, model_registry
        print('hf-steered' in model_registry, get_model('dummy').__name__)
    """, env={_boot.DISABLE_VARIABLE: "1"}).stdout.split()
    assert out == ["False", "DummyLM"]


def test_installing_the_hook_after_lm_eval_was_imported_registers_at_once():
    """For interpreters that skip .pth files (``python -S``, ``pip install --target`` + PYTHONPATH)."""
    out = python("""
        import os
        import lm_eval.api.registry as registry
        from lm_eval.tasks import TaskManager
        before = 'hf-steered' in registry.model_registry
        del os.environ['LAPE_HARNESS_DISABLE_PLUGIN']
        import lape_harness._boot as boot
        boot.install()
        print(before, 'hf-steered' in registry.model_registry, 'hf' in registry.model_registry,
              getattr(TaskManager.__init__, '_lape_harness', False))
    """, env={_boot.DISABLE_VARIABLE: "1"}).stdout.split()
    assert out == ["False", "True", "True", "True"]


def test_a_left_over_or_broken_start_up_line_never_breaks_python(tmp_path):
    """The .pth line itself, in a site folder where lape_harness is missing, then where its boot module raises."""
    site_dir = tmp_path / "site"
    site_dir.mkdir()
    shutil.copy(PTH_SOURCE, site_dir / "lape_harness.pth")
    run_site = "import site, sys; site.addsitedir(sys.argv[1]); print('started')"
    args = [sys.executable, "-S", "-c", run_site, str(site_dir)]  # -S: no other site folders, so no lape_harness

    missing = subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert (missing.returncode, missing.stdout.strip(), missing.stderr) == (0, "started", "")

    package = site_dir / "lape_harness"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "_boot.py").write_text("raise RuntimeError('broken boot')\n")
    broken = subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert (broken.returncode, broken.stdout.strip(), broken.stderr) == (0, "started", "")
