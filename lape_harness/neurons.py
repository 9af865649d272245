"""The on-disk formats: activation statistics and neuron sets (safetensors + JSON metadata).

Both are safetensors files whose string metadata holds one JSON document under the key
``lape_harness`` (kind, format version, model identity, languages, provenance). Loading
validates shapes and versions; writes are atomic.

* :class:`ActivationStats` (``stats.safetensors``, written by ``lape-harness profile``):
  per language ``k``, layer ``l`` and neuron ``j``: ``over_zero[k,l,j]`` (tokens with
  activation > 0, int64), ``activation_sum[k,l,j]`` (float64) and ``tokens[k]`` (int64).
* :class:`NeuronSet` (``lape-top1.safetensors``, written by ``lape-harness identify``):
  per language its ``(layer, index)`` neurons, with the language's mean activation there,
  the mean over the other languages (for diffmean) and its activation probability.
  Self-contained for steering.

Example:
    >>> stats = ActivationStats.load("neuron_cache/tiny/stats.safetensors")   # doctest: +SKIP
    >>> stats.probability().shape                                               # doctest: +SKIP
    torch.Size([21, 32, 14336])
    >>> neurons = NeuronSet.load("neuron_cache/tiny/lape-top1.safetensors")    # doctest: +SKIP
    >>> neurons["de"].layer, neurons["de"].index                                # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from lape_harness import __version__
from lape_harness.atomic import atomic_path
from lape_harness.errors import InputError
from lape_harness.identity import compare_identity

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
METADATA_KEY = "lape_harness"
STATS_KIND = "activation_stats"
NEURON_SET_KIND = "neuron_set"
NEURON_FIELDS = ("layer", "index", "mean", "others_mean", "probability")


class NeuronFileError(InputError):
    """A statistics or neuron-set file that is missing, corrupt, of another kind or for another model."""


_REPROFILE = "these statistics are inconsistent: re-create them with `lape-harness profile`"


def _read(path: str | os.PathLike, kind: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    path = Path(path)
    what = "activation statistics" if kind == STATS_KIND else "neuron set"
    command = "`lape-harness profile`" if kind == STATS_KIND else "`lape-harness identify`"
    if path.is_dir():
        inside = sorted(p.name for p in path.glob("*.safetensors"))
        raise NeuronFileError(f"{what} file {str(path)!r} is a directory; pass a file inside it"
                              + (f" (it has: {', '.join(inside[:8])})" if inside else f", written by {command}"))
    if not path.is_file():
        raise NeuronFileError(f"{what} file {str(path)!r} does not exist; check the path or run {command} first")
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = (handle.metadata() or {}).get(METADATA_KEY)
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        foreign = None if _starts_like_safetensors(path) else _foreign_format(path)
        if foreign:
            raise NeuronFileError(
                f"{str(path)!r} is not a safetensors file written by lape-harness ({foreign}); lape-harness "
                f"reads {what} files only as the safetensors files {command} writes: pass one of those"
            ) from None
        if not _starts_like_safetensors(path):
            raise NeuronFileError(
                f"{str(path)!r} is not a readable safetensors file (its first bytes are no safetensors header): it "
                f"is another kind of file, or corrupt or truncated; pass a file written by {command}, or delete it "
                "and re-run the command that wrote it"
            ) from None
        raise NeuronFileError(
            f"{str(path)!r} is not a readable safetensors file ({error}); it is corrupt or truncated: "
            "delete it and re-run the command that wrote it"
        ) from None
    if raw is None:
        raise NeuronFileError(
            f"{str(path)!r} has no lape-harness metadata; it was not written by lape-harness: pass the "
            + ("statistics file from `lape-harness profile`" if kind == STATS_KIND
               else "neuron-set file from `lape-harness identify`")
        )
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError:
        raise NeuronFileError(f"{str(path)!r} has corrupt lape-harness metadata; re-run the command that wrote it") from None
    if meta.get("kind") != kind:
        raise NeuronFileError(
            f"{str(path)!r} holds {meta.get('kind')!r}, not {kind!r}: "
            + ("pass a statistics file from `lape-harness profile`" if kind == STATS_KIND
               else "pass a neuron-set file from `lape-harness identify` (not the statistics file)")
        )
    if meta.get("format_version") != FORMAT_VERSION:
        raise NeuronFileError(
            f"{str(path)!r} has format version {meta.get('format_version')}; this lape-harness "
            f"({__version__}) reads version {FORMAT_VERSION}: re-create the file with this version"
        )
    return tensors, meta


def _starts_like_safetensors(path: Path) -> bool:
    """A safetensors file starts with an 8-byte header length and then its JSON header ``{``."""
    with open(path, "rb") as handle:
        head = handle.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def _foreign_format(path: Path) -> str | None:
    """What a file plainly is when it is a known other format (a ``torch.save`` file), else None."""
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head.startswith(b"PK\x03\x04"):
        return "it is a zip archive, as torch.save writes: a pickled PyTorch file"
    if head[:1] == b"\x80":
        return "it is a Python pickle, e.g. an old torch.save file"
    return None if head else "it is empty"


def _write(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    meta = {**meta, "format_version": FORMAT_VERSION, "package_version": __version__}
    contiguous = {name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}
    with atomic_path(path) as temporary:
        save_file(contiguous, str(temporary), metadata={METADATA_KEY: json.dumps(meta, sort_keys=True)})


def _content_hash(languages: list[str], tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256(json.dumps(languages).encode())
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(memoryview(tensors[name].detach().cpu().contiguous().numpy()).cast("B"))
    return digest.hexdigest()


@dataclass
class ActivationStats:
    """Per-language activation counts and sums over every (layer, neuron).

    ``meta`` carries provenance: ``model`` (see :func:`model_identity`), ``seq_len``,
    ``dtype``, ``sources`` (per language: where the text came from and its hash).
    """

    languages: list[str]
    over_zero: torch.Tensor  # int64 [K, L, I]
    activation_sum: torch.Tensor  # float64 [K, L, I]
    tokens: torch.Tensor  # int64 [K]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        k = len(self.languages)
        if len(set(self.languages)) != k:
            raise NeuronFileError(f"duplicate languages in statistics: {self.languages}; {_REPROFILE}")
        if self.over_zero.dim() != 3 or self.over_zero.shape[0] != k:
            raise NeuronFileError(
                f"over_zero must be [languages={k}, layers, width], got {tuple(self.over_zero.shape)}; {_REPROFILE}"
            )
        if self.activation_sum.shape != self.over_zero.shape or tuple(self.tokens.shape) != (k,):
            raise NeuronFileError(
                f"inconsistent statistics shapes: over_zero {tuple(self.over_zero.shape)}, "
                f"activation_sum {tuple(self.activation_sum.shape)}, tokens {tuple(self.tokens.shape)}; {_REPROFILE}"
            )

    @property
    def num_layers(self) -> int:
        return int(self.over_zero.shape[1])

    @property
    def width(self) -> int:
        return int(self.over_zero.shape[2])

    def probability(self) -> torch.Tensor:
        """Activation probability ``p[k,l,j] = over_zero / tokens`` (float64; 0 where no tokens)."""
        return self.over_zero.double() / self.tokens.clamp(min=1).double().view(-1, 1, 1)

    def mean_activation(self) -> torch.Tensor:
        """Mean signed activation over all tokens, ``activation_sum / tokens`` (float64)."""
        return self.activation_sum / self.tokens.clamp(min=1).double().view(-1, 1, 1)

    def neuron_values(self) -> dict[str, torch.Tensor]:
        """What a neuron set stores at each neuron, for every ``[k, l, j]`` (float64): ``mean``
        (:meth:`mean_activation`), ``others_mean`` (the mean of the other languages' means) and
        ``probability``. Select the set's languages first: ``others_mean`` is over these."""
        mean = self.mean_activation()
        others = max(len(self.languages) - 1, 1)
        return {"mean": mean, "others_mean": (mean.sum(dim=0, keepdim=True) - mean) / others,
                "probability": self.probability()}  # fmt: skip

    def select(self, languages: list[str]) -> ActivationStats:
        """The statistics of a subset of languages, in the given order."""
        missing = [lang for lang in languages if lang not in self.languages]
        if missing:
            raise InputError(f"languages {missing} are not in these statistics; they have: {', '.join(self.languages)}")
        rows = torch.tensor([self.languages.index(lang) for lang in languages], dtype=torch.long)
        return ActivationStats(
            list(languages), self.over_zero[rows], self.activation_sum[rows], self.tokens[rows], dict(self.meta)
        )

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"over_zero": self.over_zero, "activation_sum": self.activation_sum, "tokens": self.tokens}

    def content_hash(self) -> str:
        """sha256 over languages and tensors (not metadata): identifies the statistics."""
        return _content_hash(self.languages, self.tensors())

    def save(self, path: str | os.PathLike) -> None:
        meta = {
            **self.meta,
            "kind": STATS_KIND,
            "languages": self.languages,
            "num_layers": self.num_layers,
            "width": self.width,
            "tokens_per_language": dict(zip(self.languages, self.tokens.tolist())),
        }
        _write(path, self.tensors(), meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> ActivationStats:
        tensors, meta = _read(path, STATS_KIND)
        try:
            stats = cls(meta["languages"], tensors["over_zero"], tensors["activation_sum"], tensors["tokens"], meta)
        except KeyError as missing:
            raise NeuronFileError(f"{str(path)!r} lacks {missing}; it is not a complete statistics file") from None
        if (stats.num_layers, stats.width) != (meta.get("num_layers"), meta.get("width")):
            raise NeuronFileError(f"{str(path)!r}: tensor shapes disagree with its metadata; the file is corrupt")
        return stats


@dataclass
class LanguageNeurons:
    """One language's neurons, as parallel 1-D tensors sorted by ``(layer, index)``."""

    layer: torch.Tensor  # int64 [n]
    index: torch.Tensor  # int64 [n]
    mean: torch.Tensor  # float32 [n]: this language's mean activation at the neuron
    others_mean: torch.Tensor  # float32 [n]: mean over the other languages' mean activations
    probability: torch.Tensor  # float32 [n]: this language's activation probability

    @classmethod
    def at(cls, layer: torch.Tensor, index: torch.Tensor, values: dict[str, torch.Tensor] | None,
           row: int) -> LanguageNeurons:
        """The neurons ``(layer, index)`` with language ``row``'s entries of ``values``
        (:meth:`ActivationStats.neuron_values`), or NaN values when there are none.

        >>> LanguageNeurons.at(torch.tensor([0]), torch.tensor([3]), None, 0).mean
        tensor([nan])
        """
        if values is None:
            nan = torch.full((len(index),), float("nan"))
            return cls(layer, index, nan, nan.clone(), nan.clone())
        return cls(layer, index, **{name: value[row, layer, index].float() for name, value in values.items()})

    def __len__(self) -> int:
        return int(self.layer.numel())


@dataclass
class NeuronSet:
    """Language-specific neurons of one model, per language (possibly empty, possibly shared).

    ``meta`` carries ``model`` identity, ``thresholds`` (top_rate, filter_rate,
    activation_bar_ratio and the probability bar), ``stats_hash``, ``tokens_per_language``,
    ``seq_len`` and ``dtype``.
    """

    languages: list[str]
    num_layers: int
    width: int
    neurons: dict[str, LanguageNeurons]
    meta: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, language: str) -> LanguageNeurons:
        from lape_harness.languages import UnknownLanguageError, normalize_code

        try:
            code = normalize_code(language)
        except UnknownLanguageError:
            code = language
        if code not in self.neurons:
            raise InputError(
                f"language {language!r} is not in this neuron set; it has: {', '.join(self.languages)}"
            )
        return self.neurons[code]

    @property
    def has_means(self) -> bool:
        """Whether the set carries activation values (mean, others' mean, probability) at its
        neurons. A set imported without statistics (``lape-harness masks import``) or a control
        drawn without them has none: only deactivate and multiply plans work with it."""
        return bool(self.meta.get("has_means", True))

    def counts(self) -> dict[str, int]:
        return {language: len(self.neurons[language]) for language in self.languages}

    def exclusive(self) -> NeuronSet:
        """The same set with only each language's own neurons: those no other language shares.

        Related languages and languages of one script share many LAPE neurons; switching off
        only the exclusive ones separates them (at the cost of fewer neurons per language).

        >>> top3 = NeuronSet.load("neuron_cache/gemma-3-270m/lape-top3.safetensors")  # doctest: +SKIP
        >>> top3.counts()["de"], top3.exclusive().counts()["de"]  # doctest: +SKIP
        (101, 16)
        """
        keys = {lang: self.neurons[lang].layer * self.width + self.neurons[lang].index for lang in self.languages}
        everything = torch.cat(list(keys.values())) if keys else torch.empty(0, dtype=torch.int64)
        shared = everything.unique(return_counts=True)
        shared = shared[0][shared[1] > 1]
        neurons = {}
        for lang, key in keys.items():
            own = ~torch.isin(key, shared)
            neurons[lang] = LanguageNeurons(**{name: getattr(self.neurons[lang], name)[own].clone()
                                               for name in NEURON_FIELDS})  # fmt: skip
        return NeuronSet(list(self.languages), self.num_layers, self.width, neurons, {**self.meta, "exclusive": True})

    def validate_for(self, num_layers: int, width: int, where: str = "the model") -> None:
        """Raise a clear error when this set was made for a model of another shape."""
        problems = []
        if num_layers != self.num_layers:
            problems.append(f"layers: file has {self.num_layers}, {where} has {num_layers}")
        if width != self.width:
            problems.append(f"MLP width: file has {self.width}, {where} has {width}")
        if problems:
            model = self.meta.get("model", {}).get("model_id", "another model")
            raise NeuronFileError(
                f"this neuron set was made for {model!r}, not for {where} ({'; '.join(problems)}); "
                "use the neuron set identified for this model, or profile and identify it first"
            )

    def check_model(self, model: dict[str, Any] | None, allow_other_model: bool = False, source: str = "") -> None:
        """Compare the model this set was made for with ``model`` (``model_id``/``config_hash``,
        e.g. from :func:`~lape_harness.identity.pretrained_identity`): another model is an error
        unless ``allow_other_model``; a partial match is a warning (rules:
        :func:`~lape_harness.identity.compare_identity`). Where ``model`` states its layer count and
        width, a set of another shape is an error even with ``allow_other_model``."""
        if model and isinstance(model.get("num_layers"), int) and isinstance(model.get("width"), int):
            self.validate_for(model["num_layers"], model["width"], f"model {model.get('model_id') or '(unnamed)'!r}")
        verdict, differences = compare_identity(self.meta.get("model") or {}, model or {})
        if verdict == "same":
            return
        named = f"neuron set {source!r}" if source else "this neuron set"
        if verdict == "other" and not allow_other_model:
            raise NeuronFileError(
                f"{named} was made for another model ({'; '.join(differences)}); use the neuron set identified "
                "for this model (`lape-harness profile --model ...`, then `identify`), or, to steer with it on "
                "purpose, pass allow_other_model=True (lape-harness bake: --allow-other-model)"
            )
        logger.warning("%s may be for another model (%s)%s", named, "; ".join(differences),
                       "; used anyway (allow_other_model)" if verdict == "other" else
                       "; check that it is the neuron set of this model")

    def tensors(self) -> dict[str, torch.Tensor]:
        return {
            f"{language}/{name}": getattr(self.neurons[language], name)
            for language in self.languages
            for name in NEURON_FIELDS
        }

    def content_hash(self) -> str:
        """sha256 over languages and neurons: the identity recorded in steering signatures."""
        return _content_hash(self.languages, self.tensors())

    def save(self, path: str | os.PathLike) -> None:
        meta = {
            **self.meta,
            "kind": NEURON_SET_KIND,
            "languages": self.languages,
            "num_layers": self.num_layers,
            "width": self.width,
            "neuron_counts": self.counts(),
        }
        _write(path, self.tensors(), meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> NeuronSet:
        tensors, meta = _read(path, NEURON_SET_KIND)
        try:
            languages, num_layers, width = meta["languages"], int(meta["num_layers"]), int(meta["width"])
            neurons = {
                language: LanguageNeurons(**{name: tensors[f"{language}/{name}"] for name in NEURON_FIELDS})
                for language in languages
            }
        except KeyError as missing:
            raise NeuronFileError(f"{str(path)!r} lacks {missing}; it is not a complete neuron-set file") from None
        for language, entry in neurons.items():
            sizes = {getattr(entry, name).numel() for name in NEURON_FIELDS}
            out_of_range = len(entry) and (
                int(entry.layer.min()) < 0 or int(entry.layer.max()) >= num_layers
                or int(entry.index.min()) < 0 or int(entry.index.max()) >= width
            )
            if len(sizes) != 1 or out_of_range:
                raise NeuronFileError(f"{str(path)!r}: neurons of {language!r} are inconsistent; the file is corrupt")
        return cls(languages, num_layers, width, neurons, meta)
