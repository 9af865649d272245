"""Activation statistics per language, collected with forward hooks on every neuron site.

For each language the text is packed into ``seq_len``-token rows (see
:mod:`lape_harness.corpora`) and run through the model's decoder body only (no LM head,
no KV cache, no gradient). A hook on each layer's neuron activation reduces the batch to,
per sequence, the count of tokens with activation > 0 and the sum of activations, over the
counted positions only (never the start tokens added by the profiler, never padding).
Activations stay in the model dtype; counts are integers and sums are taken in float32 per
sequence, then added sequence by sequence in float64 in stream order, so the statistics do
not depend on the batch size.

Runs are resumable: every ``checkpoint_every`` seconds, at the end of each language, and on
an interruption, the partial statistics and the stream position are written atomically to
``checkpoint_dir``; the same call later continues from there. Under ``torchrun`` /
``accelerate launch`` each rank takes every ``world``-th sequence, checkpoints its own share,
and the statistics are summed over ranks at the end.

Example:
    >>> sources = open_corpus("corpus/train", ["de", "en"])                       # doctest: +SKIP
    >>> stats = profile_model(model, tokenizer, sources, seq_len=512, batch_size=8,
    ...                       max_tokens=100_000, checkpoint_dir="stats.partial")  # doctest: +SKIP
    >>> stats.save("neuron_cache/my-model/stats.safetensors")                      # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import signal
import threading
import time
from array import array
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lape_harness.corpora import Packing, TextSource
from lape_harness.errors import HookNeverFiredError, InputError
from lape_harness.identity import model_identity
from lape_harness.neurons import ActivationStats
from lape_harness.profile_state import CHECKPOINT_FORMAT, Checkpoints, Distributed, Tally
from lape_harness.sites import NeuronSite, execution_device, find_sites, unwrap

__all__ = ["CHECKPOINT_FORMAT", "Checkpoints", "Distributed", "HookNeverFiredError", "NeuronRecorder", "Tally",
           "count_positive", "profile_model"]

# Elements compared per step when counting activations > 0: bounds the temporary bool and int32
# tensors of one layer's hook to 80 MB whatever the batch size, sequence length and width.
COUNT_CHUNK = 1 << 24


def count_positive(values: torch.Tensor, dim: int, out: torch.Tensor) -> torch.Tensor:
    """``out`` ← how many entries of ``values`` are > 0 along ``dim`` (``out`` is int32).

    torch's ``(values > 0).sum(dtype=torch.int32)`` first copies the whole boolean tensor to
    int32 (4 bytes per activation: 1.9 GB per layer at batch 8 × 4,096 tokens × 14,336 neurons), so
    the positions along ``dim`` are taken :data:`COUNT_CHUNK` elements at a time. Exact: integer sums.

    >>> values = torch.tensor([[[1.0, -1.0], [2.0, 0.0], [-3.0, 4.0]]])
    >>> count_positive(values, 1, torch.empty(1, 2, dtype=torch.int32)).tolist()
    [[2, 1]]
    """
    length = values.shape[dim]
    step = max(1, COUNT_CHUNK // max(1, values.numel() // max(1, length)))
    if step >= length:
        return torch.sum(values > 0, dim=dim, dtype=torch.int32, out=out)
    out.zero_()
    for start in range(0, length, step):
        out += torch.sum(values.narrow(dim, start, min(step, length - start)) > 0, dim=dim, dtype=torch.int32)
    return out


class NeuronRecorder:
    """Forward hooks that reduce each batch to per-sequence counts (> 0) and sums, per layer.

    Before a forward pass, :meth:`expect` says which positions count: ``[start, length)`` of
    each row. After it, :meth:`commit` adds the batch to a :class:`Tally` (and fails if a
    hook did not fire exactly once).
    """

    def __init__(self, sites: list[NeuronSite]):
        self.sites = sites
        self.pending: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(sites)
        self.start = 0
        self.lengths: list[int] = []
        self.seq_len = 0
        self._handles: list[Any] = []

    def __enter__(self) -> NeuronRecorder:
        self._handles = [site.activation.register_forward_hook(self._hook(site)) for site in self.sites]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def expect(self, start: int, lengths: list[int], seq_len: int) -> None:
        """The next batch: rows of ``seq_len`` tokens, row ``b`` counted on ``[start, lengths[b])``;
        rows shorter than ``seq_len`` (only a stream's last chunk is) come last."""
        full = lengths.count(seq_len)
        if lengths[:full] != [seq_len] * full:
            raise InputError(f"shorter rows must come last, got lengths {lengths}; put the full-length rows first")
        self.start, self.lengths, self.seq_len = start, lengths, seq_len
        self.pending = [None] * len(self.sites)

    def _hook(self, site: NeuronSite):
        def hook(module, inputs, output):
            if self.pending[site.layer] is not None:
                raise HookNeverFiredError(
                    f"the hook on {site.name} fired twice in one forward pass (is the module shared "
                    "between layers?); lape-harness needs one activation module per layer"
                )
            rows = len(self.lengths)
            if output.shape[-1] != site.width or output.numel() != rows * self.seq_len * site.width:
                raise HookNeverFiredError(
                    f"{site.name} produced shape {tuple(output.shape)}, expected [{rows}, {self.seq_len}, {site.width}]: "
                    "it is not this architecture's neuron activation; correct its entry in lape_harness.sites.SITE_TABLE"
                )
            if output.device.type == "meta":
                raise InputError(
                    f"{site.name} ran on the meta device: the model's weights were never loaded there (a model "
                    "built on meta without accelerate's offload hooks); load it with from_pretrained, with "
                    "--device-map for CPU/disk offload"
                )
            activation = output.reshape(rows, self.seq_len, site.width)
            full = self.lengths.count(self.seq_len)
            counts = torch.empty(rows, site.width, dtype=torch.int32, device=output.device)
            sums = torch.empty(rows, site.width, dtype=torch.float32, device=output.device)
            if full:
                counted = activation[:full, self.start :]
                count_positive(counted, 1, counts[:full])  # int32: ~3x faster than int64
                torch.sum(counted, dim=1, dtype=torch.float32, out=sums[:full])
            for row in range(full, rows):
                counted = activation[row, self.start : self.lengths[row]]
                count_positive(counted, 0, counts[row])
                torch.sum(counted, dim=0, dtype=torch.float32, out=sums[row])
            self.pending[site.layer] = (counts, sums)

        return hook

    def commit(self, tally: Tally) -> None:
        missing = [site.name for site, entry in zip(self.sites, self.pending) if entry is None]
        if missing:
            raise HookNeverFiredError(
                f"the hooks on {', '.join(missing)} never fired during the forward pass: this model computes its "
                "MLP in a fused kernel (or something replaced those modules), so lape-harness cannot see the "
                "neuron activations; load the model with plain transformers modules (no fused MLP kernels)"
            )
        for layer, (counts, sums) in enumerate(self.pending):
            device = tally.over_zero[layer].device  # where the layer computes (no copy) or the CPU
            tally.over_zero[layer] += counts.sum(dim=0, dtype=torch.int64).to(device)
            sums = sums.to(device, torch.float64)
            for row in sums:  # sequence by sequence, in stream order: independent of the batch size
                tally.activation_sum[layer] += row
        self.pending = [None] * len(self.sites)


def profile_model(
    model: torch.nn.Module,
    tokenizer,
    sources: dict[str, TextSource],
    *,
    seq_len: int = 512,
    batch_size: int = 8,
    max_tokens: int | None = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: float = 300.0,
    progress: bool = True,
    dist: Distributed | None = None,
) -> ActivationStats:
    """Profile ``model`` on every language of ``sources`` (in order); see the module docstring.

    Returns the statistics (summed over all ranks under torch.distributed; every rank gets
    them). ``checkpoint_dir`` enables resuming; remove it with :meth:`Checkpoints.clear`
    after saving the result.
    """
    if batch_size <= 0:
        raise InputError(f"--batch-size must be positive, got {batch_size}")
    if max_tokens is not None and max_tokens <= 0:
        raise InputError(f"--max-tokens must be positive, got {max_tokens}")
    dist = dist or Distributed()
    sites = find_sites(model)
    packing = Packing.for_tokenizer(tokenizer, seq_len)
    body = unwrap(model).base_model
    input_device = execution_device(body.get_input_embeddings())  # not meta when accelerate offloads it
    identity = model_identity(model)
    dtype = str(sites[0].dtype).replace("torch.", "")
    checkpoints = Checkpoints(checkpoint_dir, dist) if checkpoint_dir is not None else None

    languages, over_zero, activation_sum, tokens, provenance = [], [], [], [], {}
    with torch.inference_mode(), NeuronRecorder(sites) as recorder, deferred_interrupts():
        session = _Session(body, input_device, packing, tokenizer, recorder, batch_size, max_tokens, checkpoints,
                           checkpoint_every, progress and dist.is_main, dist)
        for language, source in sources.items():
            run = {
                "model": identity["config_hash"], "seq_len": seq_len, "prefix": packing.prefix,
                "max_tokens": max_tokens, "dtype": dtype, "source": source.source, "input_sha256": source.fingerprint(),
            }
            tally = (checkpoints.load(language, sites, run) if checkpoints else None) or Tally.empty(sites)
            if not tally.done:
                session.run_language(language, source, tally, run)
            counts, sums = tally.cpu()
            languages.append(language)
            over_zero.append(counts)
            activation_sum.append(sums)
            tokens.append(tally.tokens)
            provenance[language] = {"source": source.source, "sha256": run["input_sha256"],
                                    "tokens_sha256": tally.stream_sha256}
    stats = ActivationStats(
        languages, torch.stack(over_zero), torch.stack(activation_sum), torch.tensor(tokens, dtype=torch.int64),
        {"model": identity, "seq_len": seq_len, "dtype": dtype, "prefix_tokens": packing.prefix,
         "max_tokens": max_tokens, "sources": provenance, "world_size": dist.world},
    )
    if dist.world > 1:
        _all_reduce(stats, dist)
    empty = [language for language, count in zip(stats.languages, stats.tokens.tolist()) if count == 0]
    if empty:
        raise InputError(f"no text for {', '.join(empty)}: the corpus gave no tokens; add text or drop those languages")
    return stats


@dataclass
class _Session:
    """What one :func:`profile_model` call needs to run a language: model body, packing, options."""

    body: torch.nn.Module
    input_device: torch.device
    packing: Packing
    tokenizer: Any
    recorder: NeuronRecorder
    batch_size: int
    max_tokens: int | None
    checkpoints: Checkpoints | None
    checkpoint_every: float
    progress: bool
    dist: Distributed

    def forward(self, tally: Tally, chunks: list[list[int]]) -> None:
        """One batch: start tokens + chunk + filler up to ``seq_len`` per row; the body only."""
        packing = self.packing
        rows = [packing.prefix + chunk + chunk[-1:] * (packing.chunk_len - len(chunk)) for chunk in chunks]
        self.recorder.expect(len(packing.prefix), [len(packing.prefix) + len(chunk) for chunk in chunks],
                             packing.seq_len)
        self.body(input_ids=torch.tensor(rows, dtype=torch.long, device=self.input_device), use_cache=False)
        self.recorder.commit(tally)
        tally.tokens += sum(len(chunk) for chunk in chunks)

    def run_language(self, language: str, source: TextSource, tally: Tally, run: dict[str, Any]) -> None:
        """Stream ``source`` into ``tally`` from its position on, checkpointing as configured."""
        from tqdm.auto import tqdm

        dist, checkpoints = self.dist, self.checkpoints
        hasher = hashlib.sha256()
        resume_at, last_save = tally.position, time.monotonic()
        batch: list[list[int]] = []
        total = None if self.max_tokens is None else -(-self.max_tokens // dist.world)
        with tqdm(total=total, initial=tally.tokens, desc=language, unit="tok", unit_scale=True, dynamic_ncols=True,
                  disable=not self.progress) as bar:
            try:
                seen = 0
                for chunk in self.packing.chunks(source.documents(), self.tokenizer, self.max_tokens):
                    stop_if_interrupted()
                    seen += 1
                    hasher.update(array("q", chunk).tobytes())
                    if seen <= resume_at:
                        if seen == resume_at and hasher.hexdigest() != tally.stream_sha256:
                            raise InputError(_changed_stream(language, source, checkpoints))
                        continue
                    if (seen - 1) % dist.world == dist.rank:
                        batch.append(chunk)
                    if len(batch) == self.batch_size:
                        self.forward(tally, batch)
                        bar.update(sum(len(chunk) for chunk in batch))
                        batch = []
                        tally.position, tally.stream_sha256 = seen, hasher.hexdigest()
                        if checkpoints and time.monotonic() - last_save >= self.checkpoint_every:
                            checkpoints.save(language, tally, run)
                            last_save = time.monotonic()
                if seen < resume_at:
                    raise InputError(_changed_stream(language, source, checkpoints))
                if batch:
                    self.forward(tally, batch)
                    bar.update(sum(len(chunk) for chunk in batch))
                tally.position, tally.stream_sha256, tally.done = seen, hasher.hexdigest(), True
            except BaseException:
                if checkpoints and not tally.done and tally.position > resume_at:
                    checkpoints.save(language, tally, run)
                raise
        if checkpoints:
            checkpoints.save(language, tally, run)


def _changed_stream(language: str, source: TextSource, checkpoints: Checkpoints | None) -> str:
    folder = str(checkpoints.folder) if checkpoints else "the checkpoint folder"
    return (
        f"the token stream for {language!r} ({source.source}) differs from the one the interrupted run checkpointed "
        f"in {folder!r} (changed data or tokenizer); restore them, or delete {folder!r} to start over"
    )


def _all_reduce(stats: ActivationStats, dist: Distributed) -> None:
    import torch.distributed as torch_dist

    for name in ("over_zero", "activation_sum", "tokens"):
        tensor = getattr(stats, name)
        reduced = tensor.to(dist.device) if dist.device is not None else tensor.clone()
        torch_dist.all_reduce(reduced, op=torch_dist.ReduceOp.SUM)
        setattr(stats, name, reduced.cpu())


_interrupted = threading.Event()


def stop_if_interrupted() -> None:
    if _interrupted.is_set():
        _interrupted.clear()
        raise KeyboardInterrupt


@contextmanager
def deferred_interrupts():
    """Turn Ctrl-C / SIGTERM into a stop at the next batch boundary (a second Ctrl-C stops at once)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request_stop(signum, frame):
        if _interrupted.is_set():
            raise KeyboardInterrupt
        _interrupted.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    _interrupted.clear()
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _interrupted.clear()
