"""``HFSteeredLM`` against plain ``HFLM``: identity for ``none``, hand-patched references per method,
bad input before loading, provenance in lm-eval's results, and the request cache on the evaluator
path (the cache itself: test_request_cache.py)."""

from __future__ import annotations

import pytest
import torch
from builders import CONTEXTS, choice_task, lm_requests, random_neuron_set, set_with_an_empty_language
from lm_eval.models.huggingface import HFLM
from references.steering import patch_reference

from lape_harness.errors import InputError
from lape_harness.plugin.hf_steered import HFSteeredLM
from lape_harness.steering import SteerSyntaxError

torch.set_num_threads(1)  # see test_hooks.py

def run_all(lm) -> dict[str, list]:
    kinds = ("loglikelihood", "loglikelihood_rolling", "generate_until")
    return {kind: getattr(lm, kind)(lm_requests(kind)) for kind in kinds}


@pytest.fixture(scope="module")
def plain(tiny_llama):
    return HFLM(pretrained=str(tiny_llama), device="cpu", dtype="float32", batch_size=3)


@pytest.fixture(scope="module")
def steered(tiny_llama, neuron_file):
    return HFSteeredLM(pretrained=str(tiny_llama), device="cpu", dtype="float32", batch_size=3,
                       neurons=str(neuron_file(tiny_llama)), steer="none")


def test_none_is_bit_identical_to_hf(plain, steered):
    steered.set_plan(None)
    assert run_all(steered) == run_all(plain)


def test_none_is_bit_identical_to_hf_gpt2(tiny_gpt2):
    plain = HFLM(pretrained=str(tiny_gpt2), device="cpu", dtype="float32", batch_size=2)
    steered = HFSteeredLM(pretrained=str(tiny_gpt2), device="cpu", dtype="float32", batch_size=2, steer="none")
    assert run_all(steered) == run_all(plain)


@pytest.mark.parametrize(
    "spec, steps",
    [
        ("+3*de", [("add", "de", 3.0, "mean")]),
        ("=fr", [("replace", "fr", 1.0, "mean")]),
        ("+2*es.diff", [("add", "es", 2.0, "diff")]),
        ("*4*de", [("multiply", "de", 4.0, "mean")]),
        ("+de.p-fr=-2.5", [("deactivate", "fr", -2.5, "mean"), ("add", "de", 1.0, "p")]),
        ("+3*fr-de-en", [("deactivate", "de", 0.0, "mean"), ("deactivate", "en", 0.0, "mean"),
                          ("add", "fr", 3.0, "mean")]),
    ],
)
def test_each_method_equals_hand_patched_model(plain, steered, spec, steps):
    neurons = random_neuron_set()
    steered.set_plan(spec)
    try:
        got = run_all(steered)
    finally:
        steered.set_plan("none")
    undo = patch_reference(plain.model, steps, neurons)
    try:
        want = run_all(plain)
    finally:
        undo()
    baseline = run_all(plain)
    assert got["loglikelihood"] != baseline["loglikelihood"]  # the plan does something
    for (got_ll, got_greedy), (want_ll, want_greedy) in zip(got["loglikelihood"], want["loglikelihood"]):
        assert got_ll == pytest.approx(want_ll, rel=1e-5, abs=1e-4) and got_greedy == want_greedy
    assert got["loglikelihood_rolling"] == pytest.approx(want["loglikelihood_rolling"], rel=1e-5, abs=1e-4)
    assert got["generate_until"] == want["generate_until"]


def test_scope_generated_leaves_scoring_alone(tiny_llama, neuron_file, plain):
    lm = HFSteeredLM(pretrained=str(tiny_llama), device="cpu", dtype="float32", batch_size=3,
                     neurons=str(neuron_file(tiny_llama)), steer="-de+3*fr", steer_scope="generated")
    assert lm.loglikelihood(lm_requests("loglikelihood")) == plain.loglikelihood(lm_requests("loglikelihood"))
    assert lm.generate_until(lm_requests("generate_until")) != plain.generate_until(lm_requests("generate_until"))


