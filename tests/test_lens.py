"""The logit lens by language against a plain computation from ``output_hidden_states``, and the
vocabulary's language rule."""

from __future__ import annotations

import json
import re

import pytest
import torch
from builders import load_pretrained, random_neuron_set
from references.lens import category_mass, lens_probabilities

from lape_harness.cli import main
from lape_harness.errors import InputError, LapeError
from lape_harness.studies.lens import LogitLens
from lape_harness.task_support.vocab_languages import assign_token, vocabulary_languages

LANGUAGES = ["en", "de", "fr", "ru", "zh"]


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LAPE_HARNESS_CACHE", str(tmp_path / "cache"))  # the vocabulary cache of these tests


PROMPTS = ["Die Katze sitzt auf der", "Кошка сидит на", "The cat sits"]


@pytest.mark.parametrize("fixture, norm_name", [("tiny_llama", "model.norm"), ("tiny_gpt2", "transformer.ln_f")])
def test_lens_equals_norm_and_head_on_hidden_states(fixture, norm_name, request, tmp_path):
    model, tokenizer = load_pretrained(request.getfixturevalue(fixture))
    lens = LogitLens(model, tokenizer, LANGUAGES, top_k=3)
    vocabulary = vocabulary_languages(tokenizer, LANGUAGES, model.lm_head.weight.shape[0], cache=tmp_path)
    assert torch.equal(lens.vocabulary.category, vocabulary.category)
    result = lens.run(PROMPTS, ["none"])
    norm = model.get_submodule(norm_name)
    for prompt, row in zip(PROMPTS, result["plans"]["none"]["prompts"]):
        expected = lens_probabilities(model, tokenizer, prompt, norm, model.lm_head)
        mass = category_mass(expected, vocabulary.category, vocabulary.categories)
        assert len(row["layers"]) == len(expected) == model.config.num_hidden_layers
        for layer, entry in enumerate(row["layers"]):
            for name in vocabulary.categories:
                assert entry["mass"][name] == pytest.approx(mass[layer][name], abs=2e-6)
            assert sum(entry["mass"].values()) == pytest.approx(1.0, abs=1e-5)
            top_p, top_ids = expected[layer].topk(3)
            assert [p for _, p in entry["top"]] == pytest.approx(top_p.tolist(), abs=2e-6)
            assert [text for text, _ in entry["top"]] == [tokenizer.decode([int(i)]) for i in top_ids]
    means = result["plans"]["none"]["mass"]
    for name in vocabulary.categories:  # the plan's mass is the mean over the prompts
        for layer in range(model.config.num_hidden_layers):
            rows = result["plans"]["none"]["prompts"]
            assert means[name][layer] == pytest.approx(sum(r["layers"][layer]["mass"][name] for r in rows) / 3, abs=1e-5)


def test_steered_lens_equals_hidden_states_of_a_plainly_edited_model(tiny_llama):
    """-de: the neurons of de set to 0 by a plain hook; several plans, one lens, one model."""
    model, tokenizer = load_pretrained(tiny_llama)
    neurons = random_neuron_set(model.config.num_hidden_layers, model.config.intermediate_size, LANGUAGES)
    lens = LogitLens(model, tokenizer, LANGUAGES, neurons=neurons, top_k=2)
    result = lens.run(PROMPTS[:2], ["-de", "none"])
    assert list(result["plans"]) == ["-de", "none"]
    handles = []
    for layer, block in enumerate(model.model.layers):
        columns = neurons["de"].index[neurons["de"].layer == layer]

        def zero(module, inputs, output, columns=columns):
            output = output.clone()
            output[..., columns] = 0.0
            return output

        handles.append(block.mlp.act_fn.register_forward_hook(zero))
    try:
        for prompt, row in zip(PROMPTS[:2], result["plans"]["-de"]["prompts"]):
            expected = lens_probabilities(model, tokenizer, prompt, model.model.norm, model.lm_head)
            mass = category_mass(expected, lens.vocabulary.category, lens.vocabulary.categories)
            for layer, entry in enumerate(row["layers"]):
                assert entry["mass"]["ambiguous"] == pytest.approx(mass[layer]["ambiguous"], abs=2e-6)
                assert entry["mass"]["ru"] == pytest.approx(mass[layer]["ru"], abs=2e-6)
    finally:
        for handle in handles:
            handle.remove()
    unsteered = lens_probabilities(model, tokenizer, PROMPTS[0], model.model.norm, model.lm_head)
    first = result["plans"]["none"]["prompts"][0]["layers"][-1]["top"]
    assert first[0][1] == pytest.approx(float(unsteered[-1].max()), abs=2e-6)  # the hooks are off again
    assert result["plans"]["-de"]["prompts"][0]["layers"][-1]["top"] != first


