"""The shape of the package: wings that import one way, a thin CLI, short modules, a lazy front door,
and the house style (``ruff check``, configured in pyproject.toml)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lape_harness"
#: wing of each sub-package; modules at the package root are the ground floor and the method (rank 0).
WING_RANKS = {"steering": 1, "task_support": 2, "plugin": 3, "analysis": 4, "studies": 5, "demo": 6, "cli": 6}
#: the longest a module may grow before it is split by concern.
MAX_LINES = 420


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path) -> set[str]:
    """The lape_harness modules ``path`` imports (anywhere in the file, deferred imports included)."""
    found = set()
    known = modules()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lape_harness"):
            for alias in node.names:  # `from lape_harness.plugin import registration` names a module
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in known else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("lape_harness"))
    return found - {"lape_harness"}


#: root modules that stand for a wing: the start-up hook hands lm-eval to plugin.registration, and
#: ``python -m lape_harness`` is the CLI.
ROOT_MODULE_RANKS = {"lape_harness._boot": WING_RANKS["plugin"], "lape_harness.__main__": WING_RANKS["cli"]}


def wing_rank(name: str) -> int:
    parts = name.split(".")
    if name in ROOT_MODULE_RANKS:
        return ROOT_MODULE_RANKS[name]
    return WING_RANKS.get(parts[1], 0) if len(parts) > 1 else 0


def test_wings_import_only_the_wings_below_them():
    upward = []
    for name, path in modules().items():
        for target in imports(path):
            if wing_rank(target) > wing_rank(name) and not (name.startswith("lape_harness.demo")
                                                             and target.startswith("lape_harness.cli")):
                upward.append(f"{name} -> {target}")
    # the only exception: the package's front door names objects of every wing, loaded lazily
    assert [edge for edge in upward if not edge.startswith("lape_harness -> ")] == []


def test_no_import_circle():
    graph = {name: {target for target in imports(path) if target in modules()} for name, path in modules().items()}
    graph["lape_harness"] = set()  # the front door's lazy names are not imports at load time
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                pytest.fail("import circle: " + " -> ".join([*trail[trail.index(target):], target]))
            if target not in state:
                visit(target, [*trail, target])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_the_cli_never_imports_another_cli_module():
    crossing = [f"{name} -> {target}" for name, path in modules().items() if name.startswith("lape_harness.cli.")
                for target in imports(path) if target.startswith("lape_harness.cli")]
    assert crossing == []


def test_modules_stay_short():
    long = {name: lines for name, path in modules().items()
            if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}


def test_every_package_says_what_lives_there():
    for init in PACKAGE.rglob("__init__.py"):
        docstring = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert docstring and len(docstring) > 80, f"{init.relative_to(ROOT)} needs a docstring naming its concern"


def test_the_front_door_loads_nothing_heavy_until_used():
    heavy = "print(sorted(name for name in ('torch', 'lm_eval', 'transformers', 'vllm') if name in sys.modules))"
    light = "import sys\nfrom lape_harness import InputError, LapeError, parse_steer\nparse_steer('+fr-de')\n" + heavy
    used = "import sys\nfrom lape_harness import HFSteeredLM, NeuronSet, identify, parse_steer\n" + heavy
    for code, expected in ((light, "[]"), (used, "['lm_eval', 'torch', 'transformers']")):
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.strip() == expected


def test_the_code_follows_the_house_style():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.fail("ruff is not installed: pip install -e '.[test]' installs it")
    result = subprocess.run([ruff, "check", "--no-cache", str(ROOT)], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_no_test_module_imports_another():
    """Shared builders live in tests/builders.py, fixtures in conftest.py, references in tests/references/."""
    tests = Path(__file__).resolve().parent
    names = {path.stem for path in tests.glob("test_*.py")}
    crossing = []
    for path in tests.glob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in names:
                crossing.append(f"{path.name} -> {node.module}")
            elif isinstance(node, ast.Import):
                crossing += [f"{path.name} -> {alias.name}" for alias in node.names if alias.name.split(".")[0] in names]
    assert crossing == []
