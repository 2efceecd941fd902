"""Distributed data parallel helpers (torchrun / ``env://``), and a resumable sharding sampler.

Launch (one node, 8 GPUs)::

    torchrun --nproc_per_node 8 -m anydepth.cli.main train --config configs/train/anydepth_vitb16.yaml

Multi-node: add ``--nnodes N --node_rank R --rdzv_backend c10d --rdzv_endpoint HOST:PORT`` (see
docs/training.md). The process group is initialised from the environment variables torchrun sets
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``); NCCL is used on CUDA devices and
gloo on CPU. Without those variables everything runs as a single process and no process group is created.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "DistInfo",
    "init_distributed",
    "cleanup_distributed",
    "is_main_process",
    "barrier",
    "all_reduce_mean",
    "broadcast_object",
    "ShardedSampler",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job.

    Attributes:
        rank, world_size: global rank and number of processes (0 and 1 without a process group).
        local_rank: rank on this node (selects the CUDA device).
        device: the device this process trains on.
        initialized: True when this module created a process group (and must destroy it).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto", backend: str | None = None) -> DistInfo:
    """Initialise the process group from torchrun's environment (if present) and resolve the device.

    Args:
        device: ``"auto"`` (CUDA ``LOCAL_RANK`` if available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``
            (``"cuda"`` means ``cuda:LOCAL_RANK``). Called by the CLI; library code never picks a device itself.
        backend: process-group backend; default NCCL for CUDA, gloo for CPU.

    Returns:
        A ``DistInfo``.

    Raises:
        ValueError: CUDA requested but not available, or an unknown device string.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        dev = torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    elif device == "cpu":
        dev = torch.device("cpu")
    elif device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available")
        dev = torch.device(f"cuda:{local_rank}") if device == "cuda" else torch.device(device)
    else:
        raise ValueError(f"unknown device {device!r}; valid: auto, cpu, cuda, cuda:N")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    initialized = False
    if world > 1 and not (dist.is_available() and dist.is_initialized()):
        be = backend or ("nccl" if dev.type == "cuda" else "gloo")
        kwargs: dict[str, Any] = {"device_id": dev} if dev.type == "cuda" else {}
        dist.init_process_group(backend=be, init_method="env://", rank=rank, world_size=world, **kwargs)
        initialized = True
        log.info("process group initialised: rank %d / %d, backend %s, device %s", rank, world, be, dev)
    elif world > 1:
        rank, world = dist.get_rank(), dist.get_world_size()
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev, initialized=initialized)


def cleanup_distributed(info: DistInfo) -> None:
    """Destroy the process group if ``init_distributed`` created it."""
    if info.initialized and dist.is_initialized():
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main_process() -> bool:
    """True on global rank 0 (and when not distributed)."""
    return not _active() or dist.get_rank() == 0


def barrier() -> None:
    """Synchronise all processes (no-op when not distributed)."""
    if _active():
        dist.barrier()


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean of ``t`` over processes (a copy; ``t`` itself when not distributed)."""
    if not _active():
        return t
    out = t.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / dist.get_world_size()


def broadcast_object(obj: object, src: int = 0) -> object:
    """Send a picklable object from rank ``src`` to every process (identity when not distributed)."""
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


class ShardedSampler(torch.utils.data.Sampler):
    """Deterministic, resumable DistributedSampler: a per-epoch permutation, sharded by rank.

    Epoch ``e`` uses ``torch.randperm(n, generator=seed + e)`` (or ``range(n)`` without shuffling), padded by
    wrapping around to a multiple of ``world_size`` and split round-robin (rank r takes positions r, r+W, ...),
    exactly like ``torch.utils.data.DistributedSampler``. ``set_epoch(e, skip)`` starts epoch ``e`` after its
    first ``skip`` samples of this rank: that is how a resumed run continues at the same data position.

    Args:
        length: dataset length.
        rank, world_size: this process's shard.
        shuffle: shuffle every epoch.
        seed: base seed (the same on every rank).
        with_epoch: yield ``(epoch, index)`` tuples instead of indices, so a dataset wrapper can derive per-sample
            augmentation seeds from the epoch (``anydepth.data.transforms.TransformedDataset`` accepts these keys).
    """

    def __init__(
        self,
        length: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        seed: int = 0,
        with_epoch: bool = False,
    ):
        if length < 1:
            raise ValueError("cannot sample from an empty dataset")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for world size {world_size}")
        self.length = int(length)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.with_epoch = bool(with_epoch)
        self.epoch = 0
        self.skip = 0
        self.num_samples = math.ceil(self.length / self.world_size)

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Select the epoch (changes the permutation) and how many of this rank's samples to skip."""
        self.epoch = int(epoch)
        self.skip = int(skip)

    def indices(self) -> list[int]:
        """All of this rank's indices for the current epoch (before skipping)."""
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.length, generator=g).tolist()
        else:
            order = list(range(self.length))
        total = self.num_samples * self.world_size
        while len(order) < total:
            order += order[: total - len(order)]
        return order[self.rank : total : self.world_size]

    def __iter__(self) -> Iterator:
        idx = self.indices()[self.skip :]
        if self.with_epoch:
            return iter([(self.epoch, i) for i in idx])
        return iter(idx)

    def __len__(self) -> int:
        return max(self.num_samples - self.skip, 0)
