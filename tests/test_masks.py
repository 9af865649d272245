"""Published masks (lape_harness.masks, `lape-harness masks import|export`)."""

from __future__ import annotations

import json

import pytest
import torch
from builders import PLANTED_LANGUAGES, as_pairs

from lape_harness.cli import main
from lape_harness.errors import InputError
from lape_harness.identity import layout_identity
from lape_harness.masks import MaskFileError, import_masks, read_masks, to_masks, write_masks
from lape_harness.neurons import ActivationStats, NeuronSet
from lape_harness.steering import parse_steer
from lape_harness.steering.compiled import compile_plan

IDENTITY = {"model_id": "tiny/test", "num_layers": 3, "width": 40}


def test_masks_are_per_language_per_layer_index_lists(planted_set):
    _, neuron_set = planted_set
    masks = to_masks(neuron_set)
    assert len(masks) == len(PLANTED_LANGUAGES) and all(len(m) == 3 for m in masks)
    for lang, per_layer in zip(PLANTED_LANGUAGES, masks):
        expected = [[index for layer, index in as_pairs(neuron_set[lang]) if layer == j] for j in range(3)]
        assert [t.tolist() for t in per_layer] == expected
        assert all(t.dtype == torch.int64 for t in per_layer)


def test_round_trip_with_stats_restores_the_set(planted_set, tmp_path):
    stats, neuron_set = planted_set
    write_masks(neuron_set, tmp_path / "set.pth")
    back = import_masks(read_masks(tmp_path / "set.pth"), list(PLANTED_LANGUAGES), IDENTITY, stats)
    assert back.has_means
    for lang in PLANTED_LANGUAGES:
        assert as_pairs(back[lang]) == as_pairs(neuron_set[lang])
        for name in ("mean", "others_mean", "probability"):
            torch.testing.assert_close(getattr(back[lang], name), getattr(neuron_set[lang], name))


def test_without_stats_only_deactivate_and_multiply(planted_set, tmp_path):
    _, neuron_set = planted_set
    back = import_masks(to_masks(neuron_set), list(PLANTED_LANGUAGES), IDENTITY)
    assert not back.has_means
    back.save(tmp_path / "imported.safetensors")
    loaded = NeuronSet.load(tmp_path / "imported.safetensors")
    assert not loaded.has_means
    assert compile_plan(parse_steer("-de*0.5*fr"), loaded, 3, 40)
    for plan in ("+de", "=fr", "-de+2*fr.diff", "+de.p"):
        with pytest.raises(InputError, match="has none.*deactivate/multiply"):
            compile_plan(parse_steer(plan), loaded, 3, 40)


class _Sneaky:
    def __reduce__(self):
        return (open, ("/nonexistent-should-never-be-opened", "w"))


def test_pickled_objects_other_than_tensors_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save([[torch.tensor([1]), _Sneaky()]], path)
    with pytest.raises(MaskFileError, match="weights_only=True"):
        read_masks(path)


@pytest.mark.parametrize("content, message", [
    ({"en": [torch.tensor([1])]}, "not a List"),
    ([[torch.tensor([1]), torch.tensor([2])], [torch.tensor([1])]], "different numbers of layers"),
    ([[torch.tensor([1.5])]], "not a 1-D integer tensor"),
    ([["12"]], "not a 1-D integer tensor"),
    ([], "an empty list: no language's masks"),
    ([[torch.tensor([True, False, True])]], "a boolean mask, not neuron indices.*nonzero"),
])  # fmt: skip
def test_malformed_masks_are_refused(tmp_path, content, message):
    torch.save(content, tmp_path / "m.pth")
    with pytest.raises(MaskFileError, match=message):
        read_masks(tmp_path / "m.pth")


def test_masks_that_do_not_fit(planted_set):
    _, neuron_set = planted_set
    masks = to_masks(neuron_set)
    with pytest.raises(InputError, match="5 language lists but 4 languages"):
        import_masks(masks, list(PLANTED_LANGUAGES[:4]), IDENTITY)
    with pytest.raises(InputError, match="3 layers.*has 4"):
        import_masks(masks, list(PLANTED_LANGUAGES), {**IDENTITY, "num_layers": 4})
    with pytest.raises(InputError, match="outside 0..9"):
        import_masks(masks, list(PLANTED_LANGUAGES), {**IDENTITY, "width": 10})


