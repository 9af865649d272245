"""Neuron-restricted fine-tuning: only the language's neuron weights move (every tensor compared
element-wise), the loss goes down, and a resumed run continues exactly like an uninterrupted one."""

from __future__ import annotations

import json

import pytest
import torch
from builders import SAMPLE_TEXT, load_pretrained, random_neuron_set
from references.finetune import trainable_mask

from lape_harness.cli import main
from lape_harness.errors import InputError
from lape_harness.studies.finetune import attach, merge, train


def _rows(tokenizer, length=16):
    ids = tokenizer(" ".join(SAMPLE_TEXT.values()) * 3, add_special_tokens=False)["input_ids"]
    return torch.tensor([ids[i:i + length] for i in range(0, len(ids) - length, length)])


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2"])
def test_a_step_changes_only_the_languages_neuron_weights(fixture, request):
    model, tokenizer = load_pretrained(request.getfixturevalue(fixture))
    neurons = random_neuron_set(model.config.num_hidden_layers, 128, per_layer=5)["de"]
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    mask = trainable_mask(model, neurons)
    deltas = attach(model, neurons)
    train(model, deltas, _rows(tokenizer), steps=2, batch_size=2, lr=0.05, weight_decay=0.5, seed=0, progress=False)
    merge(model)
    after = model.state_dict()
    assert sorted(after) == sorted(before)  # plain parameters again, same names
    trained = [name for name in mask if mask[name].any()]
    assert len(trained) == 3 * model.config.num_hidden_layers  # gate, up, down (GPT-2: c_fc weight and bias, c_proj)
    for name, tensor in after.items():
        changed = tensor != before[name]
        assert not (changed & ~mask[name]).any(), f"{name} changed outside the neurons' entries"
        if name in trained and name.endswith("weight"):
            assert changed[mask[name]].float().mean() > 0.9, f"{name}: the neurons' entries did not train"
    assert all(not parameter.requires_grad for parameter in model.parameters())


def test_loss_goes_down(tiny_llama):
    model, tokenizer = load_pretrained(tiny_llama)
    deltas = attach(model, random_neuron_set(2, 128, per_layer=40)["fr"])
    state = train(model, deltas, _rows(tokenizer), steps=40, batch_size=4, lr=0.03, seed=1, progress=False)
    assert sum(state.losses[-5:]) / 5 < sum(state.losses[:5]) / 5 - 0.3  # 5.9 -> 5.4 nats when measured


def test_a_resumed_run_continues_identically(tiny_llama, tmp_path):
    neurons = random_neuron_set(2, 128, per_layer=8)["en"]

    def run(folder, on_step=None):
        model, tokenizer = load_pretrained(tiny_llama)
        deltas = attach(model, neurons)
        state = train(model, deltas, _rows(tokenizer), steps=6, batch_size=3, lr=0.01, weight_decay=0.1, seed=3,
                      checkpoint_dir=folder, progress=False, on_step=on_step, run={"test": 1})
        return state, [delta.detach().clone() for delta in deltas]

    straight, straight_deltas = run(tmp_path / "a")

    def stop(state):
        if state.step == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", stop)
    resumed, resumed_deltas = run(tmp_path / "b")
    assert resumed.losses == straight.losses
    assert all(torch.equal(a, b) for a, b in zip(straight_deltas, resumed_deltas))
    with pytest.raises(InputError, match="other settings"):
        model, tokenizer = load_pretrained(tiny_llama)
        train(model, attach(model, neurons), _rows(tokenizer), steps=6, batch_size=2, lr=0.01, seed=3,
              checkpoint_dir=tmp_path / "b", progress=False, run={"test": 1})


def test_finetune_cli_writes_a_checkpoint_that_loads(tiny_llama, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "de.txt").write_text("\n\n".join([SAMPLE_TEXT["de"]] * 30), encoding="utf-8")
    heldout = tmp_path / "heldout.txt"
    heldout.write_text(SAMPLE_TEXT["de"] + "\n\n" + SAMPLE_TEXT["de"][::-1], encoding="utf-8")
    neuron_set = random_neuron_set(2, 128, per_layer=6)
    neuron_set.save(tmp_path / "n.safetensors")
    out = tmp_path / "tuned"
    argv = ["finetune", "--model", str(tiny_llama), "--neurons", str(tmp_path / "n.safetensors"), "--language", "de",
            "--corpus", str(corpus), "--heldout", str(heldout), "--steps", "5", "--seq-len", "16", "--batch-size", "2",
            "--lr", "0.01", "--out", str(out), "--no-progress", "--allow-other-model"]
    assert main(argv) == 0
    record = json.loads((out / "lape_harness_finetune.json").read_text())
    assert record["steps"] == 5 and len(record["losses"]) == 5 and record["neuron_count"] == 12
    assert record["heldout_token_perplexity"]["after"] != record["heldout_token_perplexity"]["before"]
    assert not (tmp_path / "tuned.partial").exists()
    original, _ = load_pretrained(tiny_llama)
    tuned, _ = load_pretrained(out)
    mask = trainable_mask(original, neuron_set["de"])
    tuned_state = tuned.state_dict()
    for name, tensor in original.state_dict().items():
        assert not ((tuned_state[name] != tensor) & ~mask[name]).any()
    assert main(argv) == 2  # --out is not empty
    assert main([*argv[:8], "ru", *argv[9:], "--overwrite"]) == 2  # a language the set lacks


