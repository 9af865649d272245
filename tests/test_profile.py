"""Profiling equals a plain forward counted token by token; batch size, padding, BOS,
interruptions, dtype and device maps do not change it."""

from __future__ import annotations

import json

import pytest
import torch
from builders import PROFILE_LANGUAGES, PROFILE_SEQ_LEN, SAMPLE_TEXT, load_pretrained
from references.profile import reference_stats

from lape_harness.cli import main
from lape_harness.corpora import open_corpus
from lape_harness.errors import InputError
from lape_harness.neurons import ActivationStats
from lape_harness.profile import HookNeverFiredError, profile_model


def run_profile(path, folder, dtype=torch.float32, **kwargs):
    model, tokenizer = load_pretrained(path, dtype)
    return profile_model(model, tokenizer, open_corpus(folder, PROFILE_LANGUAGES), seq_len=PROFILE_SEQ_LEN, progress=False,
                         **kwargs)


@pytest.mark.parametrize("arch", ["tiny_llama", "tiny_gpt2"])
def test_profile_equals_manual_count(arch, profile_corpus, request):
    path = request.getfixturevalue(arch)
    folder, documents = profile_corpus
    stats = run_profile(path, folder, batch_size=4)
    over_zero, sums, tokens = reference_stats(*load_pretrained(path), documents, PROFILE_SEQ_LEN)
    assert stats.languages == PROFILE_LANGUAGES
    assert torch.equal(stats.tokens, tokens)  # BOS and padding are not counted
    assert all(int(t) % (PROFILE_SEQ_LEN - 1) for t in tokens)  # the last sequence of each language is padded
    assert torch.equal(stats.over_zero, over_zero)
    torch.testing.assert_close(stats.activation_sum, sums, rtol=1e-5, atol=1e-4)
    assert stats.meta["prefix_tokens"] == ([1] if arch == "tiny_llama" else [])
    assert stats.meta["sources"]["de"]["source"].endswith("de.txt")


