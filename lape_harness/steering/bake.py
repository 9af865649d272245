"""Fold a steering plan into a model's weights, for engines that cannot run Python hooks.

Neuron ``j`` of a layer is input column ``j`` of that layer's down projection (see
:mod:`lape_harness.sites`), so a plan made only of multiplications (``*β*L``: ``a ← β·a``)
and zeroing deactivations (``-L``: ``a ← 0``) is exactly a rescaling of those columns:
``W_down[:, j] ← s_j·W_down[:, j]`` with ``s_j`` the composed factor (0 for zeroed neurons).
The baked checkpoint then behaves like ``hf-steered`` with that plan on every token, in vLLM,
llama.cpp (after conversion), TensorRT or plain transformers.

Additive, replacement, diffmean and probability terms and deactivations with a non-zero fill
add a value that is then multiplied by the input-dependent ``up`` projection (gated MLPs),
so no weight edit reproduces them: :func:`check_bakeable` refuses them with that explanation.

Example:
    >>> plan = parse_steer("-en*0.5*fr")                                       # doctest: +SKIP
    >>> record = bake_model(model, NeuronSet.load("lape-top1.safetensors"), plan)  # doctest: +SKIP
    $ lape-harness bake --model meta-llama/Llama-3.1-8B --neurons lape-top1.safetensors \\
          --steer=-en --out baked/llama-no-en
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lape_harness import __version__
from lape_harness.errors import InputError
from lape_harness.neurons import NeuronSet
from lape_harness.steering import AutoPlan, SteeringPlan, compile_plan, parse_steer

RECORD_FILE = "lape_harness_bake.json"
CONFIG_ATTRIBUTE = "lape_harness_bake"


def check_bakeable(plan: SteeringPlan | AutoPlan) -> None:
    """Raise an :class:`InputError` that explains why a plan cannot be folded into weights."""
    if isinstance(plan, AutoPlan):
        raise InputError(
            f"steer={plan} picks a plan per task at evaluation time; a baked checkpoint holds one fixed plan: "
            "bake an explicit plan such as '-en' or '*0.5*de'"
        )
    if not plan:
        raise InputError("steer=none changes nothing; give a plan to bake, e.g. --steer=-en or --steer='*0.5*de'")
    unbakeable = [
        term for term in plan.terms if term.op in ("add", "replace") or (term.op == "deactivate" and term.strength != 0)
    ]
    if unbakeable:
        listed = ", ".join(f"'{term}'" for term in unbakeable)
        raise InputError(
            f"cannot bake {listed} into weights: only multiplications (a ← β·a, '*β*L') and zeroing "
            "deactivations (a ← 0, '-L') are exact weight edits. Additive, replacement, diffmean and "
            "probability terms and non-zero fills put a constant into the neuron, which a gated MLP then "
            "multiplies by the input-dependent up projection, so no weight edit reproduces them: run those plans with "
            "`lm_eval --model hf-steered` instead"
        )


def bake_model(model: nn.Module, neurons: NeuronSet, plan: SteeringPlan | AutoPlan | str) -> dict[str, Any]:
    """Scale (or zero) the plan's down-projection input columns of ``model`` in place.

    Returns the record written beside a baked checkpoint: the plan, the neuron set's hash and
    provenance, and how many neurons were edited in each layer.
    """
    from lape_harness.sites import find_sites

    plan = parse_steer(plan) if isinstance(plan, str) else plan
    check_bakeable(plan)
    sites = find_sites(model)
    neurons.validate_for(len(sites), sites[0].width)
    edits = compile_plan(plan, neurons, len(sites), sites[0].width)
    edited = {}
    with torch.no_grad():
        for layer, edit in edits.items():
            _scale_inputs(sites[layer].down_proj, edit.index, edit.scale)  # shifts are 0 in a bakeable plan
            edited[str(layer)] = int(edit.index.numel())
    return {
        "plan": str(plan),
        "terms": [term.describe() for term in plan.terms],
        "neurons_hash": neurons.content_hash(),
        "neuron_set": {key: neurons.meta.get(key) for key in ("model", "thresholds", "stats_hash")},
        "edited_neurons_per_layer": edited,
        "lape_harness_version": __version__,
    }


def _scale_inputs(down_proj: nn.Module, index: torch.Tensor, scale: torch.Tensor) -> None:
    """Multiply the weights that read input feature ``index[i]`` by ``scale[i]``."""
    weight = getattr(down_proj, "weight", None)
    if not isinstance(weight, torch.Tensor) or not weight.is_floating_point() or weight.dim() != 2:
        raise InputError(
            f"cannot bake into a {type(down_proj).__name__} down projection (quantized or unusual weights); "
            "bake the unquantized checkpoint, then quantize the baked one"
        )
    index = index.to(weight.device)
    if isinstance(down_proj, nn.Linear):  # weight [out, in]: input j is column j
        columns = weight[:, index].float() * scale.to(weight.device, torch.float32)
        weight[:, index] = columns.to(weight.dtype)
    elif type(down_proj).__name__ == "Conv1D":  # transformers' GPT-2 style: weight [in, out], input j is row j
        rows = weight[index, :].float() * scale.to(weight.device, torch.float32).view(-1, 1)
        weight[index, :] = rows.to(weight.dtype)
    else:
        raise InputError(
            f"cannot bake into a down projection of type {type(down_proj).__name__}; supported: torch Linear "
            "and transformers Conv1D"
        )


def bake_checkpoint(
    model: str,
    neurons: str | os.PathLike,
    steer: str,
    out: str | os.PathLike,
    dtype: str = "auto",
    overwrite: bool = False,
    allow_other_model: bool = False,
) -> dict[str, Any]:
    """Load ``model`` (folder or hub id), bake the plan, and write a complete checkpoint to ``out``.

    Before the weights load: the plan, the neuron file, the plan's languages, ``out`` and the
    model the neuron file was made for (another model is an error unless ``allow_other_model``,
    see :mod:`lape_harness.identity`). The checkpoint (model, tokenizer,
    ``lape_harness_bake.json``, and the record as the config attribute ``lape_harness_bake``)
    appears at ``out`` in one rename, with the permissions of any new folder (the umask's); an
    interrupted bake leaves nothing there. Returns the record.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lape_harness.embedded import resolve_pretrained
    from lape_harness.hf_loading import load_pretrained
    from lape_harness.identity import pretrained_identity
    from lape_harness.path_checks import check_output_dir

    plan = parse_steer(steer)
    check_bakeable(plan)
    neuron_set = NeuronSet.load(neurons)
    plan.check_languages(neuron_set)
    out = check_output_dir(out, "--out")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise InputError(f"{out} already exists and is not empty; choose another --out or pass --overwrite")
    identity = pretrained_identity(model)
    if identity is not None:
        neuron_set.check_model(identity, allow_other_model, str(neurons))
    path = resolve_pretrained(model)
    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    loaded = load_pretrained(AutoModelForCausalLM, path, dtype=torch_dtype)
    tokenizer = AutoTokenizer.from_pretrained(path)
    record = {**bake_model(loaded, neuron_set, plan), "source_model": model, "neurons": str(neurons)}
    setattr(loaded.config, CONFIG_ATTRIBUTE, record)

    write_checkpoint(out, loaded, tokenizer, RECORD_FILE, record)
    return record


def write_checkpoint(out: Path, model: nn.Module, tokenizer, record_file: str, record: dict[str, Any]) -> None:
    """``save_pretrained`` of ``model`` and ``tokenizer`` plus ``record`` as JSON in ``record_file``, appearing
    at ``out`` in one rename (replacing what is there), with the permissions of any new folder (the umask's)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp's folder is private (0700); a checkpoint is shared like any folder
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / record_file).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        previous = out.with_name(f".{out.name}.previous") if out.exists() else None
        if previous is not None:
            os.replace(out, previous)
        os.replace(staging, out)
        if previous is not None:
            shutil.rmtree(previous)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
