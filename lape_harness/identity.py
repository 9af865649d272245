"""Which model a statistics or neuron-set file was made for, and whether a model at hand is that one.

Every file records its model (:func:`model_identity`): the id or path it was given as
(``model_id``), a hash of its configuration (``config_hash``, volatile keys such as the dtype
left out), its type, layer count and MLP width. :func:`compare_identity` compares that record
with a model about to be steered, before its weights load (:func:`pretrained_identity` reads
only the configuration):

* ``other``: the configuration hashes differ, and so do the names (or the file has no name):
  another model, e.g. Llama-3-8B's neurons on Llama-3.1-8B (same 32 layers × 14336). Steering
  with it is an error unless asked for on purpose (``allow_other_model=True``).
* ``unsure``: one of the two differs. The same name with another configuration hash is the same
  model under another revision or transformers version; another name with the same hash is a
  copy in another folder, or a fine-tune of the same architecture. A warning names both.
* ``same``: nothing known differs. Names are compared by their last path part, lower-cased
  (``lape:gemma-3-270m`` = ``~/.cache/.../gemma-3-270m``, ``meta-llama/Llama-3.1-8B`` =
  ``/models/llama-3.1-8b``).

Example:
    >>> compare_identity({"model_id": "meta-llama/Llama-3-8B", "config_hash": "aa"},
    ...                  {"model_id": "meta-llama/Llama-3.1-8B", "config_hash": "bb"})[0]
    'other'
    >>> compare_identity({"model_id": "lape:gemma-3-270m", "config_hash": "aa"},
    ...                  {"model_id": "/cache/models/gemma-3-270m", "config_hash": "aa"})
    ('same', [])
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from lape_harness.paths import model_slug

_VOLATILE_CONFIG_KEYS = {"torch_dtype", "dtype", "transformers_version", "quantization_config", "use_cache", "name_or_path"}


def config_hash(config) -> str:
    """16 hex digits identifying a transformers configuration (private and volatile keys left out)."""
    config_dict = {k: v for k, v in config.to_dict().items() if not k.startswith("_") and k not in _VOLATILE_CONFIG_KEYS}
    return hashlib.sha256(json.dumps(config_dict, sort_keys=True, default=str).encode()).hexdigest()[:16]


def model_identity(model) -> dict[str, Any]:
    """Provenance of a transformers model: id, revision, type, config hash, layer count and width.

    >>> model_identity(model)["num_layers"]     # doctest: +SKIP
    32
    """
    from lape_harness.sites import find_sites, unwrap

    inner = unwrap(model)
    config = inner.config
    sites = find_sites(inner)
    return {
        "model_id": str(getattr(config, "_name_or_path", "") or ""),
        "revision": getattr(config, "_commit_hash", None),
        "model_type": config.model_type,
        "config_hash": config_hash(config),
        "num_layers": len(sites),
        "width": sites[0].width,
    }


def pretrained_identity(name: str, **config_kwargs) -> dict[str, Any] | None:
    """``{"model_id": name, "config_hash": ...}`` from the configuration alone (no weights), plus
    ``num_layers`` and ``width`` where the configuration states them as plain numbers (a dense
    decoder's ``num_hidden_layers`` and ``intermediate_size``), or None when it cannot be read here
    (the model load reports that problem itself). ``config_kwargs`` go to
    ``AutoConfig.from_pretrained`` (``revision``, ``trust_remote_code``)."""
    from transformers import AutoConfig

    from lape_harness.embedded import resolve_pretrained

    try:
        config = AutoConfig.from_pretrained(resolve_pretrained(name), **config_kwargs)
    except Exception:  # noqa: BLE001 - missing, gated or malformed: the weights load will say which
        return None
    identity: dict[str, Any] = {"model_id": name, "config_hash": config_hash(config)}
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for key, field in (("num_layers", "num_hidden_layers"), ("width", "intermediate_size")):
        value = getattr(text, field, None)
        if type(value) is int:  # per-layer lists (e.g. Gemma-3n) and missing fields: the loaded model decides
            identity[key] = value
    return identity


def layout_identity(name: str, **config_kwargs) -> dict[str, Any]:
    """:func:`model_identity` of a model named by id or folder, from its configuration alone: the
    model is built on the ``meta`` device (no weights are read or allocated), so the layer count
    and MLP width are the ones steering will find. ``model_id`` is ``name`` as given.

    >>> layout_identity("lape:gemma-3-270m")["width"]    # doctest: +SKIP
    2048
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from lape_harness.embedded import resolve_pretrained
    from lape_harness.errors import InputError
    from lape_harness.hf_loading import from_config

    try:
        config = AutoConfig.from_pretrained(resolve_pretrained(name), **config_kwargs)
    except OSError as error:
        raise InputError(f"cannot read the configuration of model {name!r} ({error}); pass a local model "
                         "folder, a cached hub id or lape:gemma-3-270m") from None  # fmt: skip
    with torch.device("meta"):
        model = from_config(AutoModelForCausalLM, config)
    return {**model_identity(model), "model_id": name}


def compare_identity(recorded: dict[str, Any], actual: dict[str, Any]) -> tuple[str, list[str]]:
    """``("same" | "unsure" | "other", [what differs])`` for a file's recorded model and a model
    at hand (see the module docstring); unknown fields are not compared."""
    ids = [str(side.get("model_id") or "") for side in (recorded, actual)]
    hashes = [str(side.get("config_hash") or "") for side in (recorded, actual)]
    names_differ = all(ids) and model_slug(ids[0]) != model_slug(ids[1])
    hashes_differ = all(hashes) and hashes[0] != hashes[1]
    differences = []
    if names_differ:
        differences.append(f"model {ids[0]!r} in the file, {ids[1]!r} here")
    if hashes_differ:
        differences.append(f"config hash {hashes[0]} in the file, {hashes[1]} here")
    if hashes_differ and (names_differ or not ids[0]):
        return "other", differences
    return ("unsure" if differences else "same"), differences
