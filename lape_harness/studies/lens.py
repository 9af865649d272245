"""The logit lens by language: at every decoder layer, the model's final norm and LM head applied
to the residual stream at the last prompt position, read as a distribution over the vocabulary,
summed per language (:mod:`lape_harness.task_support.vocab_languages`).

Layer ``l`` reads the output of decoder layer ``l`` (0-based) through the model's own final
norm (:func:`~lape_harness.sites.final_norm`) and output embeddings, with the logit scale of
models that have one (Cohere, Aya: ``config.logit_scale``) and the final logit soft-capping of
models that have it (Gemma-2). The last layer's lens must equal the model's own
logits; a mismatch (a head that does more than norm and projection) is an error, never a
silently wrong picture. Steering plans run through
:class:`~lape_harness.steering.hooks.SteeringHooks` (every position steered), all with one model.

Example:
    >>> lens = LogitLens(model, tokenizer, ["de", "fr", "en"], neurons=neuron_set)   # doctest: +SKIP
    >>> result = lens.run(["Q: Wie heißt du? \\nA:"], ["none", "-de+fr"])            # doctest: +SKIP
    >>> result["plans"]["-de+fr"]["mass"]["fr"][-1]                                  # doctest: +SKIP
    0.41
"""

from __future__ import annotations

import os
from typing import Any

import torch

from lape_harness.errors import InputError, LapeError
from lape_harness.neurons import NeuronSet
from lape_harness.sites import decoder_layers, final_norm, unwrap
from lape_harness.steering import AutoPlan, SteeringHooks, parse_steer
from lape_harness.task_support.vocab_languages import VocabularyLanguages, vocabulary_languages