def test_batch_size_auto_detection_runs_steered(tiny_llama, neuron_file, steered):
    lm = HFSteeredLM(pretrained=str(tiny_llama), device="cpu", dtype="float32", batch_size="auto",
                     max_batch_size=2, max_length=64, neurons=str(neuron_file(tiny_llama)), steer="-de+2*fr")
    calls = []
    original = lm.steering.active

    def recording(generating=False):
        calls.append(dict(lm.steering.edits()))
        return original(generating)

    lm.steering.active = recording
    got = lm.loglikelihood(lm_requests("loglikelihood"))
    assert calls and all(set(edits) == {0, 1} for edits in calls)  # detection and scoring both steered
    steered.set_plan("-de+2*fr")
    try:
        want = steered.loglikelihood(lm_requests("loglikelihood"))
    finally:
        steered.set_plan("none")
    assert [x for x, _ in got] == pytest.approx([x for x, _ in want], rel=1e-5, abs=1e-4)


def test_bad_input_fails_before_loading_weights(neuron_file, tmp_path):
    path = str(neuron_file())
    missing_model = str(tmp_path / "no-such-model")  # loading it would fail: the checks come first
    with pytest.raises(InputError, match="it has: de, fr, en, es"):
        HFSteeredLM(pretrained=missing_model, neurons=path, steer="-de+ja")
    with pytest.raises(SteerSyntaxError, match="expected a language code"):
        HFSteeredLM(pretrained=missing_model, neurons=path, steer="-de+")
    with pytest.raises(InputError, match="needs a neuron set"):
        HFSteeredLM(pretrained=missing_model, steer="-de")
    with pytest.raises(InputError, match="does not exist"):
        HFSteeredLM(pretrained=missing_model, neurons=str(tmp_path / "missing.safetensors"), steer="de")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"not a safetensors file")
    with pytest.raises(InputError, match="corrupt"):
        HFSteeredLM(pretrained=missing_model, neurons=str(corrupt), steer="de")
    with pytest.raises(InputError, match="steer_scope"):
        HFSteeredLM(pretrained=missing_model, steer="none", steer_scope="answer")


def test_neuron_file_for_another_model(tiny_llama, tmp_path):
    other = tmp_path / "other.safetensors"
    random_neuron_set(3, 128).save(other)
    with pytest.raises(InputError, match=r"layers: file has 3, model .* has 2"):
        HFSteeredLM(pretrained=str(tiny_llama), device="cpu", neurons=str(other), steer="de")


def test_signature(steered):
    steered.set_plan("-en=-1.5+2*de.diff")
    try:
        signature = steered.steering_signature()
    finally:
        steered.set_plan("none")
    assert signature["plan"] == "-en=-1.5+2*de.diff"
    assert signature["methods"] == ["deactivate", "diffmean"]
    assert signature["terms"] == [{"op": "deactivate", "language": "en", "fill": -1.5},
                                  {"op": "add", "language": "de", "alpha": 2.0, "value": "diff"}]
    assert signature["neurons_sha256"] == random_neuron_set().content_hash()
    assert signature["signature"].startswith("lape-steer|plan:-en=-1.5+2*de.diff|methods:deactivate,diffmean|scope:all|")


def test_results_record_signature_and_cache_per_plan(steered, tmp_path):
    """The real evaluator path: a local multiple-choice task, --use_cache, two plans."""
    from lm_eval import simple_evaluate
    manager = choice_task(tmp_path, "lape_steer_probe", CONTEXTS)
    outputs = {}
    try:
        for spec in ("+3*de", "-de=-2.5"):
            steered.set_plan(spec)
            results = simple_evaluate(model=steered, tasks=["lape_steer_probe"], task_manager=manager,
                                      use_cache=str(tmp_path / "cache"), log_samples=True)
            assert results["config"]["steering"]["plan"] == spec
            assert results["config"]["steering"]["plans_by_task"] == {"lape_steer_probe": spec}
            outputs[spec] = [sample["resps"] for sample in results["samples"]["lape_steer_probe"]]
    finally:
        steered.set_plan("none")
    assert outputs["+3*de"] != outputs["-de=-2.5"]


