import os

import pytest
import torch
from builders import set_with_an_empty_language
from transformers import AutoModelForCausalLM

from lape_harness.identity import model_identity
from lape_harness.neurons import (
    ActivationStats,
    LanguageNeurons,
    NeuronFileError,
    NeuronSet,
)


def _stats():
    generator = torch.Generator().manual_seed(0)
    return ActivationStats(
        ["de", "en"],
        torch.randint(0, 9, (2, 3, 4), generator=generator),
        torch.randn(2, 3, 4, generator=generator, dtype=torch.float64),
        torch.tensor([9, 10]),
        {"seq_len": 16},
    )


def _neuron_set():
    de = LanguageNeurons(torch.tensor([0, 2]), torch.tensor([1, 3]), torch.tensor([0.5, 0.1]),
                         torch.tensor([0.0, -0.2]), torch.tensor([0.9, 0.8]))
    empty = LanguageNeurons(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long),
                            torch.zeros(0), torch.zeros(0), torch.zeros(0))
    return NeuronSet(["de", "en"], 3, 4, {"de": de, "en": empty}, {"model": {"model_id": "tiny"}})


def test_stats_round_trip_and_derived_values(tmp_path):
    stats = _stats()
    stats.save(tmp_path / "stats.safetensors")
    loaded = ActivationStats.load(tmp_path / "stats.safetensors")
    assert loaded.languages == ["de", "en"] and loaded.meta["seq_len"] == 16
    assert loaded.meta["tokens_per_language"] == {"de": 9, "en": 10}
    assert torch.equal(loaded.over_zero, stats.over_zero) and torch.equal(loaded.activation_sum, stats.activation_sum)
    assert loaded.content_hash() == stats.content_hash()
    assert torch.allclose(loaded.probability()[1], stats.over_zero[1].double() / 10)
    assert torch.allclose(loaded.mean_activation()[0], stats.activation_sum[0] / 9)
    assert loaded.select(["en"]).languages == ["en"]
    with pytest.raises(ValueError, match="not in these statistics; they have: de, en"):
        loaded.select(["fr"])


def test_neuron_set_round_trip_keeps_empty_languages(tmp_path):
    neurons = _neuron_set()
    neurons.save(tmp_path / "set.safetensors")
    loaded = NeuronSet.load(tmp_path / "set.safetensors")
    assert loaded.counts() == {"de": 2, "en": 0}
    assert torch.equal(loaded["deu_Latn"].index, torch.tensor([1, 3]))
    assert loaded.content_hash() == neurons.content_hash()
    with pytest.raises(ValueError, match="not in this neuron set; it has: de, en"):
        loaded["fr"]


def test_validate_for_names_what_differs():
    with pytest.raises(NeuronFileError, match="layers: file has 3, the model has 32; MLP width: file has 4"):
        _neuron_set().validate_for(32, 14336)
    _neuron_set().validate_for(3, 4)


@pytest.mark.parametrize("cut", [10, 200, -5])
def test_truncated_or_corrupt_files_are_rejected(tmp_path, cut):
    path = tmp_path / "set.safetensors"
    _neuron_set().save(path)
    data = path.read_bytes()
    path.write_bytes(data[:cut])
    with pytest.raises(NeuronFileError, match="corrupt or truncated"):
        NeuronSet.load(path)


def test_wrong_kind_missing_file_and_foreign_files(tmp_path):
    _stats().save(tmp_path / "stats.safetensors")
    with pytest.raises(NeuronFileError, match="not 'neuron_set'.*lape-harness identify"):
        NeuronSet.load(tmp_path / "stats.safetensors")
    with pytest.raises(NeuronFileError, match="does not exist.*lape-harness profile"):
        ActivationStats.load(tmp_path / "nope.safetensors")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(NeuronFileError, match="not written by lape-harness"):
        NeuronSet.load(tmp_path / "foreign.safetensors")


def test_interrupted_write_leaves_previous_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "stats.safetensors"
    _stats().save(path)
    before = path.read_bytes()

    def explode(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", explode)
    bigger = _stats()
    bigger.meta["seq_len"] = 99
    with pytest.raises(KeyboardInterrupt):
        bigger.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["stats.safetensors"]


def test_model_identity(tiny_llama):
    identity = model_identity(AutoModelForCausalLM.from_pretrained(tiny_llama))
    assert identity["num_layers"] == 2 and identity["width"] == 128 and identity["model_type"] == "llama"
    assert len(identity["config_hash"]) == 16


def test_atomic_writes_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        _neuron_set().save(tmp_path / "set.safetensors")
    finally:
        os.umask(old)
    assert (tmp_path / "set.safetensors").stat().st_mode & 0o777 == 0o644


# a torch file, an empty file, a directory (issue 14, item 11)
def test_neuron_file_errors_say_what_the_file_is(tmp_path):
    torch.save({"de": torch.arange(3)}, tmp_path / "neurons.pt")
    with pytest.raises(NeuronFileError) as error:
        NeuronSet.load(tmp_path / "neurons.pt")
    assert "not a safetensors file written by lape-harness" in str(error.value)
    assert "corrupt" not in str(error.value) and "delete" not in str(error.value) and "zip" in str(error.value)
    (tmp_path / "legacy.pt").write_bytes(b"\x80\x02}q\x00.")
    with pytest.raises(NeuronFileError, match="Python pickle"):
        ActivationStats.load(tmp_path / "legacy.pt")
    (tmp_path / "empty.safetensors").write_bytes(b"")
    with pytest.raises(NeuronFileError, match="it is empty"):
        NeuronSet.load(tmp_path / "empty.safetensors")
    folder = tmp_path / "neuron_cache"
    folder.mkdir()
    set_with_an_empty_language().save(folder / "lape-top1.safetensors")
    with pytest.raises(NeuronFileError, match="is a directory; pass a file inside it .it has: lape-top1.safetensors"):
        NeuronSet.load(folder)