class LogitLens:
    """One model, its vocabulary's language assignment, and (with ``neurons``) steering hooks."""

    def __init__(self, model: torch.nn.Module, tokenizer, languages: list[str], neurons: NeuronSet | None = None,
                 top_k: int = 5, min_letters: int = 4, vocabulary: VocabularyLanguages | None = None):
        self.model, self.tokenizer, self.top_k = model, tokenizer, top_k
        inner = unwrap(model)
        self.layers = list(decoder_layers(inner)[0])
        self.norm = final_norm(inner)
        self.head = inner.get_output_embeddings()
        if self.head is None:
            raise InputError("this model has no output embeddings (LM head); the logit lens needs a causal LM")
        config = inner.config
        text_config = getattr(config, "text_config", config)
        self.softcap = getattr(text_config, "final_logit_softcapping", None)
        self.scale = getattr(text_config, "logit_scale", None)  # Cohere / Aya multiply the head's logits
        size = int(self.head.weight.shape[0])
        self.vocabulary = vocabulary or vocabulary_languages(tokenizer, languages, size, min_letters)
        self.hooks = SteeringHooks(model, neurons, scope="all")
        self.device = next(model.parameters()).device

    def _lens_logits(self, residual: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.norm(residual)).float()
        if self.scale is not None:
            logits = logits * self.scale
        return torch.tanh(logits / self.softcap) * self.softcap if self.softcap else logits

    @torch.no_grad()
    def prompt_layers(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(probabilities [layers, vocab], model logits [vocab])`` at the last position of ``prompt``."""
        residuals: list[torch.Tensor] = []

        def record(module, inputs, output):
            hidden = output[0] if isinstance(output, tuple) else output
            residuals.append(hidden[:, -1:, :])

        ids = self.tokenizer(prompt, return_tensors="pt")["input_ids"].to(self.device)
        handles = [layer.register_forward_hook(record) for layer in self.layers]
        try:
            with self.hooks.active(generating=False):
                logits = self.model(input_ids=ids).logits[0, -1].float()
        finally:
            for handle in handles:
                handle.remove()
        if len(residuals) != len(self.layers):
            raise LapeError(f"{len(residuals)} of {len(self.layers)} decoder layers ran; the logit lens needs each once")
        lens_logits = torch.cat([self._lens_logits(residual) for residual in residuals], dim=1)[0]
        if not torch.allclose(lens_logits[-1], logits, rtol=1e-3, atol=1e-3 * float(logits.abs().max()) + 1e-4):
            raise LapeError(
                "the final norm and LM head applied to the last decoder layer do not reproduce this model's logits "
                f"(max difference {float((lens_logits[-1] - logits).abs().max()):.3g}): its head does more than "
                "norm and projection, so a logit lens through them would mislead"
            )
        return torch.softmax(lens_logits, dim=-1), logits

    def run(self, prompts: list[str], plans: list[str]) -> dict[str, Any]:
        """Per plan: the mean mass per category and layer over ``prompts``, and each prompt's
        per-layer masses and top tokens."""
        if not prompts:
            raise InputError("no prompts: pass --prompts FILE or --forcing LANG")
        categories = self.vocabulary.categories
        category = self.vocabulary.category.to(self.device)
        results = {}
        for spec in plans:
            plan = parse_steer(spec)
            if isinstance(plan, AutoPlan):
                raise InputError(f"steer={plan} picks a plan per task; the lens needs explicit plans, e.g. -de+fr")
            if plan and self.hooks.neurons is not None:
                plan.check_languages(self.hooks.neurons)
            self.hooks.use(plan)
            rows, total = [], torch.zeros(len(self.layers), len(categories), dtype=torch.float64)
            for prompt in prompts:
                probabilities, _ = self.prompt_layers(prompt)
                mass = torch.zeros(len(self.layers), len(categories), dtype=torch.float64, device=self.device)
                mass.index_add_(1, category, probabilities.double())
                total += mass.cpu()
                top = probabilities.topk(self.top_k, dim=-1)
                rows.append({"prompt": prompt, "layers": [
                    {"mass": dict(zip(categories, _round(mass[layer].tolist()))),
                     "top": [[self.tokenizer.decode([int(token)]), round(float(p), 6)]
                             for token, p in zip(top.indices[layer], top.values[layer])]}
                    for layer in range(len(self.layers))]})  # fmt: skip
            mean = total / len(prompts)
            results[str(plan)] = {"mass": {name: _round(mean[:, column].tolist()) for column, name in enumerate(categories)},
                                  "prompts": rows}  # fmt: skip
        self.hooks.use(parse_steer(None))
        return {"categories": categories, "num_layers": len(self.layers), "plans": results}


def _round(values: list[float]) -> list[float]:
    return [round(value, 6) for value in values]


def plot_lens(result: dict[str, Any], path: str | os.PathLike) -> None:
    """One heatmap per plan: layers (rows) × categories (columns), the mean probability mass."""
    import numpy as np

    from lape_harness.analysis.figures import annotate, cell_font, pyplot, save_figure

    plt = pyplot()
    categories, plans = result["categories"], list(result["plans"])
    layers = result["num_layers"]
    figure, axes = plt.subplots(1, len(plans), figsize=(0.45 * len(categories) * len(plans) + 2, 0.32 * layers + 2),
                                squeeze=False)  # fmt: skip
    for axis, plan in zip(axes[0], plans):
        matrix = np.array([result["plans"][plan]["mass"][name] for name in categories]).T
        image = axis.imshow(matrix, cmap="magma_r", vmin=0, vmax=1, aspect="auto")
        annotate(axis, matrix * 100, ".0f", threshold=50, fontsize=cell_font(len(categories)))
        axis.set_xticks(range(len(categories)), categories, rotation=90)
        axis.set_yticks(range(layers), [str(layer) for layer in range(layers)])
        axis.set_xlabel("tokens of language")
        axis.set_ylabel("layer (output of)")
        axis.set_title(f"steer={plan}")
    figure.colorbar(image, ax=axes[0].tolist(), label="probability mass at the last prompt position")
    save_figure(figure, path)
