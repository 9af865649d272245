"""Hostile inputs (issue 14): no silent wrong results, and every error caught before the work starts.

One section per item of the issue; each error names the problem and the fix.
"""

from __future__ import annotations

import json

import pytest

from lape_harness.errors import InputError
from lape_harness.steering import SteerSyntaxError, Term, parse_steer
from steering_reference import CASES

# ---------------------------------------------------------------------------------------------
# 1 + 4 + 5: plan files are strict, read the results JSON's term format, refuse NaN/inf and []


def _plan_file(tmp_path, content, suffix=".yaml"):
    path = tmp_path / f"plan{suffix}"
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("spec", [spec for spec, _ in CASES] + ["-de=-1.5+2*fr.diff*0.5*en=es.p"])
def test_plan_file_replays_the_results_json_terms(tmp_path, spec):
    plan = parse_steer(spec)
    described = [term.describe() for term in plan.terms]  # what the results JSON records
    assert parse_steer(_plan_file(tmp_path, {"terms": described}, ".json")) == plan
    assert parse_steer(_plan_file(tmp_path, json.dumps({"terms": described}), ".yaml")) == plan


def test_plan_file_results_term_format_sets_the_strengths(tmp_path):
    path = _plan_file(tmp_path, "terms:\n  - {op: deactivate, language: de, fill: -1.5}\n"
                                "  - {op: add, language: fr, alpha: 3.0}\n  - {op: multiply, language: en, beta: 0.5}\n")
    assert list(parse_steer(path).terms) == [Term("deactivate", "de", -1.5), Term("multiply", "en", 0.5),
                                             Term("add", "fr", 3.0)]


@pytest.mark.parametrize(
    "content, words",
    [
        ("terms:\n  - {op: add, language: de, strenght: 2}\n", ["unknown key(s) 'strenght'", "'strength'", "alpha"]),
        ("terms:\n  - {op: add, language: de, scale: 2}\n", ["unknown key(s) 'scale'", "beta (multiply)"]),
        ("terms:\n  - {op: add, language: de, fill: 2}\n", ["'fill' is the strength of another op", "'alpha'"]),
        ("terms:\n  - {op: deactivate, language: de, alpha: 2}\n", ["another op", "'fill'"]),
        ("terms:\n  - {op: add, language: de, alpha: 2, strength: 3}\n", ["strength twice"]),
        ("terms:\n  - {op: multiply, language: de}\n", ["needs its factor"]),
        ("terms:\n  - {op: add, language: no}\n", ["quote it"]),
        ("terms:\n  - -de\nname: my plan\n", ["exactly one of the keys 'steer'", "'name'"]),
        ("term:\n  - -de\n", ["exactly one of the keys", "did you mean 'term' → 'terms'"]),
        ("steer: -de\nterms: [-fr]\n", ["exactly one of the keys"]),
        ("plan: -de\nmethods: [deactivate]\n", ["replay a run", "config.steering.terms"]),
        # 4: non-finite strengths
        ("terms:\n  - {op: add, language: de, strength: .nan}\n", ["finite"]),
        ("terms:\n  - {op: add, language: de, alpha: .inf}\n", ["finite"]),
        ("terms:\n  - {op: deactivate, language: de, fill: -.inf}\n", ["finite"]),
        ("terms:\n  - {op: multiply, language: de, beta: true}\n", ["must be a number"]),
        # 5: an empty plan is an error, as an empty steer= is
        ("terms: []\n", ["at least one term", "steer: none"]),
        ("terms:\n", ["at least one term"]),
        ("steer: ''\n", ["'steer' must be a spec"]),
    ],
)
def test_plan_file_schema_is_strict(tmp_path, content, words):
    with pytest.raises(SteerSyntaxError) as error:
        parse_steer(_plan_file(tmp_path, content))
    for word in words:
        assert word in str(error.value)
    assert "plan.yaml" in str(error.value)


def test_plan_file_json_nan_and_directory(tmp_path):
    path = tmp_path / "plan.json"
    path.write_text('{"terms": [{"op": "add", "language": "de", "alpha": NaN}]}')
    with pytest.raises(SteerSyntaxError, match="finite"):
        parse_steer(str(path))
    folder = tmp_path / "plans.yaml"
    folder.mkdir()
    with pytest.raises(SteerSyntaxError, match="is a directory"):
        parse_steer(str(folder))
    with pytest.raises(SteerSyntaxError, match="is a directory"):
        parse_steer(str(tmp_path) + "/")
    latin1 = tmp_path / "latin.yaml"
    latin1.write_bytes("steer: -de  # Übung\n".encode("latin-1"))
    with pytest.raises(SteerSyntaxError, match="not UTF-8"):
        parse_steer(str(latin1))


def test_empty_steer_is_an_error_like_an_empty_plan_file():
    with pytest.raises(SteerSyntaxError, match="no terms"):
        parse_steer("")


# ---------------------------------------------------------------------------------------------
# 11: numbers in the grammar


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
