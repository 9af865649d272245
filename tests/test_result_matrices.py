"""Matrices and pictures from hand-written lm-eval results, checked against hand computations."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from builders import assert_picture

from lape_harness.analysis import result_figures
from lape_harness.analysis.result_matrices import Matrix, dominance, forcing_matrix, ppl_change, ppl_change_matrix
from lape_harness.analysis.results import load_runs
from lape_harness.errors import InputError


def _write_results(folder, name, plan, results):
    args = "pretrained=tiny/model,neurons=n.safetensors" + ("" if plan == "none" else f",steer={plan}")
    (folder / name).write_text(json.dumps({"results": results, "config": {"model_args": args}, "date": 1.0}))


def test_ppl_change_and_forcing_matrices(tmp_path):
    codes = ["en", "de", "ru"]
    base = {"en": 10.0, "de": 20.0, "ru": 40.0}
    off = {"de": {"en": 11.0, "de": 35.0, "ru": 41.0}, "ru": {"en": 10.5, "de": 20.0, "ru": 90.0}}
    _write_results(tmp_path, "none.json", "none", {f"lape_ppl_{c}": {"word_perplexity,none": base[c]} for c in codes})
    for language, values in off.items():
        _write_results(tmp_path, f"off_{language}.json", f"-{language}",
                       {f"lape_ppl_{c}": {"word_perplexity,none": v} for c, v in values.items()})
    rates = {(s, t): (i + 1) / 10 for i, (s, t) in enumerate((s, t) for s in codes for t in codes)}
    _write_results(tmp_path, "forcing.json", "auto",
                   {f"lape_forcing_{s}_to_{t}": {"target_rate,none": r, "clean_target_rate,none": r / 2} for (s, t), r in rates.items()})
    runs = load_runs([tmp_path])

    matrix = ppl_change_matrix(runs, metric="word_perplexity")
    assert matrix.rows == ["-de", "-ru"] and set(matrix.columns) == set(codes)
    numbers = result_figures.plot_ppl_change(matrix, tmp_path / "ppl.png")
    for language, values in off.items():
        for code in codes:
            assert numbers[f"-{language}"][code] == pytest.approx(values[code] / base[code] - 1)
    assert_picture(tmp_path / "ppl.png")

    forcing = forcing_matrix(runs, metric="clean_target_rate")
    numbers = result_figures.plot_forcing(forcing, tmp_path / "forcing.png")
    assert {(s, t): numbers[s][t] for s in codes for t in codes} == pytest.approx({k: r / 2 for k, r in rates.items()})
    assert_picture(tmp_path / "forcing.png")

    with pytest.raises(InputError, match="no forcing results for plan"):
        forcing_matrix(runs, plan="none")
    _write_results(tmp_path, "other.json", "none", {"lape_ppl_en": {"word_perplexity,none": 1.0}})
    (tmp_path / "other.json").write_text((tmp_path / "other.json").read_text().replace("tiny/model", "other/model"))
    with pytest.raises(InputError, match="2 models"):
        ppl_change_matrix(load_runs([tmp_path]), metric="word_perplexity")


def test_ppl_change_and_dominance_match_hand_computation():
    languages = ["en", "de", "fr"]
    ppl = {
        "none": {"en": 10.0, "de": 20.0, "fr": 40.0},
        "-en": {"en": 15.0, "de": 21.0, "fr": 40.0},  # en +50%, de +5%, fr 0%
        "-de": {"en": 11.0, "de": 30.0, "fr": 44.0},  # en +10%, de +50%, fr +10%
        "-fr": {"en": 12.0, "de": 20.0, "fr": 42.0},  # en +20%, de 0%, fr +5%: fr is not its own maximum
    }
    matrix = ppl_change(ppl["none"], {plan: row for plan, row in ppl.items() if plan != "none"})
    change = matrix.take([f"-{code}" for code in languages], languages).values.tolist()
    expected = [[0.5, 0.05, 0.0], [0.1, 0.5, 0.1], [0.2, 0.0, 0.05]]
    assert all(math.isclose(a, b) for row, ref in zip(change, expected) for a, b in zip(row, ref))
    result = dominance(matrix, languages)
    assert result["row_dominance"] == {"en": True, "de": True, "fr": False}
    # column en: -en 0.5 beats 0.1, 0.2; de: -de 0.5 beats 0.05, 0.0; fr: -fr 0.05 loses to -de 0.1.
    assert result["column_dominance"] == {"en": True, "de": True, "fr": False}
    assert math.isclose(result["own_other_ratio"]["en"], 0.5 / 0.025)
    assert math.isclose(result["own_other_ratio"]["de"], 0.5 / 0.1)
    assert math.isclose(result["own_other_ratio"]["fr"], 0.05 / 0.1)
    assert math.isclose(result["median_own_other_ratio"], 5.0)
    assert math.isclose(result["row_dominance_rate"], 2 / 3)
    assert dominance(matrix)["row_dominance"] == result["row_dominance"]  # default: every language with a row


def test_own_other_ratio_when_other_languages_do_not_suffer():
    matrix = Matrix(["-en", "-de"], ["en", "de"], np.array([[0.3, -0.1], [0.0, -0.2]]), "model")
    result = dominance(matrix, ["en", "de"])
    assert result["own_other_ratio"] == {"en": math.inf, "de": 0.0}


def test_ppl_change_takes_only_single_language_deactivations():
    with pytest.raises(InputError, match="deactivate exactly one language"):
        ppl_change({"en": 1.0}, {"-en+de": {"en": 2.0}})