def test_cli_import_and_export(tiny_llama, tmp_path, capsys):
    identity = layout_identity(str(tiny_llama))
    layers, width = identity["num_layers"], identity["width"]
    g = torch.Generator().manual_seed(0)
    tokens = torch.tensor([100, 120])
    stats = ActivationStats(["de", "fr"], (torch.rand(2, layers, width, generator=g) * 100).long(),
                            torch.randn(2, layers, width, generator=g, dtype=torch.float64), tokens,
                            {"model": identity})  # fmt: skip
    stats.save(tmp_path / "stats.safetensors")
    masks = [[torch.tensor([5, 2]), *[torch.tensor([], dtype=torch.long)] * (layers - 1)],
             [torch.tensor([7]) for _ in range(layers)]]  # fmt: skip
    torch.save(masks, tmp_path / "masks.pth")
    out = tmp_path / "imported.safetensors"
    argv = ["masks", "import", str(tmp_path / "masks.pth"), "--languages", "de,fr", "--model", str(tiny_llama),
            "--stats", str(tmp_path / "stats.safetensors"), "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    imported = NeuronSet.load(out)
    assert as_pairs(imported["de"]) == [(0, 2), (0, 5)] and imported.has_means
    assert imported["fr"].mean.tolist() == pytest.approx(
        [stats.activation_sum[1, layer, 7].item() / 120 for layer in range(layers)])
    assert imported.meta["model"]["config_hash"] == identity["config_hash"]
    assert main(["masks", "export", str(out), "--out", str(tmp_path / "back.pth")]) == 0
    back = torch.load(tmp_path / "back.pth", weights_only=True)
    assert [[t.tolist() for t in m] for m in back] == [[[2, 5]] + [[]] * (layers - 1), [[7]] * layers]
    assert main(argv[:-4] + ["--out", str(tmp_path / "plain.safetensors")]) == 0
    assert "only deactivate and multiply" in capsys.readouterr().err


def test_random_bytes_are_not_called_pickled_objects(tmp_path):
    (tmp_path / "noise.pth").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(MaskFileError, match="is not a torch.save file of masks"):
        read_masks(tmp_path / "noise.pth")


def test_masks_without_any_neuron_are_refused():
    empty = [[torch.tensor([], dtype=torch.long)] * 3] * 2
    with pytest.raises(InputError, match="list no neuron at all"):
        import_masks(empty, ["de", "fr"], IDENTITY)


def _tiny_masks(tmp_path, layers: int) -> str:
    masks = [[torch.tensor([5]), *[torch.tensor([], dtype=torch.long)] * (layers - 1)],
             [torch.tensor([], dtype=torch.long)] * layers]  # fr: no neurons
    torch.save(masks, tmp_path / "masks.pth")
    return str(tmp_path / "masks.pth")


def test_cli_checks_the_output_and_the_language_codes_before_the_work(tiny_llama, tmp_path, capsys):
    masks = _tiny_masks(tmp_path, layout_identity(str(tiny_llama))["num_layers"])
    base = ["masks", "import", masks, "--model", str(tiny_llama)]
    assert main([*base, "--languages", "de", "xx", "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "--languages xx: unknown language code" in capsys.readouterr().err
    for out in (tmp_path, tmp_path / "masks.pth" / "under.safetensors"):  # a folder; a path under a file
        assert main([*base, "--languages", "de", "fr", "--out", str(out)]) == 2
        assert "--out" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.safetensors"))
    neuron_set = tmp_path / "set.safetensors"
    assert main([*base, "--languages", "de", "fr", "--out", str(neuron_set)]) == 0
    assert "warning: no neurons for fr" in capsys.readouterr().err
    assert main(["masks", "export", str(neuron_set), "--out", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_languages_before_the_mask_file_are_understood(tiny_llama, tmp_path):
    masks = _tiny_masks(tmp_path, layout_identity(str(tiny_llama))["num_layers"])
    out = tmp_path / "set.safetensors"
    assert main(["masks", "import", "--languages", "de", "fr", masks, "--model", str(tiny_llama), "--out", str(out)]) == 0
    assert NeuronSet.load(out).languages == ["de", "fr"]


def test_export_order_is_the_papers_for_the_21_languages_and_recorded(tmp_path):
    from builders import random_neuron_set

    from lape_harness.languages import PAPER_CODES

    shuffled = sorted(PAPER_CODES)  # the set's own order differs from the paper's
    neuron_set = random_neuron_set(languages=shuffled)
    order = write_masks(neuron_set, tmp_path / "m.pth")
    assert order == list(PAPER_CODES)
    recorded = json.loads((tmp_path / "m.pth.languages.json").read_text())
    assert recorded["languages"] == list(PAPER_CODES)
    masks = torch.load(tmp_path / "m.pth", weights_only=True)
    assert [t.tolist() for t in masks[0]] == [t.tolist() for t in to_masks(neuron_set, ["bo"])[0]]  # bo first
    assert write_masks(neuron_set, tmp_path / "n.pth", ["en", "de"]) == ["en", "de"]
    with pytest.raises(InputError, match="not in it: vi"):
        write_masks(neuron_set, tmp_path / "o.pth", ["vi"])
    few = random_neuron_set(languages=["fr", "de"])
    assert write_masks(few, tmp_path / "p.pth") == ["fr", "de"]  # not the 21: the set's order
