"""Plan files (``lape_harness.steering.plan_file``) are strict: they read the term format the results
JSON records, refuse non-finite strengths and an empty plan (as an empty ``steer=`` is refused),
and name the file in every error (issue 14, items 1, 4 and 5)."""

from __future__ import annotations

import json

import pytest
from builders import write_plan_file
from references.steering import CASES

from lape_harness.steering import SteerSyntaxError, Term, parse_steer


@pytest.mark.parametrize("spec", [spec for spec, _ in CASES] + ["-de=-1.5+2*fr.diff*0.5*en=es.p"])
def test_plan_file_replays_the_results_json_terms(tmp_path, spec):
    plan = parse_steer(spec)
    described = [term.describe() for term in plan.terms]  # what the results JSON records
    assert parse_steer(write_plan_file(tmp_path, {"terms": described}, ".json")) == plan
    assert parse_steer(write_plan_file(tmp_path, json.dumps({"terms": described}), ".yaml")) == plan


def test_plan_file_results_term_format_sets_the_strengths(tmp_path):
    path = write_plan_file(tmp_path, "terms:\n  - {op: deactivate, language: de, fill: -1.5}\n"
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
        parse_steer(write_plan_file(tmp_path, content))
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
