"""The wheel ships the start-up hook and the task YAMLs; installed as a wheel or editable, lm_eval sees both.

Builds with ``pip wheel --no-build-isolation`` (hatchling comes with the ``test`` extra; no network),
and installs into throwaway virtual environments that see this environment's packages (torch,
lm_eval) through a path entry, so nothing is downloaded and only lape-harness itself is installed.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PTH_SOURCE = REPO / "lape_harness" / "lape_harness.pth"

# Run inside the throwaway environment: what a user's fresh interpreter sees.
PROBE = """
import sys
heavy = [name for name in ('torch', 'transformers', 'lm_eval') if name in sys.modules]
import lape_harness
import lm_eval.api.registry as registry
from lm_eval.tasks import TaskManager
from lm_eval.tasks._index import TaskIndex
from lape_harness.plugin.registration import task_folder
print(heavy)
print(lape_harness.__file__)
print(task_folder())
print(registry.model_registry._objs.get('hf-steered'), 'hf' in registry.model_registry)
print(getattr(TaskManager.__init__, '_lape_harness', False))
print(' '.join(sorted(name for name in TaskIndex.build([task_folder()]) if name.startswith('lape_'))))
"""


def lape_task_names(folder: Path) -> set[str]:
    """Every ``task: lape_...`` name written in the YAML files under ``folder`` (plain text scan)."""
    names = set()
    for path in folder.rglob("*.yaml"):
        names.update(re.findall(r"^task:\s*['\"]?(lape_[\w.-]+)", path.read_text(encoding="utf-8"), re.MULTILINE))
    return names


def require_hatchling() -> None:
    assert importlib.util.find_spec("hatchling"), "the packaging tests build offline with hatchling: pip install -e '.[test]'"


def run(*command, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True, timeout=240, **kwargs)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-3000:])
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    require_hatchling()
    out = tmp_path_factory.mktemp("wheel")
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", out, REPO)
    (built,) = out.glob("lape_harness-*.whl")
    return built


def throwaway_venv(path: Path) -> Path:
    """A venv without pip that sees this environment's packages after its own; returns its python."""
    run(sys.executable, "-m", "venv", "--without-pip", path)
    python = path / "bin" / "python"
    purelib = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
    Path(purelib, "zz_lape_test_host_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def install(python: Path, *what) -> None:
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
        "--no-build-isolation", "-q", *what)


def probe(python: Path, cwd: Path) -> list[str]:
    return run(python, "-c", textwrap.dedent(PROBE), cwd=cwd, env={**os.environ, "PYTHONPATH": ""}).stdout.splitlines()


def test_wheel_contains_the_hook_and_every_task_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert zipfile.ZipFile(wheel).read("lape_harness.pth") == PTH_SOURCE.read_bytes()
    assert {"lape_harness/_boot.py", "lape_harness/plugin/registration.py"} <= names
    assert "lape_harness/lape_harness.pth" not in names  # a .pth only acts at the site-packages root
    task_files = {f"lape_harness/tasks/{path.relative_to(REPO / 'tasks').as_posix()}"
                  for path in (REPO / "tasks").rglob("*") if path.is_file() and "__pycache__" not in path.parts}
    assert any(name.endswith(".yaml") for name in task_files)
    assert task_files <= names, sorted(task_files - names)[:5]
    assert not [name for name in names if "__pycache__" in name]


@pytest.mark.timeout(300)
def test_installed_wheel_registers_model_and_tasks(wheel, tmp_path):
    python = throwaway_venv(tmp_path / "venv")
    install(python, wheel)
    heavy, package, folder, model, wrapped, tasks = probe(python, cwd=tmp_path)
    site_packages = tmp_path / "venv" / "lib"
    assert heavy == "[]"
    assert Path(package).is_relative_to(site_packages)
    assert Path(folder) == Path(package).parent / "tasks"
    assert (model, wrapped) == ("lape_harness.plugin.hf_steered:HFSteeredLM True", "True")
    expected = lape_task_names(REPO / "tasks")
    assert expected and expected <= set(tasks.split())
    listed = run(python, "-m", "lm_eval", "ls", "tasks", cwd=tmp_path).stdout  # the plain CLI, no --include_path
    assert expected <= set(re.findall(r"\blape_[\w.-]+", listed))


@pytest.mark.timeout(300)
def test_editable_install_registers_model_and_the_checkout_tasks(tmp_path):
    require_hatchling()
    python = throwaway_venv(tmp_path / "venv")
    install(python, "-e", REPO)
    heavy, package, folder, model, wrapped, tasks = probe(python, cwd=tmp_path)
    assert heavy == "[]"
    assert Path(package) == REPO / "lape_harness" / "__init__.py"
    assert Path(folder) == REPO / "tasks"
    assert (model, wrapped) == ("lape_harness.plugin.hf_steered:HFSteeredLM True", "True")
    expected = lape_task_names(REPO / "tasks")
    assert expected and expected <= set(tasks.split())