def test_the_authors_recipe_clipping_and_weight_decay_on_the_weights(tiny_llama):
    """decay_on="weights" with max_grad_norm=1.0 equals the authors' recipe written out here: the
    neuron entries themselves are the trained parameters (src/finetune.py of
    d-gurgurov/Language-Neurons-Manipulation@d5c7519), clip_grad_norm_(1.0), AdamW(weight_decay)."""
    from lape_harness.studies.finetune import batch_rows

    neurons = random_neuron_set(2, 128, per_layer=10)["de"]
    lr, decay, steps, size = 0.05, 0.5, 4, 3

    model, tokenizer = load_pretrained(tiny_llama)
    rows = _rows(tokenizer)
    deltas = attach(model, neurons)
    train(model, deltas, rows, steps=steps, batch_size=size, lr=lr, seed=2, weight_decay=decay,
          decay_on="weights", max_grad_norm=1.0, progress=False)
    merge(model)

    reference, _ = load_pretrained(tiny_llama)
    masks = {name: mask for name, mask in trainable_mask(reference, neurons).items() if mask.any()}
    weights = dict(reference.named_parameters())
    entries = {name: torch.nn.Parameter(weights[name].detach()[mask].clone()) for name, mask in masks.items()}
    optimizer = torch.optim.AdamW(list(entries.values()), lr=lr, weight_decay=decay)
    for step in range(steps):
        batch = rows[batch_rows(step, size, int(rows.shape[0]), 2)]
        patched = {name: weights[name].detach().masked_scatter(mask, entries[name]) for name, mask in masks.items()}
        loss = torch.func.functional_call(reference, patched, (), {"input_ids": batch, "labels": batch}).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(entries.values()), max_norm=1.0)
        optimizer.step()
    trained = dict(model.named_parameters())
    for name, mask in masks.items():
        assert torch.allclose(trained[name].detach()[mask], entries[name].detach(), atol=1e-6), name


def test_a_step_too_large_is_caught_after_the_last_update(tiny_llama):
    model, tokenizer = load_pretrained(tiny_llama)
    deltas = attach(model, random_neuron_set(2, 128, per_layer=8)["de"])
    def diverge(state):  # what an update too large for the dtype leaves behind (the loss before it was finite)
        deltas[0].data[0] = float("inf")

    with pytest.raises(InputError, match="not finite after step 1"):
        train(model, deltas, _rows(tokenizer), steps=1, batch_size=2, lr=0.01, seed=0, on_step=diverge, progress=False)


@pytest.mark.parametrize(("flags", "message"), [
    (["--lr", "nan"], "--lr must be a finite number above 0, got nan"),
    (["--lr", "inf"], "--lr must be a finite number above 0, got inf"),
    (["--weight-decay", "nan"], "--weight-decay must be a finite number 0 or more"),
    (["--max-grad-norm", "-1"], "--max-grad-norm must be a finite number 0 or more"),
    (["--language", "fr"], "'fr' has no neurons in"),
])
def test_finetune_refuses_bad_settings_before_the_model_loads(tiny_llama, tmp_path, capsys, no_model_load, flags, message):
    from builders import set_with_an_empty_language  # de: 3 neurons, fr: none

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for code in ("de", "fr"):
        (corpus / f"{code}.txt").write_text(SAMPLE_TEXT["de"], encoding="utf-8")
    set_with_an_empty_language().save(tmp_path / "n.safetensors")
    argv = ["finetune", "--model", str(tiny_llama), "--neurons", str(tmp_path / "n.safetensors"), "--language", "de",
            "--corpus", str(corpus), "--out", str(tmp_path / "out"), "--no-progress", *flags]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_language_missing_from_the_corpus_names_no_flag_finetune_lacks(tiny_llama, tmp_path, capsys, no_model_load):
    """finetune has --language, not --languages: the corpus message names neither flag."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "fr.txt").write_text(SAMPLE_TEXT["fr"], encoding="utf-8")
    random_neuron_set(2, 128, per_layer=6).save(tmp_path / "n.safetensors")
    argv = ["finetune", "--model", str(tiny_llama), "--neurons", str(tmp_path / "n.safetensors"), "--language", "de",
            "--corpus", str(corpus), "--out", str(tmp_path / "out"), "--no-progress"]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "no corpus file for 'de'" in error and "--languages" not in error
