"""The logit lens from ``output_hidden_states``: the reference ``lape_harness.studies.lens`` is checked against.

It follows the logit lens (nostalgebraist 2020, "interpreting GPT: the logit lens"): the residual
stream after each decoder layer, at the last prompt position, read through the model's own final
norm and LM head, as docs/analysis.md ("the logit lens by language") states. Here the residual
streams are the ``hidden_states`` transformers returns (entry ``l + 1`` after layer ``l``; the last
entry is already normed by the model, so the last layer is the model's own next-token
distribution), and each distribution's mass per language category is summed token by token.
"""

from __future__ import annotations

import torch


def lens_probabilities(model, tokenizer, prompt: str, norm, head) -> torch.Tensor:
    """Per layer: softmax(head(norm(hidden_states[l + 1]))) at the last position; the last entry of
    ``hidden_states`` is already normed by the model, so the last layer is the model's own softmax."""
    with torch.no_grad():
        out = model(**tokenizer(prompt, return_tensors="pt"), output_hidden_states=True)
        states = out.hidden_states[1:]
        rows = [torch.softmax(head(norm(state[0, -1])), -1) for state in states[:-1]]
        rows.append(torch.softmax(out.logits[0, -1], -1))
    return torch.stack(rows)


def category_mass(probabilities, category, categories) -> list[dict[str, float]]:
    """Per layer: the probability mass of each category (``category[token]`` indexes ``categories``)."""
    mass = []
    for layer in probabilities:
        sums = dict.fromkeys(categories, 0.0)
        for token, p in enumerate(layer.tolist()):
            sums[categories[int(category[token])]] += p
        mass.append(sums)
    return mass
