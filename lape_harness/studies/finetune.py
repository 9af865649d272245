"""Neuron-restricted fine-tuning: train only the weights of one language's neurons.

Neuron ``j`` of a layer owns the rows of the projections that compute it (gated MLPs: gate and
up; non-gated: the input projection and its bias) and input column ``j`` of the down projection
(:func:`~lape_harness.sites.neuron_slices`). Each such weight gets a trainable *change* for
exactly those rows/columns (a ``torch.nn.utils.parametrize`` parametrization: ``W + scatter(Δ)``);
every model parameter is frozen. The optimizer (AdamW) therefore holds only the changes: neither
its momentum nor its weight decay can reach any other entry (weight decay pulls the trained
entries back towards their pretrained values), and its state is as small as the neuron set.
:func:`merge` folds the changes into plain weights.

Batches are drawn by a seeded permutation per epoch of the corpus's fixed-length sequences,
determined by the step number alone, so a run resumed from its checkpoint (changes, optimizer
state and RNG state, written atomically) continues exactly as the uninterrupted run would.

Example:
    >>> deltas = attach(model, neuron_set["mt"])                                    # doctest: +SKIP
    >>> state = train(model, deltas, rows, steps=300, batch_size=4, lr=1e-4, seed=0)  # doctest: +SKIP
    >>> merge(model)                                                                # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from lape_harness.atomic import atomic_path
from lape_harness.errors import InputError
from lape_harness.neurons import LanguageNeurons
from lape_harness.profile import deferred_interrupts, stop_if_interrupted
from lape_harness.sites import find_sites, neuron_slices

DECAY_TARGETS = ("weights", "change")  # what AdamW's weight decay pulls towards 0 (see train)
STATE_FILE = "state.pt"
RECORD_FILE = "lape_harness_finetune.json"  # beside the fine-tuned checkpoint: what it was trained on
STATE_FORMAT = 1


class NeuronDelta(nn.Module):
    """A parametrization ``W ↦ W + Δ`` where ``Δ`` is zero except at ``index`` along ``dim``."""

    def __init__(self, tensor: torch.Tensor, dim: int, index: torch.Tensor):
        super().__init__()
        self.dim = dim
        self.register_buffer("index", index.to(tensor.device))
        shape = list(tensor.shape)
        shape[dim] = int(index.numel())
        self.delta = nn.Parameter(torch.zeros(shape, dtype=tensor.dtype, device=tensor.device))
        self.delta.pretrained = tensor.detach().index_select(dim, self.index).clone()  # for weight decay on weights

    def forward(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.index_add(self.dim, self.index, self.delta)


def attach(model: nn.Module, neurons: LanguageNeurons) -> list[nn.Parameter]:
    """Freeze every parameter of ``model`` and parametrize the weights of ``neurons``; returns the
    trainable changes in a fixed order (layer, then weight)."""
    if len(neurons) == 0:
        raise InputError("this language has no neurons in the neuron set; pick a language (or a top rate) with neurons")
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    sites = find_sites(model)
    layers = [layer for layer in range(len(sites)) if bool((neurons.layer == layer).any())]
    slices = {layer: neuron_slices(model, layer) for layer in layers}  # all found before any is parametrized
    deltas = []
    for layer in layers:
        site, columns = sites[layer], neurons.index[neurons.layer == layer]
        for entry in slices[layer]:
            index = torch.cat([columns + copy * site.width for copy in range(entry.copies)])
            delta = NeuronDelta(getattr(entry.module, entry.name), entry.dim, index)
            parametrize.register_parametrization(entry.module, entry.name, delta)
            deltas.append(delta.delta)
    return deltas


def merge(model: nn.Module) -> None:
    """Fold every :class:`NeuronDelta` into its weight, leaving plain parameters."""
    for module in list(model.modules()):
        if parametrize.is_parametrized(module):
            for name in list(module.parametrizations):
                parametrize.remove_parametrizations(module, name, leave_parametrized=True)


def batch_rows(step: int, batch_size: int, count: int, seed: int) -> list[int]:
    """The sequence indices of batch ``step``: consecutive samples of a seeded permutation per epoch.

    >>> batch_rows(0, 2, 3, seed=0) + batch_rows(1, 2, 3, seed=0) == batch_rows(0, 4, 3, seed=0)
    True
    """
    rows = []
    for sample in range(step * batch_size, (step + 1) * batch_size):
        epoch, position = divmod(sample, count)
        order = torch.randperm(count, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        rows.append(int(order[position]))
    return rows


@dataclass
class TrainState:
    """Where a run stands: steps done and the loss of each."""

    step: int = 0
    losses: list[float] = field(default_factory=list)


def _save_state(folder: Path, deltas, optimizer, state: TrainState, run: dict[str, Any]) -> None:
    payload = {
        "format": STATE_FORMAT, "run": run, "step": state.step, "losses": state.losses,
        "deltas": [delta.detach().cpu() for delta in deltas], "optimizer": optimizer.state_dict(),
        "rng": torch.get_rng_state(), "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }  # fmt: skip
    with atomic_path(folder / STATE_FILE) as temporary:
        torch.save(payload, temporary)


def _load_state(folder: Path, deltas, optimizer, run: dict[str, Any]) -> TrainState | None:
    path = folder / STATE_FILE
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, weights_only=True)
    except Exception:  # torch raises many kinds for a damaged file
        raise InputError(f"checkpoint {str(path)!r} is unreadable; delete it to start the fine-tuning over") from None
    if payload.get("format") != STATE_FORMAT:
        raise InputError(f"checkpoint {str(path)!r} has another format; delete {str(folder)!r} to start over")
    changed = {key: (payload["run"].get(key), value) for key, value in run.items() if payload["run"].get(key) != value}
    if changed:
        described = "; ".join(f"{key}: {old!r} then, {new!r} now" for key, (old, new) in changed.items())
        raise InputError(f"the checkpoint in {str(folder)!r} was made with other settings ({described}); rerun with "
                         f"the same settings, or delete {str(folder)!r} to start over")
    with torch.no_grad():
        for delta, saved in zip(deltas, payload["deltas"], strict=True):
            delta.copy_(saved)
    optimizer.load_state_dict(payload["optimizer"])
    torch.set_rng_state(payload["rng"])
    if payload["cuda_rng"]:
        torch.cuda.set_rng_state_all(payload["cuda_rng"])
    return TrainState(int(payload["step"]), list(payload["losses"]))


def train(model: nn.Module, deltas: list[nn.Parameter], rows: torch.Tensor, *, steps: int, batch_size: int,
          lr: float, seed: int, weight_decay: float = 0.0, decay_on: str = "weights", max_grad_norm: float | None = 1.0,
          labels_from: int = 0, checkpoint_dir: Path | None = None, checkpoint_every: float = 300.0,
          run: dict[str, Any] | None = None, progress: bool = True,
          on_step: Callable[[TrainState], None] | None = None) -> TrainState:
    """Train ``deltas`` for ``steps`` steps of ``batch_size`` rows of ``rows`` ([n, seq_len] token
    ids; positions before ``labels_from`` are not predicted) with AdamW, resuming from
    ``checkpoint_dir`` when it holds a checkpoint of the same ``run``; checkpoints every
    ``checkpoint_every`` seconds, on interruption and at the end.

    As the authors' ``src/finetune.py`` (d-gurgurov/Language-Neurons-Manipulation@d5c7519, where the
    trained rows are the weights themselves): the gradient norm is clipped at ``max_grad_norm``
    (None or 0: no clipping) and decoupled weight decay shrinks the trained *weights* towards 0
    (``decay_on="weights"``: Δ ← Δ − lr·wd·(W₀+Δ) before each AdamW step, which is AdamW's own decay
    on W₀+Δ); ``decay_on="change"`` decays the change towards 0, i.e. the weights towards their
    pretrained values."""
    import time

    from tqdm.auto import tqdm

    check_settings(steps=steps, batch_size=batch_size, lr=lr, weight_decay=weight_decay, max_grad_norm=max_grad_norm)
    if decay_on not in DECAY_TARGETS:
        raise InputError(f"--weight-decay-on {decay_on!r} is not one of {', '.join(DECAY_TARGETS)}")
    device = deltas[0].device
    optimizer = torch.optim.AdamW(deltas, lr=lr, weight_decay=weight_decay if decay_on == "change" else 0.0)
    run = {**(run or {}), "seed": seed, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay,
           "decay_on": decay_on, "max_grad_norm": max_grad_norm or None,
           "rows": int(rows.shape[0]), "seq_len": int(rows.shape[1])}  # fmt: skip
    state = None
    if checkpoint_dir is not None:
        state = _load_state(checkpoint_dir, deltas, optimizer, run)
    if state is None:
        torch.manual_seed(seed)
        state = TrainState()
    model.train()
    last_save = time.monotonic()
    with tqdm(total=steps, initial=min(state.step, steps), desc="fine-tune", unit="step", dynamic_ncols=True,
              disable=not progress) as bar, deferred_interrupts():  # fmt: skip
        try:
            while state.step < steps:
                stop_if_interrupted()
                batch = rows[batch_rows(state.step, batch_size, int(rows.shape[0]), seed)].to(device)
                labels = batch.clone()
                labels[:, :labels_from] = -100
                loss = model(input_ids=batch, labels=labels, use_cache=False).loss
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise InputError(f"the loss became {value} at step {state.step + 1}; lower --lr")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(deltas, max_grad_norm)
                if weight_decay and decay_on == "weights":
                    with torch.no_grad():
                        for delta in deltas:
                            delta.sub_(lr * weight_decay * (delta.pretrained + delta))
                optimizer.step()
                state.step += 1
                state.losses.append(round(value, 6))
                bar.update(1)
                bar.set_postfix(loss=f"{value:.3f}")
                if on_step is not None:
                    on_step(state)
                if checkpoint_dir is not None and time.monotonic() - last_save >= checkpoint_every:
                    _save_state(checkpoint_dir, deltas, optimizer, state, run)
                    last_save = time.monotonic()
        except BaseException:
            if checkpoint_dir is not None and state.step > 0:
                _save_state(checkpoint_dir, deltas, optimizer, state, run)
            raise
        finally:
            model.eval()
    if not all(bool(torch.isfinite(delta).all()) for delta in deltas):  # the last update is after the last loss
        raise InputError(f"the trained changes are not finite after step {state.step} (the last update diverged); "
                         "lower --lr")
    if checkpoint_dir is not None:
        _save_state(checkpoint_dir, deltas, optimizer, state, run)
    return state


def check_settings(**settings: float | None) -> None:
    """Training settings, before anything loads: counts positive whole numbers, ``lr`` finite and
    positive, ``weight_decay`` finite and not negative (None: not set).

    >>> check_settings(steps=10, lr=float("nan"))
    Traceback (most recent call last):
    lape_harness.errors.InputError: --lr must be a finite number above 0, got nan
    """
    for name, value in settings.items():
        flag = "--" + name.replace("_", "-")
        if value is None:
            continue
        if name in ("lr", "weight_decay", "max_grad_norm"):
            bound = "above 0" if name == "lr" else "0 or more"
            if not math.isfinite(value) or value < 0 or (name == "lr" and value == 0):
                raise InputError(f"{flag} must be a finite number {bound}, got {value}")
        elif value <= 0:
            raise InputError(f"{flag} must be a positive integer, got {value}")


@torch.no_grad()
def perplexity(model: nn.Module, rows: list[list[int]], labels_from: int = 0) -> float:
    """Token perplexity of ``model`` on ``rows`` (token-id lists, each run alone), positions before
    ``labels_from`` not predicted: exp(total negative log-likelihood / predicted tokens)."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for row in rows:
        ids = torch.tensor([row], device=device)
        logits = model(input_ids=ids, use_cache=False).logits[0, :-1].float()
        targets = ids[0, 1:]
        start = max(labels_from - 1, 0)
        losses = torch.nn.functional.cross_entropy(logits[start:], targets[start:], reduction="sum")
        total += float(losses)
        count += int(targets[start:].numel())
    if count == 0:
        raise InputError("the held-out text gave no tokens to predict; give longer held-out text")
    return math.exp(total / count)


