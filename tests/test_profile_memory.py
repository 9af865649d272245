"""Profiling where the weights are not: layers offloaded by accelerate (CPU/disk, weights on
``meta``) count on their execution device; and counting activations > 0 makes no full-size copy."""

from __future__ import annotations

import pytest
import torch
from accelerate import cpu_offload, dispatch_model
from builders import PROFILE_LANGUAGES, PROFILE_SEQ_LEN, load_pretrained
from torch.profiler import ProfilerActivity, profile

from lape_harness import profile as profiling
from lape_harness.corpora import open_corpus
from lape_harness.profile import NeuronRecorder, Tally, profile_model
from lape_harness.sites import NeuronSite, find_sites

torch.set_num_threads(1)


def _profile(model, tokenizer, folder):
    return profile_model(model, tokenizer, open_corpus(folder, PROFILE_LANGUAGES), seq_len=PROFILE_SEQ_LEN,
                         batch_size=3, progress=False)


def _offload_to_disk(model, folder):
    device_map = {"model.embed_tokens": "disk", "model.layers.0": "cpu", "model.layers.1": "disk",
                  "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}
    return dispatch_model(model, device_map=device_map, main_device="cpu", offload_dir=str(folder))


@pytest.mark.parametrize("offload", ["cpu_offload", "disk"])
def test_offloaded_layers_count_on_their_execution_device(tiny_llama, profile_corpus, tmp_path, offload):
    folder = profile_corpus[0]
    want = _profile(*load_pretrained(tiny_llama), folder)
    model, tokenizer = load_pretrained(tiny_llama)
    if offload == "cpu_offload":
        model = cpu_offload(model, execution_device=torch.device("cpu"))
    else:
        model = _offload_to_disk(model, tmp_path / "offload")
    sites = find_sites(model)
    assert sites[1].device.type == "meta" and sites[1].execution_device.type == "cpu"
    assert all(t.device.type == "cpu" for t in Tally.empty(sites).over_zero)
    got = _profile(model, tokenizer, folder)
    assert torch.equal(got.over_zero, want.over_zero)
    assert torch.equal(got.activation_sum, want.activation_sum)
    assert torch.equal(got.tokens, want.tokens)


def _largest_allocation(run) -> int:
    """Bytes of the largest single tensor allocated while ``run()`` runs (CPU allocator)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    return max([event.cpu_memory_usage for event in prof.events() if event.cpu_memory_usage > 0] or [0])


def test_counting_makes_no_full_size_integer_copy(monkeypatch):
    """``(a > 0).sum(dtype=int32)`` copies the whole bool tensor to int32 (4 bytes per activation);
    the recorder counts in chunks of COUNT_CHUNK elements, with the same numbers."""
    monkeypatch.setattr(profiling, "COUNT_CHUNK", 1 << 18, raising=False)
    rows, seq_len, width = 3, 1024, 512
    activation = torch.randn(rows, seq_len, width, generator=torch.Generator().manual_seed(0))
    site = NeuronSite(0, "layers.0.mlp.act_fn", torch.nn.Identity(), torch.nn.Linear(width, 4), width)
    tally = Tally.empty([site])
    lengths = [seq_len, seq_len, 700]
    with NeuronRecorder([site]) as recorder:
        recorder.expect(1, lengths, seq_len)
        largest = _largest_allocation(lambda: site.activation(activation))
        recorder.commit(tally)
    assert largest <= 2 * 4 * (1 << 18)  # a chunk's bool + int32, not 4 bytes × 1.5 M activations
    want = sum((activation[row, 1:length] > 0).sum(0) for row, length in enumerate(lengths))
    assert torch.equal(tally.over_zero[0], want)
    want_sums = sum(activation[row, 1:length].sum(0, dtype=torch.float32).double() for row, length in enumerate(lengths))
    torch.testing.assert_close(tally.activation_sum[0], want_sums)
