"""`lape-harness bake`: baked checkpoints give the logits of the steering hooks with the same plan."""

from __future__ import annotations

import json

import pytest
import torch
from builders import planted_stats, random_neuron_set
from transformers import AutoModelForCausalLM

from lape_harness.cli import main
from lape_harness.errors import InputError
from lape_harness.neurons import NeuronFileError, NeuronSet
from lape_harness.sites import find_sites
from lape_harness.steering import SteeringHooks, parse_steer
from lape_harness.steering.bake import bake_checkpoint, bake_model

WIDTH = 128  # the tiny models' MLP width


@pytest.fixture(params=["tiny_llama", "tiny_gpt2"])
def tiny(request, neuron_file):
    path = request.getfixturevalue(request.param)
    return path, neuron_file(path)


def logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def input_ids(model):
    g = torch.Generator().manual_seed(1)
    return torch.randint(5, model.config.vocab_size, (2, 12), generator=g)


@pytest.mark.parametrize("plan", ["-de", "*0.5*fr", "-de*0.5*fr*-2*en"])
def test_baked_logits_equal_steered_logits(tiny, tmp_path, plan):
    path, neurons_path = tiny
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    ids = input_ids(model)
    plain = logits(model, ids)
    hooks = SteeringHooks(model, NeuronSet.load(neurons_path))
    hooks.use(parse_steer(plan))
    with hooks.active():
        steered = logits(model, ids)
    hooks.remove()
    assert not torch.allclose(plain, steered, atol=1e-4), "the plan should change the logits"

    out = tmp_path / "baked"
    record = bake_checkpoint(str(path), neurons_path, plan, out)
    baked = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    torch.testing.assert_close(logits(baked, ids), steered, atol=1e-5, rtol=1e-5)
    assert record["plan"] == str(parse_steer(plan))
    on_disk = json.loads((out / "lape_harness_bake.json").read_text())
    assert on_disk["neurons_hash"] == NeuronSet.load(neurons_path).content_hash()
    assert json.loads((out / "config.json").read_text())["lape_harness_bake"]["plan"] == record["plan"]
    assert (out / "tokenizer.json").exists() or (out / "tokenizer_config.json").exists()


def test_only_the_plans_columns_change(tiny_llama, tiny_gpt2):
    neurons = random_neuron_set()
    zeroed, halved = ({(int(l), int(j)) for l, j in zip(neurons[lang].layer, neurons[lang].index)} for lang in ("de", "fr"))
    for path in (tiny_llama, tiny_gpt2):
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        before = [site.down_proj.weight.detach().clone() for site in find_sites(model)]
        bake_model(model, neurons, "-de*0.5*fr")
        for layer, site in enumerate(find_sites(model)):
            weight = site.down_proj.weight.detach()
            inputs_first = type(site.down_proj).__name__ == "Conv1D"  # GPT-2: [in, out]
            for j in range(WIDTH):
                factor = (0.0 if (layer, j) in zeroed else 1.0) * (0.5 if (layer, j) in halved else 1.0)
                new, old = (weight[j], before[layer][j]) if inputs_first else (weight[:, j], before[layer][:, j])
                torch.testing.assert_close(new, old * factor)


@pytest.mark.parametrize("plan, word", [
    ("+de", "'+de'"), ("=fr", "'=fr'"), ("+de.diff", "'+de.diff'"), ("+2*de.p", "'+2*de.p'"),
    ("-de=-1.5", "'-de=-1.5'"), ("-de+fr", "'+fr'"), ("auto", "per task"), ("none", "changes nothing"),
])  # fmt: skip
def test_refuses_plans_that_cannot_be_folded(tiny_llama, tmp_path, capsys, plan, word):
    neurons_path = tmp_path / "set.safetensors"
    random_neuron_set().save(neurons_path)
    out = tmp_path / "baked"
    argv = ["bake", "--model", str(tiny_llama), "--neurons", str(neurons_path), f"--steer={plan}", "--out", str(out)]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert word in error
    assert not out.exists()


def test_bad_neurons_and_existing_output(tiny_llama, tmp_path, capsys):
    wrong = tmp_path / "wrong.safetensors"
    random_neuron_set(3, 64).save(wrong)
    with pytest.raises(NeuronFileError, match="layers"):
        bake_checkpoint(str(tiny_llama), wrong, "-de", tmp_path / "out")
    stats_file = tmp_path / "stats.safetensors"
    planted_stats()[0].save(stats_file)
    with pytest.raises(NeuronFileError, match="not the statistics file"):
        bake_checkpoint(str(tiny_llama), stats_file, "-de", tmp_path / "out")
    stats_file.unlink()
    right = tmp_path / "right.safetensors"
    random_neuron_set().save(right)
    with pytest.raises(InputError, match="not in this neuron set"):
        bake_checkpoint(str(tiny_llama), right, "-ja", tmp_path / "out")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    argv = ["bake", "--model", str(tiny_llama), "--neurons", str(right), "--steer=-de", "--out", str(tmp_path / "taken")]
    assert main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(argv + ["--overwrite"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert not (tmp_path / "taken" / "file").exists() and (tmp_path / "taken" / "config.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["right.safetensors", "taken", "wrong.safetensors"]


def test_baked_model_matches_hf_steered(tiny_llama, tmp_path):
    from lape_harness.plugin.hf_steered import HFSteeredLM

    neurons_path = tmp_path / "set.safetensors"
    random_neuron_set().save(neurons_path)
    plan = "-en*0.25*de"
    lm = HFSteeredLM(pretrained=str(tiny_llama), neurons=str(neurons_path), steer=plan, device="cpu",
                     dtype="float32", batch_size=1)  # fmt: skip
    ids = input_ids(lm.model)
    with torch.no_grad():
        steered = lm._model_call(ids)
    bake_checkpoint(str(tiny_llama), neurons_path, plan, tmp_path / "baked")
    baked = AutoModelForCausalLM.from_pretrained(tmp_path / "baked", dtype=torch.float32).eval()
    torch.testing.assert_close(logits(baked, ids), steered, atol=1e-5, rtol=1e-5)


# the baked checkpoint's folder permissions (issue 14, item 12)
def test_baked_checkpoint_folder_follows_the_umask(tiny_llama, tmp_path):
    import os

    neurons = tmp_path / "set.safetensors"
    random_neuron_set(2, 128).save(neurons)
    old = os.umask(0o022)
    try:
        bake_checkpoint(str(tiny_llama), neurons, "-de", tmp_path / "baked")
    finally:
        os.umask(old)
    assert (tmp_path / "baked").stat().st_mode & 0o777 == 0o755
    assert NeuronSet.load(neurons)  # untouched