def run_finetune(model: str, neurons: str | Path, language: str, out: str | Path, *, corpus: str | None = None,
                 heldout: str | Path | None = None, steps: int = 300, seq_len: int = 128, batch_size: int = 4,
                 max_tokens: int | None = None, lr: float = 1e-4, weight_decay: float = 0.0,
                 decay_on: str = "weights", max_grad_norm: float | None = 1.0, seed: int = 0,
                 dtype: str = "auto", device: str | None = None, checkpoint_every: float = 300.0,
                 overwrite: bool = False, allow_other_model: bool = False, progress: bool = True,
                 note: Callable[[str], None] = print) -> dict[str, Any]:
    """The whole workflow of ``lape-harness finetune``: check the inputs, load the model, train
    ``language``'s neurons of the set at ``neurons`` on ``corpus`` (profile's corpus forms; default
    the starter corpus), score the held-out text before and after (default: the language's
    ``lape_ppl`` text), write a standard checkpoint to ``out`` with its record
    (:data:`RECORD_FILE`); resumes from ``<out>.partial``. Returns the record.

    >>> record = run_finetune("lape:gemma-3-270m", "neuron_cache/gemma-3-270m/lape-top3.safetensors", "mt",
    ...                       "finetuned/gemma-mt", steps=100)   # doctest: +SKIP
    >>> record["heldout_token_perplexity"]                          # doctest: +SKIP
    {'before': 289.76, 'after': 86.63}
    """
    import shutil

    from lape_harness.corpora import Packing, TextFile, open_corpus
    from lape_harness.identity import model_identity, pretrained_identity
    from lape_harness.languages import normalize_code
    from lape_harness.model_loading import dtype_name, load_model, pick_device
    from lape_harness.neurons import NeuronSet
    from lape_harness.path_checks import check_output_dir
    from lape_harness.paths import corpus_dir
    from lape_harness.steering.bake import write_checkpoint
    from lape_harness.task_support.task_data import heldout_path

    check_settings(steps=steps, seq_len=seq_len, batch_size=batch_size, max_tokens=max_tokens, lr=lr,
                   weight_decay=weight_decay, max_grad_norm=max_grad_norm)
    language = normalize_code(language)
    out = check_output_dir(out, "--out")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise InputError(f"{out} already exists and is not empty; choose another --out or pass --overwrite")
    partial = check_output_dir(out.with_name(out.name + ".partial"), "the checkpoint folder of --out")
    source = open_corpus(corpus or str(corpus_dir() / "train"), [language])[language]
    heldout_file = Path(heldout) if heldout else heldout_path(language)
    if heldout and not heldout_file.is_file():
        raise InputError(f"--heldout {str(heldout)!r} does not exist; pass a text file (paragraphs separated by blank lines)")
    heldout_source = TextFile(language, heldout_file) if heldout_file.is_file() else None
    if heldout_source is None:
        note(f"note: no held-out text for {language!r} at {heldout_file}; perplexity is not scored")
    neuron_set = NeuronSet.load(neurons)
    language_neurons = neuron_set[language]
    if len(language_neurons) == 0:
        with_neurons = ", ".join(code for code, count in neuron_set.counts().items() if count)
        raise InputError(f"{language!r} has no neurons in {neurons} (languages with neurons: {with_neurons}); "
                         "pick one of those, or a set of a higher top rate")
    neuron_set.check_model(pretrained_identity(model), allow_other_model, str(neurons))

    placed = torch.device(pick_device(device))
    dtype_used = dtype_name(dtype, placed.type == "cuda")
    loaded, tokenizer = load_model(model, None, getattr(torch, dtype_used), placed, None)
    packing = Packing.for_tokenizer(tokenizer, seq_len)
    chunks = [chunk for chunk in packing.chunks(source.documents(), tokenizer, max_tokens)
              if len(chunk) == packing.chunk_len]  # fmt: skip
    if not chunks:
        raise InputError(f"the corpus for {language!r} ({source.source}) gives no sequence of --seq-len {seq_len} "
                         "tokens; lower --seq-len or add text")
    rows = torch.tensor([packing.prefix + chunk for chunk in chunks], dtype=torch.long)
    heldout_rows = [packing.prefix + chunk for chunk in packing.chunks(heldout_source.documents(), tokenizer)] \
        if heldout_source is not None else []
    start = len(packing.prefix)
    before = perplexity(loaded, heldout_rows, start) if heldout_rows else None

    deltas = attach(loaded, language_neurons)
    run_key = {"model": model_identity(loaded)["config_hash"], "neurons": neuron_set.content_hash(),
               "language": language, "corpus": source.source, "corpus_sha256": source.fingerprint(),
               "max_tokens": max_tokens, "dtype": dtype_used}  # fmt: skip
    state = train(loaded, deltas, rows, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                  weight_decay=weight_decay, decay_on=decay_on, max_grad_norm=max_grad_norm,
                  labels_from=start, checkpoint_dir=partial,
                  checkpoint_every=checkpoint_every, run=run_key, progress=progress)  # fmt: skip
    merge(loaded)
    after = perplexity(loaded, heldout_rows, start) if heldout_rows else None
    record = {
        "source_model": model, "neurons": str(neurons), "neurons_hash": neuron_set.content_hash(),
        "language": language, "neuron_count": len(language_neurons),
        "trained_weights": sum(delta.numel() for delta in deltas),
        "corpus": source.source, "corpus_sha256": source.fingerprint(), "training_sequences": int(rows.shape[0]),
        "steps": state.step, "seq_len": seq_len, "batch_size": batch_size, "lr": lr,
        "weight_decay": weight_decay, "decay_on": decay_on, "max_grad_norm": max_grad_norm or None, "seed": seed,
        "dtype": dtype_used, "losses": state.losses,
        "heldout": str(heldout_file) if heldout_source else None,
        "heldout_token_perplexity": {"before": before, "after": after},
    }  # fmt: skip
    loaded.config.lape_harness_finetune = {key: value for key, value in record.items() if key != "losses"}
    write_checkpoint(out, loaded, tokenizer, RECORD_FILE, record)
    shutil.rmtree(partial, ignore_errors=True)
    return record
