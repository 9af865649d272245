"""The weights neuron-restricted fine-tuning may change, written out per architecture: the reference
``lape_harness.studies.finetune`` is checked against.

It follows the rule docs/analysis.md ("neuron-restricted fine-tuning") gives after the authors'
fine-tuning scripts (Gurgurov et al. 2025, arXiv 2507.22608): for a gated MLP (Llama), neuron
*j*'s row of ``gate_proj`` and ``up_proj`` and column *j* of ``down_proj``; for a non-gated MLP
(GPT-2, whose ``Conv1D`` weights are stored ``[in, out]``), column *j* of ``c_fc`` with its bias
entry and row *j* of ``c_proj`` (whose bias belongs to no neuron). The parameter names are spelled
out by hand, not found by ``lape_harness.sites``.
"""

from __future__ import annotations

import torch


def trainable_mask(model, neurons) -> dict[str, torch.Tensor]:
    """Per state-dict entry of a tiny Llama or GPT-2: True where fine-tuning ``neurons`` (one
    language's ``LanguageNeurons``) may change it."""
    state = model.state_dict()
    mask = {name: torch.zeros_like(tensor, dtype=torch.bool) for name, tensor in state.items()}
    for layer in range(model.config.num_hidden_layers):
        cols = neurons.index[neurons.layer == layer]
        if model.config.model_type == "llama":
            prefix = f"model.layers.{layer}.mlp"
            mask[f"{prefix}.gate_proj.weight"][cols, :] = True
            mask[f"{prefix}.up_proj.weight"][cols, :] = True
            mask[f"{prefix}.down_proj.weight"][:, cols] = True
        else:  # GPT-2: Conv1D weights are [in, out]
            prefix = f"transformer.h.{layer}.mlp"
            mask[f"{prefix}.c_fc.weight"][:, cols] = True
            mask[f"{prefix}.c_fc.bias"][cols] = True
            mask[f"{prefix}.c_proj.weight"][cols, :] = True
    return mask