def test_max_tokens_per_language(tiny_llama, profile_corpus):
    folder, documents = profile_corpus
    stats = run_profile(tiny_llama, folder, batch_size=2, max_tokens=45)
    over_zero, sums, tokens = reference_stats(*load_pretrained(tiny_llama), documents, PROFILE_SEQ_LEN, max_tokens=45)
    assert stats.tokens.tolist() == [45, 45, 45]
    assert torch.equal(stats.over_zero, over_zero)
    torch.testing.assert_close(stats.activation_sum, sums, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("arch", ["tiny_llama", "tiny_gpt2"])
def test_batch_size_does_not_change_statistics(arch, profile_corpus, request):
    path = request.getfixturevalue(arch)
    one, eight, three = (run_profile(path, profile_corpus[0], batch_size=size) for size in (1, 8, 3))
    for other in (eight, three):
        assert torch.equal(one.over_zero, other.over_zero)
        assert torch.equal(one.activation_sum, other.activation_sum)  # bit-identical
        assert torch.equal(one.tokens, other.tokens)


def test_bf16_matches_manual_count(tiny_llama, profile_corpus):
    folder, documents = profile_corpus
    stats = run_profile(tiny_llama, folder, dtype=torch.bfloat16, batch_size=4)
    assert stats.meta["dtype"] == "bfloat16"
    over_zero, sums, tokens = reference_stats(*load_pretrained(tiny_llama, torch.bfloat16), documents, PROFILE_SEQ_LEN)
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
def test_resume_after_interruption_equals_uninterrupted(tiny_llama, profile_corpus, tmp_path, calls, error, every):
    folder = profile_corpus[0]
    expected = run_profile(tiny_llama, folder, batch_size=2)
    checkpoints = tmp_path / "stats.partial"
    model, tokenizer = load_pretrained(tiny_llama)
    interrupt_after(model, calls, error)
    with pytest.raises(error):
        profile_model(model, tokenizer, open_corpus(folder, PROFILE_LANGUAGES), seq_len=PROFILE_SEQ_LEN, batch_size=2,
                      checkpoint_dir=checkpoints, checkpoint_every=every, progress=False)
    assert any(checkpoints.iterdir())
    resumed_model, tokenizer = load_pretrained(tiny_llama)
    forwards = []
    resumed_model.base_model.register_forward_hook(lambda *a: forwards.append(1))
    resumed = profile_model(resumed_model, tokenizer, open_corpus(folder, PROFILE_LANGUAGES), seq_len=PROFILE_SEQ_LEN,
                            batch_size=3, checkpoint_dir=checkpoints, progress=False)
    assert torch.equal(resumed.over_zero, expected.over_zero)
    assert torch.equal(resumed.activation_sum, expected.activation_sum)
    assert torch.equal(resumed.tokens, expected.tokens)
    assert resumed.meta["sources"] == expected.meta["sources"]
    # roughly: work left was skipped
    full_batches = sum(-(-int(t) // (PROFILE_SEQ_LEN - 1) // 3) for t in expected.tokens)
    assert len(forwards) < full_batches + len(PROFILE_LANGUAGES)


def test_resume_with_changed_corpus_is_refused(tiny_llama, profile_corpus, tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    for language in PROFILE_LANGUAGES:
        text = (profile_corpus[0] / f"{language}.txt").read_text(encoding="utf-8")
        (folder / f"{language}.txt").write_text(text, encoding="utf-8")
    model, tokenizer = load_pretrained(tiny_llama)
    interrupt_after(model, 1)
    with pytest.raises(Interrupt):
        profile_model(model, tokenizer, open_corpus(folder, PROFILE_LANGUAGES), seq_len=PROFILE_SEQ_LEN, batch_size=2,
                      checkpoint_dir=tmp_path / "partial", progress=False)
    original = (folder / "de.txt").read_text(encoding="utf-8")
    (folder / "de.txt").write_text("Ganz anderer Text.\n", encoding="utf-8")
    with pytest.raises(InputError, match="changed since the interrupted run"):
        profile_model(*load_pretrained(tiny_llama), open_corpus(folder, PROFILE_LANGUAGES), seq_len=PROFILE_SEQ_LEN,
                      batch_size=2, checkpoint_dir=tmp_path / "partial", progress=False)
    (folder / "de.txt").write_text(original, encoding="utf-8")
    with pytest.raises(InputError, match="other settings"):
        profile_model(*load_pretrained(tiny_llama), open_corpus(folder, PROFILE_LANGUAGES), seq_len=PROFILE_SEQ_LEN + 1,
                      batch_size=2, checkpoint_dir=tmp_path / "partial", progress=False)


def test_hook_that_never_fires_is_an_error(tiny_llama, profile_corpus):
    model, tokenizer = load_pretrained(tiny_llama)
    mlp = model.model.layers[1].mlp
    mlp.forward = lambda x: mlp.down_proj(torch.nn.functional.silu(mlp.gate_proj(x)) * mlp.up_proj(x))  # "fused"
    with pytest.raises(HookNeverFiredError, match=r"model\.layers\.1\.mlp\.act_fn"):
        profile_model(model, tokenizer, open_corpus(profile_corpus[0], PROFILE_LANGUAGES), seq_len=PROFILE_SEQ_LEN,
                      progress=False)


def test_lm_head_is_not_computed(tiny_llama, profile_corpus):
    model, tokenizer = load_pretrained(tiny_llama)
    model.lm_head.register_forward_hook(lambda *a: pytest.fail("the LM head ran"))
    profile_model(model, tokenizer, open_corpus(profile_corpus[0], ["de"]), seq_len=PROFILE_SEQ_LEN, progress=False)


def test_cli_writes_stats_and_device_map_gives_the_same(tiny_llama, profile_corpus, tmp_path, capsys):
    folder = profile_corpus[0]
    plain, mapped = tmp_path / "plain.safetensors", tmp_path / "mapped.safetensors"
    common = ["profile", "--model", str(tiny_llama), "--corpus", str(folder), "--seq-len", str(PROFILE_SEQ_LEN),
              "--no-progress"]
    assert main([*common, "--out", str(plain), "--device", "cpu"]) == 0
    assert f"wrote {plain}: 3 languages (de zh ru)" in capsys.readouterr().out
    device_map = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "cpu", "model.norm": "cpu",
                  "model.rotary_emb": "cpu", "lm_head": "cpu"}
    assert main([*common, "--out", str(mapped), "--dtype", "fp32", "--device-map", json.dumps(device_map)]) == 0
    first, second = ActivationStats.load(plain), ActivationStats.load(mapped)
    assert torch.equal(first.over_zero, second.over_zero)
    assert torch.equal(first.activation_sum, second.activation_sum)
    assert first.meta["model"]["model_id"] == str(tiny_llama)
    assert first.meta["seq_len"] == PROFILE_SEQ_LEN and first.meta["dtype"] == "float32"
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


# orphan temporary files of checkpoints (issue 14, item 12)
def test_successful_profile_removes_orphan_checkpoint_temporaries(tiny_llama, tmp_path, capsys):
    from lape_harness.cli import main

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for language in ("de", "fr"):
        (corpus / f"{language}.txt").write_text(SAMPLE_TEXT[language] + "\n", encoding="utf-8")
    partial = tmp_path / "stats.partial"
    partial.mkdir()
    (partial / ".de.rank0-of-1.safetensors.k3j2h1.tmp").write_bytes(b"half a checkpoint")  # after a SIGKILL
    assert main(["profile", "--model", str(tiny_llama), "--corpus", str(corpus), "--seq-len", "16", "--no-progress",
                 "--device", "cpu", "--out", str(tmp_path / "stats.safetensors")]) == 0
    assert not partial.exists()
