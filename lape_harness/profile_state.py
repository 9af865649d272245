"""What a profiling run keeps between batches and between runs: this process's place among the
profiling processes (:class:`Distributed`), one language's running statistics (:class:`Tally`)
and their checkpoints on disk (:class:`Checkpoints`), from which an interrupted run resumes.

The running statistics live where each layer computes (:attr:`NeuronSite.execution_device
<lape_harness.sites.NeuronSite.execution_device>`): for a layer that accelerate offloads to the
CPU or disk, whose weights wait on ``meta``, that is accelerate's execution device, never ``meta``.

Example:
    >>> dist = Distributed()                      # a single process
    >>> dist.is_main, dist.world
    (True, 1)
    >>> checkpoints = Checkpoints("stats.partial", dist)          # doctest: +SKIP
    >>> tally = checkpoints.load("de", sites, run) or Tally.empty(sites)  # doctest: +SKIP
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from lape_harness.atomic import atomic_path
from lape_harness.errors import InputError
from lape_harness.sites import NeuronSite

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
    """One language's running statistics where each layer computes, plus the stream position."""

    over_zero: list[torch.Tensor]  # per layer: int64 [width], on counter_device(site)
    activation_sum: list[torch.Tensor]  # per layer: float64 [width]
    tokens: int = 0
    position: int = 0  # sequences of the (global) stream consumed so far
    stream_sha256: str = ""  # hash of the token ids of those sequences
    done: bool = False

    @classmethod
    def empty(cls, sites: list[NeuronSite]) -> Tally:
        devices = [counter_device(site) for site in sites]
        return cls(
            [torch.zeros(site.width, dtype=torch.int64, device=device) for site, device in zip(sites, devices)],
            [torch.zeros(site.width, dtype=torch.float64, device=device) for site, device in zip(sites, devices)],
        )

    def cpu(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(over_zero [L, I], activation_sum [L, I])`` on the CPU."""
        return torch.stack([t.cpu() for t in self.over_zero]), torch.stack([t.cpu() for t in self.activation_sum])


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
            [over_zero[layer].to(counter_device(site)) for layer, site in enumerate(sites)],
            [activation_sum[layer].to(counter_device(site)) for layer, site in enumerate(sites)],
            tokens=int(meta["tokens"]), position=int(meta["position"]),
            stream_sha256=str(meta["stream_sha256"]), done=bool(meta["done"]),
        )

    def clear(self, languages: list[str]) -> None:
        """Remove this rank's checkpoints (and the folder once empty) after the result is written,
        with the temporary files of checkpoint writes that a killed run left behind."""
        for language in languages:
            self.path(language).unlink(missing_ok=True)
        try:  # every rank is past its last write (a barrier comes first); another rank may remove the folder
            for orphan in list(self.folder.glob(".*.rank*-of-*.safetensors.*.tmp")):
                orphan.unlink(missing_ok=True)
        except FileNotFoundError:
            return
        try:
            self.folder.rmdir()
        except OSError:
            pass  # other ranks' files are still there, or it is already gone


def counter_device(site: NeuronSite) -> torch.device:
    """Where a layer's running counts and sums live: where the layer computes, or the CPU for a
    layer on ``meta`` with no accelerate hook (adding to a ``meta`` tensor records nothing)."""
    device = site.execution_device
    return torch.device("cpu") if device.type == "meta" else device
