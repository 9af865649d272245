"""Activation statistics counted token by token: the reference ``lape_harness.profile`` is checked against.

What is counted follows Tang et al. 2024 (arXiv 2402.16438, §2: a neuron is active on a token when
its activation value exceeds zero) as their ``activation.py`` counts it (github.com/RUCAIBox/
Language-Specific-Neurons at commit 1ec944cf50adac636e8b52c5663b2c68fcbd4cd0): per layer, the output
of the MLP's activation function (``act_fn(gate_proj(x))`` in a gated MLP, the activation of a
non-gated one), ``over_zero += (activation > 0)`` and ``sum += activation`` over every counted token.
How text becomes sequences follows lape-harness's documented choices (docs/profile.md, "How text
becomes statistics"), which differ from activation.py's: documents tokenized without special tokens
and concatenated, cut into chunks of ``seq_len`` minus the start tokens, each chunk behind the
tokenizer's start token (Llama's BOS; GPT-2 none) that is never counted, the last chunk shorter
(activation.py feeds full ``max_model_len`` chunks without BOS and drops the rest).

Here every chunk is one plain full forward (no padding, LM head included), the activation modules
are named by hand per architecture (not found by ``lape_harness.sites``), and every token is added
one at a time in float64.
"""

from __future__ import annotations

import torch


def activation_modules(model) -> list[torch.nn.Module]:
    """The neuron activation modules of a tiny Llama or GPT-2, named by hand per architecture."""
    if model.config.model_type == "llama":
        return [layer.mlp.act_fn for layer in model.model.layers]
    return [layer.mlp.act for layer in model.transformer.h]


def reference_stats(model, tokenizer, documents: dict[str, list[str]], seq_len: int, max_tokens: int | None = None):
    """``(over_zero [K, L, I] int64, activation_sum [K, L, I] float64, tokens [K])`` for
    ``documents`` (language -> texts, in order), with ``seq_len`` tokens per sequence including
    the start token and at most ``max_tokens`` tokens per language."""
    bos = [tokenizer.bos_token_id] if model.config.model_type == "llama" else []
    modules = activation_modules(model)
    width = model.config.intermediate_size if model.config.model_type == "llama" else model.config.n_inner
    over_zero = torch.zeros(len(documents), len(modules), width, dtype=torch.int64)
    sums = torch.zeros(len(documents), len(modules), width, dtype=torch.float64)
    tokens = []
    captured = {}
    handles = [module.register_forward_hook(lambda mod, i, out, n=n: captured.__setitem__(n, out))
               for n, module in enumerate(modules)]
    try:
        for k, language in enumerate(documents):
            stream = [t for doc in documents[language] for t in tokenizer(doc, add_special_tokens=False)["input_ids"]]
            stream = stream[:max_tokens] if max_tokens else stream
            tokens.append(len(stream))
            step = seq_len - len(bos)
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