def test_steer_bos_false_leaves_the_start_token_alone(tiny_llama, neuron_file, plain):
    """steer_bos=false: every position holding the start token is unedited (log-likelihood, the
    rolling windows' prefix token, generation's prompt), all others as with steer_bos=true; checked
    against a hand-patched model that edits by the input ids."""
    from references.steering import unedited_tokens

    neurons = random_neuron_set()
    steps = [("deactivate", "de", -1.5, "mean"), ("add", "fr", 3.0, "mean")]
    lm = HFSteeredLM(pretrained=str(tiny_llama), device="cpu", dtype="float32", batch_size=3,
                     neurons=str(neuron_file(tiny_llama)), steer="-de=-1.5+3*fr", steer_bos="false")
    assert lm.steering.start_tokens == (lm.tokenizer.bos_token_id,)
    got = run_all(lm)
    everywhere = HFSteeredLM(pretrained=str(tiny_llama), device="cpu", dtype="float32", batch_size=3,
                             neurons=str(neuron_file(tiny_llama)), steer="-de=-1.5+3*fr")
    assert got["loglikelihood_rolling"] != pytest.approx(run_all(everywhere)["loglikelihood_rolling"])
    positions, remove = unedited_tokens(plain.model, [lm.tokenizer.bos_token_id])
    undo = patch_reference(plain.model, steps, neurons, positions)
    try:
        want = run_all(plain)
    finally:
        undo()
        remove()
    for (got_ll, got_greedy), (want_ll, want_greedy) in zip(got["loglikelihood"], want["loglikelihood"]):
        assert got_ll == pytest.approx(want_ll, rel=1e-5, abs=1e-4) and got_greedy == want_greedy
    assert got["loglikelihood_rolling"] == pytest.approx(want["loglikelihood_rolling"], rel=1e-5, abs=1e-4)
    assert got["generate_until"] == want["generate_until"]
    signature = lm.steering_signature()
    assert signature["steer_bos"] is False and "|scope:all|steer_bos:false|" in signature["signature"]
    assert lm.cache_namespace(lm._spec) != everywhere.cache_namespace(everywhere._spec)
    with pytest.raises(InputError, match="steer_bos='maybe' is not true or false"):
        HFSteeredLM(pretrained=str(tiny_llama), steer_bos="maybe")


def test_scope_generated_steers_every_new_token(tiny_llama, neuron_file, plain):
    """generate_until under steer_scope=generated equals a hand-patched model that edits the last
    prompt position in the prefill and every decode step (lm-eval left-pads: the last position is
    every row's last prompt token)."""
    steps = [("deactivate", "de", 0.0, "mean"), ("add", "fr", 3.0, "mean")]
    lm = HFSteeredLM(pretrained=str(tiny_llama), device="cpu", dtype="float32", batch_size=3,
                     neurons=str(neuron_file(tiny_llama)), steer="-de+3*fr", steer_scope="generated")
    got = lm.generate_until(lm_requests("generate_until"))
    undo = patch_reference(plain.model, steps, random_neuron_set(),
                           lambda n: torch.arange(n) == n - 1 if n > 1 else torch.ones(1, dtype=torch.bool))
    try:
        want = plain.generate_until(lm_requests("generate_until"))
    finally:
        undo()
    assert got == want


# a language of the plan without neurons in the set (issue 14, item 5)
def test_hf_steered_and_sweep_refuse_languages_without_neurons_before_loading(tmp_path):
    from lape_harness.plugin.hf_steered import HFSteeredLM
    from lape_harness.studies.sweep import run_sweep

    path = tmp_path / "lape-top0.1.safetensors"
    set_with_an_empty_language().save(path)
    with pytest.raises(InputError, match="'fr' has no neurons"):
        HFSteeredLM(pretrained=str(tmp_path / "no-model"), neurons=str(path), steer="-de+fr")
    with pytest.raises(InputError, match="'fr' has no neurons"):
        run_sweep(f"pretrained={tmp_path / 'no-model'},neurons={path}", ["none", "-fr"], ["t"], tmp_path / "out")
