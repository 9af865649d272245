import subprocess
import sys

import pytest

from lape_harness.cli import _ORDER, build_parser, main

SUBCOMMANDS = list(_ORDER)


def test_every_subcommand_is_listed_in_order():
    actions = [a for a in build_parser()._actions if a.dest == "command"]
    assert list(actions[0].choices) == SUBCOMMANDS


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_help_explains_every_flag(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert f"usage: lape-harness {name}" in text
    parser = dict(build_parser()._actions[-1].choices)[name]
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, f"{name} {action.option_strings} has no help text"


def test_input_errors_are_one_line_and_exit_2(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "missing.safetensors")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "does not exist" in err[0]


def test_help_does_not_import_torch():
    code = "import sys; from lape_harness.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
