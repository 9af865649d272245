"""Profiling equals a plain forward counted token by token; batch size, padding, BOS,
interruptions, dtype and device maps do not change it."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_models import SAMPLE_TEXT
from transformers import AutoModelForCausalLM, AutoTokenizer

from lape_harness.cli import main
from lape_harness.corpora import open_corpus
from lape_harness.errors import InputError
from lape_harness.neurons import ActivationStats
from lape_harness.profile import HookNeverFiredError, profile_model

LANGUAGES = ["de", "ru", "zh"]
SEQ_LEN = 32


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Per language: a few paragraphs (different lengths so the last sequence is partial)."""
    folder = tmp_path_factory.mktemp("corpus")
    documents = {}
    for number, language in enumerate(LANGUAGES):
        sentences = SAMPLE_TEXT[language].split(". ")
        documents[language] = [". ".join(sentences[: 1 + (i % len(sentences))]) + f" {i}" for i in range(5 + 3 * number)]
        (folder / f"{language}.txt").write_text("\n\n".join(documents[language]) + "\n", encoding="utf-8")
    return folder, documents


def load(path, dtype=torch.float32):
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval(), AutoTokenizer.from_pretrained(path)


def activation_modules(model):
    """The neuron activation modules, named by hand per architecture (not via lape_harness.sites)."""
    if model.config.model_type == "llama":
        return [layer.mlp.act_fn for layer in model.model.layers]
    return [layer.mlp.act for layer in model.transformer.h]


def reference_stats(model, tokenizer, documents, max_tokens=None):
    """Plain full forward per sequence (no padding, LM head included), counted token by token."""
    bos = [tokenizer.bos_token_id] if model.config.model_type == "llama" else []
    modules = activation_modules(model)
    width = model.config.intermediate_size if model.config.model_type == "llama" else model.config.n_inner
    over_zero = torch.zeros(len(documents), len(modules), width, dtype=torch.int64)
    sums = torch.zeros(len(documents), len(modules), width, dtype=torch.float64)
    tokens = []
    captured = {}
    handles = [m.register_forward_hook(lambda mod, i, out, n=n: captured.__setitem__(n, out)) for n, m in enumerate(modules)]
    try:
        for k, language in enumerate(documents):
            stream = [t for doc in documents[language] for t in tokenizer(doc, add_special_tokens=False)["input_ids"]]
            stream = stream[:max_tokens] if max_tokens else stream
            tokens.append(len(stream))
            step = SEQ_LEN - len(bos)
            for start in range(0, len(stream), step):
                ids = bos + stream[start : start + step]
                with torch.no_grad():
                    model(torch.tensor([ids]))
                for layer in range(len(modules)):
                    for position in range(len(bos), len(ids)):
                        activation = captured[layer][0, position].double()
                        over_zero[k, layer] += (activation > 0).long()
                        sums[k, layer] += activation
    finally:
        for handle in handles:
            handle.remove()
    return over_zero, sums, torch.tensor(tokens)


def run_profile(path, folder, dtype=torch.float32, **kwargs):
    model, tokenizer = load(path, dtype)
    return profile_model(model, tokenizer, open_corpus(folder, LANGUAGES), seq_len=SEQ_LEN, progress=False, **kwargs)


@pytest.mark.parametrize("arch", ["tiny_llama", "tiny_gpt2"])
def test_profile_equals_manual_count(arch, corpus, request):
    path = request.getfixturevalue(arch)
    folder, documents = corpus
    stats = run_profile(path, folder, batch_size=4)
    over_zero, sums, tokens = reference_stats(*load(path), documents)
    assert stats.languages == LANGUAGES
    assert torch.equal(stats.tokens, tokens)  # BOS and padding are not counted
    assert all(int(t) % (SEQ_LEN - 1) for t in tokens)  # the last sequence of each language is padded
    assert torch.equal(stats.over_zero, over_zero)
    torch.testing.assert_close(stats.activation_sum, sums, rtol=1e-5, atol=1e-4)
    assert stats.meta["prefix_tokens"] == ([1] if arch == "tiny_llama" else [])
    assert stats.meta["sources"]["de"]["source"].endswith("de.txt")