def test_a_head_the_lens_cannot_reproduce_is_an_error(tiny_llama):
    model, tokenizer = load_pretrained(tiny_llama)
    lens = LogitLens(model, tokenizer, LANGUAGES)
    lens.norm = torch.nn.Identity()  # as if the located norm were not the model's
    with pytest.raises(LapeError, match="do not reproduce"):
        lens.run(PROMPTS[:1], ["none"])
    with pytest.raises(InputError, match="explicit plans"):
        LogitLens(model, tokenizer, LANGUAGES).run(PROMPTS[:1], ["auto"])


def test_token_language_rule():
    assert assign_token("Кошка", ["ru", "de"]) == "ru"  # one Cyrillic language: by script
    assert assign_token(" der", ["de", "en"]) == "ambiguous"  # 3 letters: too short for the language ID
    assert assign_token(" Freiheit", ["de", "en", "fr"]) == "de"
    assert assign_token(" Freiheit", ["en", "fr"]) == "ambiguous"  # the ID's answer is not a candidate
    assert assign_token("ひらがな", ["zh", "ja"]) == "ja"  # kana: only Japanese writes it
    assert assign_token("12, ", ["en"]) == "other" and assign_token("Кошка", ["de", "en"]) == "other"


def test_lens_cli_writes_json_and_plot(tiny_llama, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The cat sits\nDie Katze\n", encoding="utf-8")
    neurons = random_neuron_set(2, 128, LANGUAGES)
    neurons.save(tmp_path / "n.safetensors")
    out = tmp_path / "out"
    code = main(["lens", "--model", str(tiny_llama), "--prompts", str(prompts), "--forcing", "de", "--limit", "1",
                 "--neurons", str(tmp_path / "n.safetensors"), "--plans=none,-de+fr", "--out", str(out),
                 "--allow-other-model"])
    assert code == 0
    result = json.loads((out / "lens.json").read_text())
    assert [row["prompt"] for row in result["plans"]["none"]["prompts"]] == ["The cat sits", "Q: Wie geht es dir heute? \nA:"]
    assert result["categories"] == [*LANGUAGES, "ambiguous", "other"]
    assert (out / "lens.png").stat().st_size > 0
    assert main(["lens", "--model", str(tiny_llama), "--prompts", str(prompts), "--plans=-de", "--out", str(out)]) == 2
    assert main(["lens", "--model", str(tiny_llama), "--prompts", str(prompts), "--plans=auto", "--out", str(out),
                 "--neurons", str(tmp_path / "n.safetensors")]) == 2


@pytest.mark.parametrize(("flags", "message"), [
    (["--forcing", "xx"], "--forcing xx: unknown language code"),
    (["--forcing", "vi"], "forcing questions cover .* not vi; write vi prompts to a file and pass it with --prompts"),
    (["--forcing", "de", "--languages", "de", "xx"], "--languages xx: unknown language code"),
    (["--prompts", "EMPTY"], r"holds no prompt \(it is empty or blank\)"),
])
def test_lens_cli_input_errors_come_before_the_model_loads(tiny_llama, tmp_path, capsys, no_model_load, flags, message):
    (tmp_path / "empty.txt").write_text("\n  \n")
    flags = [str(tmp_path / "empty.txt") if flag == "EMPTY" else flag for flag in flags]
    assert main(["lens", "--model", str(tiny_llama), *flags, "--out", str(tmp_path / "lens")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and re.search(message, error), error


def test_a_head_with_a_logit_scale_is_lensed_like_the_model(tmp_path):
    """Cohere / Aya multiply the head's logits by ``config.logit_scale``: the lens applies it too, so its
    last layer reproduces the model's own logits (else LogitLens refuses the model)."""
    from builders import build_tiny_model

    model, tokenizer = load_pretrained(build_tiny_model(tmp_path / "cohere", arch="cohere"))
    assert model.config.logit_scale == 0.25
    lens = LogitLens(model, tokenizer, ["de", "en"])
    probabilities, logits = lens.prompt_layers("Die Katze sitzt auf der")
    assert torch.allclose(probabilities[-1], torch.softmax(logits.float(), -1), atol=1e-5)
    lens.scale = None  # without the scale the last layer no longer matches: refused, not drawn
    with pytest.raises(LapeError, match="do not reproduce this model's logits"):
        lens.prompt_layers("Die Katze sitzt auf der")
