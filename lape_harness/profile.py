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
import json
import signal
import threading
import time
from array import array
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from lape_harness.atomic import atomic_path
from lape_harness.corpora import Packing, TextSource
from lape_harness.errors import HookNeverFiredError, InputError
from lape_harness.neurons import ActivationStats, model_identity
from lape_harness.sites import NeuronSite, find_sites, unwrap

CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class Distributed:
    """This process's place among the profiling processes (``rank`` of ``world``)."""

    rank: int = 0
    world: int = 1
    device: torch.device | None = None  # where collective ops run (CUDA for nccl), None = CPU

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, use_cuda: bool) -> Distributed:
        """Join the process group that ``torchrun`` / ``accelerate launch`` describe in the environment
        (gloo on CPU, nccl on CUDA); a single process when ``WORLD_SIZE`` is unset or 1."""
        import os

        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        import torch.distributed as torch_dist

        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device("cuda", local_rank) if use_cuda else None
        if device is not None:
            torch.cuda.set_device(device)
        if not torch_dist.is_initialized():
            torch_dist.init_process_group("nccl" if use_cuda else "gloo")
        return cls(torch_dist.get_rank(), torch_dist.get_world_size(), device)

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as torch_dist

            torch_dist.barrier()


@dataclass
class Tally:
    """One language's running statistics on each layer's device, plus the stream position."""

    over_zero: list[torch.Tensor]  # per layer: int64 [width]
    activation_sum: list[torch.Tensor]  # per layer: float64 [width]
    tokens: int = 0
    position: int = 0  # sequences of the (global) stream consumed so far
    stream_sha256: str = ""  # hash of the token ids of those sequences
    done: bool = False

    @classmethod
    def empty(cls, sites: list[NeuronSite]) -> Tally:
        return cls(
            [torch.zeros(site.width, dtype=torch.int64, device=site.device) for site in sites],
            [torch.zeros(site.width, dtype=torch.float64, device=site.device) for site in sites],
        )

    def cpu(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(over_zero [L, I], activation_sum [L, I])`` on the CPU."""
        return torch.stack([t.cpu() for t in self.over_zero]), torch.stack([t.cpu() for t in self.activation_sum])


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
            activation = output.reshape(rows, self.seq_len, site.width)
            full = self.lengths.count(self.seq_len)
            counts = torch.empty(rows, site.width, dtype=torch.int32, device=output.device)
            sums = torch.empty(rows, site.width, dtype=torch.float32, device=output.device)
            if full:
                counted = activation[:full, self.start :]
                torch.sum(counted > 0, dim=1, dtype=torch.int32, out=counts[:full])  # int32: ~3x faster than int64
                torch.sum(counted, dim=1, dtype=torch.float32, out=sums[:full])
            for row in range(full, rows):
                counted = activation[row, self.start : self.lengths[row]]
                torch.sum(counted > 0, dim=0, dtype=torch.int32, out=counts[row])
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
            tally.over_zero[layer] += counts.sum(dim=0, dtype=torch.int64)
            sums = sums.double()
            for row in sums:  # sequence by sequence, in stream order: independent of the batch size
                tally.activation_sum[layer] += row
        self.pending = [None] * len(self.sites)


class Checkpoints:
    """Per-language, per-rank partial statistics in ``folder`` (atomic safetensors files)."""

    def __init__(self, folder: str | Path, dist: Distributed):
        self.folder = Path(folder)
        self.dist = dist
        foreign = sorted(
            path.name for path in self.folder.glob("*.rank*-of-*.safetensors")
            if not path.name.endswith(f"-of-{dist.world}.safetensors")
        ) if self.folder.is_dir() else []
        if foreign:
            raise InputError(
                f"the checkpoints in {str(self.folder)!r} ({foreign[0]}, ...) come from a run with another number "
                f"of processes; resume with that number, or delete {str(self.folder)!r} to start over"
            )

    def path(self, language: str) -> Path:
        return self.folder / f"{language}.rank{self.dist.rank}-of-{self.dist.world}.safetensors"

    def save(self, language: str, tally: Tally, run: dict[str, Any]) -> None:
        over_zero, activation_sum = tally.cpu()
        meta = {
            "format": CHECKPOINT_FORMAT, "run": run, "tokens": tally.tokens, "position": tally.position,
            "stream_sha256": tally.stream_sha256, "done": tally.done,
        }
        with atomic_path(self.path(language)) as temporary:
            save_file(
                {"over_zero": over_zero, "activation_sum": activation_sum}, str(temporary),
                metadata={"lape_harness_checkpoint": json.dumps(meta, sort_keys=True)},
            )

    def load(self, language: str, sites: list[NeuronSite], run: dict[str, Any]) -> Tally | None:
        path = self.path(language)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as handle:
                meta = json.loads(handle.metadata()["lape_harness_checkpoint"])
                over_zero, activation_sum = handle.get_tensor("over_zero"), handle.get_tensor("activation_sum")
        except (SafetensorError, OSError, KeyError, TypeError, ValueError):
            raise InputError(f"checkpoint {str(path)!r} is unreadable; delete it to redo {language!r} from the start") from None
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise InputError(f"checkpoint {str(path)!r} has another format; delete {str(self.folder)!r} to start over")
        changed = {key: (meta["run"].get(key), value) for key, value in run.items() if meta["run"].get(key) != value}
        if "input_sha256" in changed:
            raise InputError(
                f"the corpus for {language!r} ({run['source']}) changed since the interrupted run checkpointed it in "
                f"{str(self.folder)!r}; restore the corpus, or delete {str(self.folder)!r} to start over"
            )
        if changed:
            described = "; ".join(f"{key}: {old!r} then, {new!r} now" for key, (old, new) in changed.items())
            raise InputError(
                f"the checkpoint for {language!r} in {str(self.folder)!r} was made with other settings ({described}); "
                f"rerun with the same settings, or delete {str(self.folder)!r} to start over"
            )
        return Tally(
            [over_zero[layer].to(site.device) for layer, site in enumerate(sites)],
            [activation_sum[layer].to(site.device) for layer, site in enumerate(sites)],
            tokens=int(meta["tokens"]), position=int(meta["position"]),
            stream_sha256=str(meta["stream_sha256"]), done=bool(meta["done"]),
        )

    def clear(self, languages: list[str]) -> None:
        """Remove this rank's checkpoints (and the folder once empty) after the result is written,
        with the temporary files of checkpoint writes that a killed run left behind."""
        for language in languages:
            self.path(language).unlink(missing_ok=True)
        if self.folder.is_dir():  # every rank is past its last write (a barrier comes first)
            for orphan in self.folder.glob(".*.rank*-of-*.safetensors.*.tmp"):
                orphan.unlink(missing_ok=True)
        try:
            self.folder.rmdir()
        except OSError:
            pass  # other ranks' files are still there, or it is already gone


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
    input_device = body.get_input_embeddings().weight.device
    identity = model_identity(model)
    dtype = str(sites[0].dtype).replace("torch.", "")
    checkpoints = Checkpoints(checkpoint_dir, dist) if checkpoint_dir is not None else None

    languages, over_zero, activation_sum, tokens, provenance = [], [], [], [], {}
    with torch.inference_mode(), NeuronRecorder(sites) as recorder, _deferred_interrupts():
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
                    _stop_if_interrupted()
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


def _stop_if_interrupted() -> None:
    if _interrupted.is_set():
        _interrupted.clear()
        raise KeyboardInterrupt


@contextmanager
def _deferred_interrupts():
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
