"""The steer= grammar and the compiled form of plans, against plain per-neuron references (no model)."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from builders import random_neuron_set, set_with_an_empty_language
from references.steering import CASES, reference_edit

from lape_harness.errors import InputError
from lape_harness.steering import AutoPlan, SteerSyntaxError, Term, compile_plan, format_number, parse_steer
from lape_harness.task_support.task_languages import TaskLanguages

# This shared 2-core machine runs several jobs: one thread avoids thread-spin contention (10-100x).
torch.set_num_threads(1)

# ---------------------------------------------------------------------------------------------
# Grammar


@pytest.mark.parametrize(
    "spec, canonical, terms",
    [
        ("de", "+de", [Term("add", "de", 1.0)]),
        ("-de", "-de", [Term("deactivate", "de", 0.0)]),
        ("-de+fr", "-de+fr", [Term("deactivate", "de", 0.0), Term("add", "fr", 1.0)]),
        ("-en-fr-es", "-en-fr-es", [Term("deactivate", x, 0.0) for x in ("en", "fr", "es")]),
        ("+2*de", "+2*de", [Term("add", "de", 2.0)]),
        ("+2de", "+2*de", [Term("add", "de", 2.0)]),
        ("=de", "=de", [Term("replace", "de", 1.0)]),
        ("+0.5*de.diff", "+0.5*de.diff", [Term("add", "de", 0.5, "diff")]),
        ("+de.p", "+de.p", [Term("add", "de", 1.0, "p")]),
        ("*0.5*de", "*0.5*de", [Term("multiply", "de", 0.5)]),
        ("-de=-1.5", "-de=-1.5", [Term("deactivate", "de", -1.5)]),
        ("+-1*de", "+-1*de", [Term("add", "de", -1.0)]),
        ("-de=fr", "-de=fr", [Term("deactivate", "de", 0.0), Term("replace", "fr", 1.0)]),
        ("deu_Latn", "+de", [Term("add", "de", 1.0)]),
        # the paper's order: deactivations, multiplications, then activations as written
        ("+fr*2*de-en=-2.5+es", "-en=-2.5*2*de+fr+es",
         [Term("deactivate", "en", -2.5), Term("multiply", "de", 2.0), Term("add", "fr", 1.0), Term("add", "es", 1.0)]),
    ],
)
def test_grammar_forms(spec, canonical, terms):
    plan = parse_steer(spec)
    assert list(plan.terms) == terms
    assert str(plan) == canonical
    assert parse_steer(canonical) == plan


def test_none_and_auto():
    assert not parse_steer(None) and not parse_steer("none") and str(parse_steer("none")) == "none"
    assert parse_steer("auto") == AutoPlan()
    template = parse_steer("auto:-src=-1.5+2*tgt.diff")
    forcing = template.for_task(TaskLanguages("forcing", "de", "fr"))
    assert str(forcing) == "-de=-1.5+2*fr.diff"
    assert str(template.for_task(TaskLanguages("translation", "en", "fr"))) == "+2*fr.diff"
    assert str(template.for_task(TaskLanguages("monolingual", None, "de"))) == "+2*de.diff"
    default = AutoPlan()
    assert str(default.for_task(TaskLanguages("forcing", "de", "fr"))) == "-de+fr"
    assert str(default.for_task(TaskLanguages("translation", "en", "fr"))) == "+fr"
    assert str(default.for_task(TaskLanguages("monolingual", None, "de"))) == "+de"


@pytest.mark.parametrize(
    "spec, caret_at, words",
    [
        ("-de+", 4, "expected a language code"),
        ("-2*de", 1, "takes no factor"),
        ("*de", 1, "needs a factor"),
        ("+de.x", 4, "unknown value"),
        ("-de.diff", 3, "only applies"),
        ("de fr", 3, "expected '+'"),
        ("-de=", 4, "expected a number"),
        ("auto:+de", 6, "'src' or 'tgt'"),
        ("+tgt", 1, "auto template"),
    ],
)
def test_parse_errors_point_at_the_token(spec, caret_at, words):
    with pytest.raises(SteerSyntaxError) as error:
        parse_steer(spec)
    lines = str(error.value).splitlines()
    assert words in lines[0]
    assert lines[1] == f"  {spec}"
    assert lines[2] == "  " + " " * caret_at + "^"
    assert "valid example: steer=" in str(error.value)


def test_plan_files(tmp_path):
    yaml_file = tmp_path / "plan.yaml"
    yaml_file.write_text("terms:\n  - -en=-1.5\n  - fr\n  - {op: add, language: de, strength: 2, value: diff}\n")
    assert str(parse_steer(str(yaml_file))) == "-en=-1.5+fr+2*de.diff"
    json_file = tmp_path / "plan.json"
    json_file.write_text(json.dumps({"steer": "-de+fr"}))
    assert str(parse_steer(str(json_file))) == "-de+fr"
    bad = tmp_path / "bad.yaml"
    bad.write_text("terms:\n  - {op: scale, language: de}\n")
    with pytest.raises(SteerSyntaxError, match="needs 'op'"):
        parse_steer(str(bad))
    with pytest.raises(SteerSyntaxError, match="does not exist"):
        parse_steer(str(tmp_path / "missing.yaml"))


def test_unknown_language_lists_the_file_languages():
    neurons = random_neuron_set(2, 64)
    with pytest.raises(Exception, match="it has: de, fr, en, es"):
        compile_plan(parse_steer("+ja"), neurons, 2, 64)


# Numbers in the grammar: exponent form, non-finite numbers named (issue 14, item 11)


@pytest.mark.parametrize(
    "spec, canonical",
    [("-de=1e3", "-de=1000"), ("+2.5e-1*fr", "+0.25*fr"), ("+1E2de", "+100*de"), ("-de=-1.5e0", "-de=-1.5"),
     ("+2en", "+2*en"), ("+2e-de", None), ("-de=fr", "-de=fr"), ("+1e20*de", "+1e+20*de")],
)
def test_numbers_in_exponent_form(spec, canonical):
    if canonical is None:  # 2·e then -de: 'e' is no number; it is left to the language check
        assert [t.op for t in parse_steer(spec).terms] == ["deactivate", "add"]
        return
    plan = parse_steer(spec)
    assert str(plan) == canonical
    assert parse_steer(str(plan)) == plan  # the canonical form reads back


@pytest.mark.parametrize(
    "spec, caret_at, words",
    [
        ("-de=abc", 4, ["expected a number after '='", "found 'abc'", "=abc-de"]),
        ("-de=x1", 4, ["found 'x1'"]),
        ("+1e400*de", 1, ["1e400 is not a finite number"]),
        ("-de=1e999", 4, ["1e999 is not a finite number"]),
        ("-de=-1e400", 4, ["not a finite number"]),
        ("*1e309*de", 1, ["not a finite number"]),
    ],
)
def test_number_errors_name_the_number(spec, caret_at, words):
    with pytest.raises(SteerSyntaxError) as error:
        parse_steer(spec)
    lines = str(error.value).splitlines()
    assert lines[1] == f"  {spec}" and lines[2] == "  " + " " * caret_at + "^"
    for word in words:
        assert word in str(error.value)
    assert "factor" not in lines[0]


def test_auto_template_fill_and_replace():
    assert str(parse_steer("auto:-src=tgt")) == "auto:-src=tgt"
    assert str(parse_steer("auto:-src=-1e0+2*tgt")) == "auto:-src=-1+2*tgt"
    with pytest.raises(SteerSyntaxError, match="found 'de'"):
        parse_steer("auto:-src=de+tgt")


# ---------------------------------------------------------------------------------------------
# Compilation equals the per-neuron reference


@pytest.mark.parametrize("spec, steps", CASES)
def test_compiled_edits_equal_reference(spec, steps):
    neurons = random_neuron_set(3, 64, skip_layer=1)
    edits = compile_plan(parse_steer(spec), neurons, 3, 64)
    assert 1 not in edits  # no work at all where the plan has no neurons
    a = torch.randn(2, 5, 64, dtype=torch.float64)
    for layer in (0, 2):
        want = reference_edit(a, layer, steps, neurons)
        got = edits[layer].apply(a.clone())
        torch.testing.assert_close(got, want)
        # the engine-neutral form alone (what another engine reads): a[..., index] ← scale·a + shift
        edit = edits[layer]
        assert edit.index.dtype == torch.int64 and edit.scale.dtype == edit.shift.dtype == torch.float64
        assert edit.scale.shape == edit.shift.shape == edit.index.shape
        assert edit.kind == ("add" if bool((edit.scale == 1).all()) else "set" if bool((edit.scale == 0).all())
                             else "affine")
        by_formula = a.clone()
        by_formula[..., edit.index] = edit.scale * a[..., edit.index] + edit.shift
        torch.testing.assert_close(by_formula, want)


# a language of the plan without neurons in the set (issue 14, item 5)
@pytest.mark.parametrize("spec", ["-fr", "+de-fr", "*0.5*fr", "=fr.diff"])
def test_steering_a_language_without_neurons_is_an_error(spec):
    with pytest.raises(InputError) as error:
        compile_plan(parse_steer(spec), set_with_an_empty_language(), 2, 128)
    for word in ("'fr' has no neurons", "top rate 0.001", "higher top rate"):
        assert word in str(error.value)
    compile_plan(parse_steer("-de"), set_with_an_empty_language(), 2, 128)


@pytest.mark.parametrize("spec", ["-de", "-de+fr", "-en-fr-es", "=de", "-de=-1.5+2*fr.diff", "*0.5*de", "auto",
                                  "auto:-src=-1+2*tgt", "none", "+de.p"])
def test_specs_survive_lm_eval_model_args(spec):
    from lm_eval.utils import simple_parse_args_string

    args = simple_parse_args_string(f"pretrained=some/model,neurons=n.safetensors,steer={spec},steer_scope=all")
    assert parse_steer(args["steer"]) == parse_steer(spec)


def test_format_number_writes_strengths_as_in_a_spec():
    assert [format_number(x) for x in (1.0, 2.0, -1.5, 0.25, 1e-7)] == ["1", "2", "-1.5", "0.25", "1e-07"]
    assert str(parse_steer("-de=-1.5+0.25*fr*3*en")) == "-de=-1.5*3*en+0.25*fr"


def test_parsing_plans_does_not_import_torch():
    import subprocess

    code = "import sys; from lape_harness.steering import parse_steer; parse_steer('-de+2*fr'); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
