"""A neuron set made for another model (same layer count and width, other name and configuration)
is an error before the weights load, unless allowed on purpose; the same configuration under
another name is a warning (``lape_harness.identity``, ``NeuronSet.check_model``; issue 14, item 3)."""

from __future__ import annotations

import json

import pytest

from lape_harness.errors import InputError


@pytest.fixture(scope="module")
def other_llama(tiny_llama, tmp_path_factory):
    """The tiny Llama's weights under another name with another configuration (same shapes)."""
    import shutil

    other = tmp_path_factory.mktemp("models") / "other-llama"
    shutil.copytree(tiny_llama, other)
    config = json.loads((other / "config.json").read_text())
    config["rms_norm_eps"] = 1e-5
    (other / "config.json").write_text(json.dumps(config))
    return other


def test_neuron_set_for_another_model_is_refused_before_the_weights_load(tiny_llama, other_llama,
                                                                           neuron_file, tmp_path, caplog):
    import shutil

    from lape_harness.neurons import NeuronFileError
    from lape_harness.plugin.hf_steered import HFSteeredLM

    tiny_llama_neurons = neuron_file(tiny_llama)
    config_only = tmp_path / "other-llama"  # no weights: only a check before the load can answer
    shutil.copytree(other_llama, config_only, ignore=shutil.ignore_patterns("*.safetensors"))
    with pytest.raises(NeuronFileError) as error:
        HFSteeredLM(pretrained=str(config_only), neurons=str(tiny_llama_neurons), steer="-de", device="cpu")
    message = str(error.value)
    for word in ("made for another model", str(tiny_llama), str(config_only), "config hash", "allow_other_model=True"):
        assert word in message
    with pytest.raises(InputError, match="allow_other_model=True or False"):
        HFSteeredLM(pretrained=str(config_only), neurons=str(tiny_llama_neurons), allow_other_model="yes")
    # on purpose: it runs, with a warning that names both models
    with caplog.at_level("WARNING"):
        lm = HFSteeredLM(pretrained=str(other_llama), neurons=str(tiny_llama_neurons), steer="-de", device="cpu",
                         dtype="float32", allow_other_model=True)
    assert "used anyway" in caplog.text and str(other_llama) in caplog.text
    # the same model: no word; a file for another model switched in later: the same error
    caplog.clear()
    with caplog.at_level("WARNING"):
        right = HFSteeredLM(pretrained=str(tiny_llama), neurons=str(tiny_llama_neurons), steer="-de", device="cpu",
                            dtype="float32")
    assert "another model" not in caplog.text
    other_neurons = tmp_path / "other.safetensors"
    from lape_harness.neurons import NeuronSet

    moved = NeuronSet.load(tiny_llama_neurons)
    moved.meta["model"] = {**moved.meta["model"], "model_id": "org/another-model", "config_hash": "0" * 16}
    moved.save(other_neurons)
    with pytest.raises(NeuronFileError, match="another model"):
        right.set_neurons(str(other_neurons))
    lm.set_neurons(str(other_neurons))  # allowed on purpose


def test_same_configuration_under_another_name_is_a_warning(tiny_llama, neuron_file, tmp_path, caplog):
    import shutil

    from lape_harness.plugin.hf_steered import HFSteeredLM

    tiny_llama_neurons = neuron_file(tiny_llama)
    copy = tmp_path / "my-llama-copy"
    shutil.copytree(tiny_llama, copy)
    with caplog.at_level("WARNING"):
        HFSteeredLM(pretrained=str(copy), neurons=str(tiny_llama_neurons), steer="-de", device="cpu", dtype="float32")
    assert "may be for another model" in caplog.text and "my-llama-copy" in caplog.text


def test_bake_and_sweep_refuse_a_neuron_set_for_another_model(tiny_llama, other_llama, neuron_file, tmp_path,
                                                              capsys):
    from lape_harness.cli import main
    from lape_harness.studies.sweep import run_sweep

    tiny_llama_neurons = neuron_file(tiny_llama)
    argv = ["bake", "--model", str(other_llama), "--neurons", str(tiny_llama_neurons), "--steer=-de",
            "--out", str(tmp_path / "baked")]
    assert main(argv) == 2
    assert "made for another model" in capsys.readouterr().err and not (tmp_path / "baked").exists()
    assert main(argv + ["--allow-other-model"]) == 0
    with pytest.raises(InputError, match="made for another model"):
        run_sweep(f"pretrained={other_llama},neurons={tiny_llama_neurons}", ["-de"], ["t"], tmp_path / "sweep")
    with pytest.raises(InputError, match="made for another model"):  # a PLAN@FILE set, before the model loads
        run_sweep(f"pretrained={other_llama}", [f"-de@{tiny_llama_neurons}"], ["t"], tmp_path / "sweep")
    assert not (tmp_path / "sweep").exists()