def test_max_tokens_per_language(tiny_llama, corpus):
    folder, documents = corpus
    stats = run_profile(tiny_llama, folder, batch_size=2, max_tokens=45)
    over_zero, sums, tokens = reference_stats(*load(tiny_llama), documents, max_tokens=45)
    assert stats.tokens.tolist() == [45, 45, 45]
    assert torch.equal(stats.over_zero, over_zero)
    torch.testing.assert_close(stats.activation_sum, sums, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("arch", ["tiny_llama", "tiny_gpt2"])
def test_batch_size_does_not_change_statistics(arch, corpus, request):
    path = request.getfixturevalue(arch)
    one, eight, three = (run_profile(path, corpus[0], batch_size=size) for size in (1, 8, 3))
    for other in (eight, three):
        assert torch.equal(one.over_zero, other.over_zero)
        assert torch.equal(one.activation_sum, other.activation_sum)  # bit-identical
        assert torch.equal(one.tokens, other.tokens)


def test_bf16_matches_manual_count(tiny_llama, corpus):
    folder, documents = corpus
    stats = run_profile(tiny_llama, folder, dtype=torch.bfloat16, batch_size=4)
    assert stats.meta["dtype"] == "bfloat16"
    over_zero, sums, tokens = reference_stats(*load(tiny_llama, torch.bfloat16), documents)
    assert torch.equal(stats.tokens, tokens)
    assert (stats.over_zero - over_zero).abs().max() <= 2  # bf16 rounding depends on matmul shapes
    torch.testing.assert_close(stats.activation_sum, sums, rtol=2e-2, atol=0.5)


class Interrupt(Exception):
    pass


def interrupt_after(model, calls, error=Interrupt):
    """Make the decoder body raise ``error`` on its ``calls + 1``-th forward."""
    body = model.base_model
    original, count = body.forward, [0]

    def forward(*args, **kwargs):
        count[0] += 1
        if count[0] > calls:
            raise error("injected interruption")
        return original(*args, **kwargs)

    body.forward = forward


@pytest.mark.parametrize("calls, error, every", [(1, Interrupt, 1e9), (4, KeyboardInterrupt, 0.0)])
def test_resume_after_interruption_equals_uninterrupted(tiny_llama, corpus, tmp_path, calls, error, every):
    folder = corpus[0]
    expected = run_profile(tiny_llama, folder, batch_size=2)
    checkpoints = tmp_path / "stats.partial"
    model, tokenizer = load(tiny_llama)
    interrupt_after(model, calls, error)
    with pytest.raises(error):
        profile_model(model, tokenizer, open_corpus(folder, LANGUAGES), seq_len=SEQ_LEN, batch_size=2,
                      checkpoint_dir=checkpoints, checkpoint_every=every, progress=False)
    assert any(checkpoints.iterdir())
    resumed_model, tokenizer = load(tiny_llama)
    forwards = []
    resumed_model.base_model.register_forward_hook(lambda *a: forwards.append(1))
    resumed = profile_model(resumed_model, tokenizer, open_corpus(folder, LANGUAGES), seq_len=SEQ_LEN, batch_size=3,
                            checkpoint_dir=checkpoints, progress=False)
    assert torch.equal(resumed.over_zero, expected.over_zero)
    assert torch.equal(resumed.activation_sum, expected.activation_sum)
    assert torch.equal(resumed.tokens, expected.tokens)
    assert resumed.meta["sources"] == expected.meta["sources"]
    full_batches = sum(-(-int(t) // (SEQ_LEN - 1) // 3) for t in expected.tokens)  # roughly: work left was skipped
    assert len(forwards) < full_batches + len(LANGUAGES)


def test_resume_with_changed_corpus_is_refused(tiny_llama, corpus, tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    for language in LANGUAGES:
        (folder / f"{language}.txt").write_text((corpus[0] / f"{language}.txt").read_text(encoding="utf-8"), encoding="utf-8")
    model, tokenizer = load(tiny_llama)
    interrupt_after(model, 1)
    with pytest.raises(Interrupt):
        profile_model(model, tokenizer, open_corpus(folder, LANGUAGES), seq_len=SEQ_LEN, batch_size=2,
                      checkpoint_dir=tmp_path / "partial", progress=False)
    original = (folder / "de.txt").read_text(encoding="utf-8")
    (folder / "de.txt").write_text("Ganz anderer Text.\n", encoding="utf-8")
    with pytest.raises(InputError, match="changed since the interrupted run"):
        profile_model(*load(tiny_llama), open_corpus(folder, LANGUAGES), seq_len=SEQ_LEN, batch_size=2,
                      checkpoint_dir=tmp_path / "partial", progress=False)
    (folder / "de.txt").write_text(original, encoding="utf-8")
    with pytest.raises(InputError, match="other settings"):
        profile_model(*load(tiny_llama), open_corpus(folder, LANGUAGES), seq_len=SEQ_LEN + 1, batch_size=2,
                      checkpoint_dir=tmp_path / "partial", progress=False)


def test_hook_that_never_fires_is_an_error(tiny_llama, corpus):
    model, tokenizer = load(tiny_llama)
    mlp = model.model.layers[1].mlp
    mlp.forward = lambda x: mlp.down_proj(torch.nn.functional.silu(mlp.gate_proj(x)) * mlp.up_proj(x))  # "fused"
    with pytest.raises(HookNeverFiredError, match=r"model\.layers\.1\.mlp\.act_fn"):
        profile_model(model, tokenizer, open_corpus(corpus[0], LANGUAGES), seq_len=SEQ_LEN, progress=False)


def test_lm_head_is_not_computed(tiny_llama, corpus):
    model, tokenizer = load(tiny_llama)
    model.lm_head.register_forward_hook(lambda *a: pytest.fail("the LM head ran"))
    profile_model(model, tokenizer, open_corpus(corpus[0], ["de"]), seq_len=SEQ_LEN, progress=False)


def test_cli_writes_stats_and_device_map_gives_the_same(tiny_llama, corpus, tmp_path, capsys):
    folder = corpus[0]
    plain, mapped = tmp_path / "plain.safetensors", tmp_path / "mapped.safetensors"
    common = ["profile", "--model", str(tiny_llama), "--corpus", str(folder), "--seq-len", str(SEQ_LEN), "--no-progress"]
    assert main([*common, "--out", str(plain), "--device", "cpu"]) == 0
    assert f"wrote {plain}: 3 languages (de zh ru)" in capsys.readouterr().out
    device_map = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "cpu", "model.norm": "cpu",
                  "model.rotary_emb": "cpu", "lm_head": "cpu"}
    assert main([*common, "--out", str(mapped), "--dtype", "fp32", "--device-map", json.dumps(device_map)]) == 0
    first, second = ActivationStats.load(plain), ActivationStats.load(mapped)
    assert torch.equal(first.over_zero, second.over_zero)
    assert torch.equal(first.activation_sum, second.activation_sum)
    assert first.meta["model"]["model_id"] == str(tiny_llama)
    assert first.meta["seq_len"] == SEQ_LEN and first.meta["dtype"] == "float32"
    assert not (tmp_path / "plain.partial").exists()  # checkpoints are removed once the result is written


def test_cli_input_errors_come_before_loading_the_model(tmp_path, capsys):
    missing_model = str(tmp_path / "no-such-model")
    (tmp_path / "de.txt").write_text("  \n\n", encoding="utf-8")
    (tmp_path / "fr.txt").write_text("Bonjour.\n", encoding="utf-8")
    cases = [
        (["--corpus", str(tmp_path / "nowhere")], "does not exist"),
        (["--corpus", str(tmp_path), "--languages", "xx"], "unknown language 'xx'"),
        (["--corpus", str(tmp_path), "--languages", "de"], "has no text"),
        (["--corpus", str(tmp_path), "--languages", "it"], "no corpus file for 'it'"),
        (["--corpus", str(tmp_path), "--languages", "fr", "--seq-len", "0"], "--seq-len must be a positive"),
    ]
    for extra, message in cases:
        assert main(["profile", "--model", missing_model, *extra]) == 2
        assert message in capsys.readouterr().err


def test_recorder_wants_full_rows_first():
    from lape_harness.profile import NeuronRecorder

    with pytest.raises(InputError, match="shorter rows must come last"):
        NeuronRecorder([]).expect(0, [2, 4], seq_len=4)


def test_clearing_checkpoints_while_another_rank_removes_the_folder(tmp_path, monkeypatch):
    """Rank 0 may remove the emptied folder between another rank's own deletions and its scan for
    orphan temporaries: that rank must finish quietly, not fail the whole run."""
    from pathlib import Path

    from lape_harness.profile_state import Checkpoints, Distributed

    folder = tmp_path / "stats.partial"
    folder.mkdir()
    checkpoints = Checkpoints(folder, Distributed(rank=1, world=2))

    def vanished(self, pattern):
        raise FileNotFoundError(str(self))

    monkeypatch.setattr(Path, "glob", vanished)
    checkpoints.clear(["de"])  # no exception
