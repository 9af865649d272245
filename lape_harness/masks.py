"""Published neuron masks: Tang et al.'s ``List[List[LongTensor]]`` files to and from neuron sets.

Tang et al. (2024) released their LAPE neurons as ``torch.save`` files (``LLaMA-2-7B.neuron.pth``
…): one list per language (their order: en zh fr es vi id ja), one int64 tensor of neuron
indices per layer, ``mask[i][j]`` = the neurons of language i in layer j. Such a file carries no
languages, model or values: :func:`import_masks` takes the languages and the model's identity,
and the values (mean, others' mean, probability) from activation statistics when given. Without
statistics the set has no values (``has_means`` False): deactivate and multiply plans work,
additive and replacement plans are refused (:meth:`~lape_harness.steering.plan.SteeringPlan.check_languages`).

Files are read with ``torch.load(weights_only=True)`` only: lists and tensors load, any other
pickled object is refused (no arbitrary code runs).

Example:
    >>> masks = read_masks("LLaMA-2-7B.neuron.pth")                                        # doctest: +SKIP
    >>> neurons = import_masks(masks, ["en", "zh", "fr", "es", "vi", "id", "ja"], identity)  # doctest: +SKIP
    >>> write_masks(neurons, "lape-top1.neuron.pth")                                        # doctest: +SKIP
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from lape_harness.atomic import atomic_path, write_json_atomic
from lape_harness.errors import InputError
from lape_harness.neurons import ActivationStats, LanguageNeurons, NeuronSet

TANG_LANGUAGES = ("en", "zh", "fr", "es", "vi", "id", "ja")  # the order of Tang et al.'s released masks


class MaskFileError(InputError):
    """A mask file that is missing, not a ``List[List[LongTensor]]``, or holds other objects."""


def read_masks(path: str | os.PathLike) -> list[list[torch.Tensor]]:
    """The ``List[List[LongTensor]]`` in ``path`` (``torch.load(weights_only=True)``), checked:
    every language has the same number of layers and every entry is a 1-D integer tensor."""
    path = Path(path)
    if not path.is_file():
        raise MaskFileError(f"mask file {str(path)!r} does not exist; check the path")
    try:
        masks = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        lines = [line for line in str(error).splitlines() if "GLOBAL" in line or "Unsupported" in line]
        first = lines[0].strip() if lines else ""
        if "GLOBAL" not in first:  # not a pickle of lists and tensors at all: random bytes, a text file, ...
            raise MaskFileError(f"{str(path)!r} is not a torch.save file of masks ({first[:200]}); pass the .pth "
                                "file the masks were saved to") from None
        raise MaskFileError(
            f"{str(path)!r} holds objects other than lists and tensors ({first[:200]}); lape-harness reads masks "
            "only with torch.load(weights_only=True) and never unpickles other objects: re-save the masks as a "
            "plain list of lists of int64 tensors"
        ) from None
    except Exception as error:  # noqa: BLE001 - corrupt zip, truncated pickle, not a torch file at all
        raise MaskFileError(f"{str(path)!r} is not a readable torch.save file ({type(error).__name__}: {error})") from None
    _check_structure(masks, path)
    return masks


def _check_structure(masks: Any, path: Path) -> None:
    shape = "a List[List[LongTensor]] (one list per language, one tensor of neuron indices per layer)"
    if isinstance(masks, (list, tuple)) and not masks:
        raise MaskFileError(f"{str(path)!r} holds an empty list: no language's masks; expected {shape}")
    if not isinstance(masks, (list, tuple)) or not all(isinstance(m, (list, tuple)) for m in masks):
        raise MaskFileError(f"{str(path)!r} holds {type(masks).__name__}, not {shape}")
    layers = {len(m) for m in masks}
    if len(layers) != 1:
        raise MaskFileError(f"{str(path)!r}: the languages have different numbers of layers ({sorted(layers)}); "
                            f"expected {shape}")  # fmt: skip
    for i, language in enumerate(masks):
        for j, entry in enumerate(language):
            if isinstance(entry, torch.Tensor) and entry.dtype == torch.bool:
                raise MaskFileError(f"{str(path)!r}: entry [{i}][{j}] is a boolean mask, not neuron indices; "
                                    f"expected {shape} (convert each with mask.nonzero().flatten())")
            if not isinstance(entry, torch.Tensor) or entry.dim() != 1 or entry.is_floating_point() or entry.is_complex():
                raise MaskFileError(f"{str(path)!r}: entry [{i}][{j}] is not a 1-D integer tensor; expected {shape}")


def import_masks(masks: list[list[torch.Tensor]], languages: list[str], model: dict[str, Any],
                 stats: ActivationStats | None = None, source: dict[str, Any] | None = None) -> NeuronSet:
    """A :class:`NeuronSet` from masks (see :func:`read_masks`), their ``languages`` in order, the
    model's identity (``model_id``, ``config_hash``, ``num_layers``, ``width``, as
    :func:`~lape_harness.identity.model_identity` gives) and optionally the model's statistics.

    >>> masks = [[torch.tensor([3, 1]), torch.tensor([], dtype=torch.long)], [torch.tensor([0]), torch.tensor([2])]]
    >>> neurons = import_masks(masks, ["de", "fr"], {"model_id": "m", "num_layers": 2, "width": 4})
    >>> neurons["de"].layer.tolist(), neurons["de"].index.tolist(), neurons["fr"].layer.tolist(), neurons.has_means
    ([0, 0], [1, 3], [0, 1], False)
    """
    num_layers, width = int(model["num_layers"]), int(model["width"])
    if len(masks) != len(languages):
        raise InputError(
            f"the mask file has {len(masks)} language lists but {len(languages)} languages were given "
            f"({' '.join(languages)}); pass one language per list, in the file's order (Tang et al.'s released "
            f"masks: {' '.join(TANG_LANGUAGES)}; their identify.py drops trailing languages without neurons)"
        )
    if len(set(languages)) != len(languages):
        raise InputError(f"languages {' '.join(languages)} repeat a language; pass each once")
    if not any(len(entry) for per_language in masks for entry in per_language):
        raise InputError("the masks list no neuron at all; nothing to import (check that the file holds the masks)")
    if len(masks[0]) != num_layers:
        raise InputError(f"the masks have {len(masks[0])} layers, the model {model.get('model_id')!r} has "
                         f"{num_layers}: they are for another model")  # fmt: skip
    values = None
    if stats is not None:
        if (stats.num_layers, stats.width) != (num_layers, width):
            raise InputError(f"the statistics are for a {stats.num_layers} × {stats.width} model, the model "
                             f"{model.get('model_id')!r} is {num_layers} × {width}: pass its statistics")  # fmt: skip
        values = stats.select(list(languages)).neuron_values()
    neurons = {}
    for row, (language, per_layer) in enumerate(zip(languages, masks)):
        layer = torch.cat([torch.full((len(t),), j, dtype=torch.int64) for j, t in enumerate(per_layer)])
        index = torch.cat([t.long() for t in per_layer])
        if len(index) and (int(index.min()) < 0 or int(index.max()) >= width):
            raise InputError(f"neurons of {language!r} lie outside 0..{width - 1}: the masks are for another model")
        order = torch.argsort(layer * width + index)
        layer, index = layer[order], index[order]
        if len(index) and bool(((layer * width + index).diff() == 0).any()):
            raise InputError(f"the masks of {language!r} list a neuron twice; the file is malformed")
        neurons[language] = LanguageNeurons.at(layer, index, values, row)
    meta = {
        "model": model,
        "languages": list(languages),
        "method": "imported",
        "source": source or {},
        "has_means": values is not None,
    }
    if stats is not None:
        meta["stats_hash"] = stats.content_hash()
    return NeuronSet(list(languages), num_layers, width, neurons, meta)


def export_order(neuron_set: NeuronSet, languages: list[str] | None = None) -> list[str]:
    """The language order of an export: ``languages`` as given (each must be in the set), else the
    paper's fixed 21-language order (:data:`~lape_harness.languages.PAPER_CODES`, the index order of
    the authors' scripts) when the set holds exactly those languages, else the set's own order.

    >>> masks = [[torch.tensor([1])], [torch.tensor([0])]]
    >>> export_order(import_masks(masks, ["de", "fr"], {"num_layers": 1, "width": 4}), ["fr", "de"])
    ['fr', 'de']
    """
    from lape_harness.languages import PAPER_CODES, normalize_code

    if languages:
        order = [normalize_code(language) for language in languages]
        missing = [language for language in order if language not in neuron_set.languages]
        if missing or len(set(order)) != len(order):
            raise InputError(f"--languages {' '.join(languages)}: name each of the set's languages at most once "
                             f"(it has {' '.join(neuron_set.languages)}; not in it: {' '.join(missing) or 'none'})")
        return order
    return list(PAPER_CODES) if set(neuron_set.languages) == set(PAPER_CODES) else list(neuron_set.languages)


def to_masks(neuron_set: NeuronSet, languages: list[str] | None = None) -> list[list[torch.Tensor]]:
    """The set as ``List[List[LongTensor]]`` (languages in ``languages``' order, default the set's;
    every layer listed).

    >>> masks = [[torch.tensor([3, 1]), torch.tensor([], dtype=torch.long)], [torch.tensor([0]), torch.tensor([2])]]
    >>> [[t.tolist() for t in m] for m in to_masks(import_masks(masks, ["de", "fr"], {"num_layers": 2, "width": 4}))]
    [[[1, 3], []], [[0], [2]]]
    """
    return [
        [neuron_set.neurons[language].index[neuron_set.neurons[language].layer == layer].long().clone()
         for layer in range(neuron_set.num_layers)]
        for language in (languages or neuron_set.languages)
    ]  # fmt: skip


def write_masks(neuron_set: NeuronSet, path: str | os.PathLike, languages: list[str] | None = None) -> list[str]:
    """``torch.save`` :func:`to_masks` to ``path`` atomically (what Tang et al.'s and the authors'
    scripts load), in the order :func:`export_order` picks, recorded beside it in
    ``<path>.languages.json`` (the mask file itself has no names). Returns the order."""
    order = export_order(neuron_set, languages)
    with atomic_path(path) as temporary:
        torch.save(to_masks(neuron_set, order), temporary)
    write_json_atomic(Path(f"{path}.languages.json"), {"languages": order, "num_layers": neuron_set.num_layers,
                                                        "neurons_sha256": neuron_set.content_hash()})
    return order

