"""Data plumbing of the trainer: the config's datasets through the one data pipeline of ``anydepth.data``.

* ``build_datasets(specs)``: ``anydepth.data.mixture`` builds the readers and, when weights are given, the
  mixture (``build_mixture``; ``weight`` = share of the samples drawn); without weights the plain concatenation.
* the training transform (``anydepth.data.transforms.build_transforms``) is applied by the one seeded wrapper,
  ``anydepth.data.transforms.TransformedDataset``, indexed by ``(epoch, index)``: the generator is seeded from
  ``(seed, epoch, index)``, so an augmentation never depends on worker scheduling and a resumed run sees exactly
  the same augmented samples.
* ``anydepth.data.collate.collate`` builds each ``Batch``; ``TrainData.iterate(epoch, skip_batches)`` yields
  this rank's shard of the epoch, starting after ``skip_batches`` micro-batches (the resume position).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from anydepth.data.collate import Batch, collate
from anydepth.data.mixture import ConcatDepthDataset, MixtureDataset, build_dataset, build_mixture
from anydepth.data.transforms import Compose, TransformedDataset, build_transforms
from anydepth.engine.config import DatasetSpec, TrainConfig
from anydepth.engine.distributed import ShardedSampler

__all__ = [
    "Batch",
    "collate",
    "build_datasets",
    "spec_to_dict",
    "TrainData",
    "build_train_loader",
    "build_val_loader",
    "resolve_val_size",
]

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------------------
# datasets
# ---------------------------------------------------------------------------------------------------------------


def spec_to_dict(spec: DatasetSpec) -> dict[str, Any]:
    """The ``anydepth.data.mixture.build_dataset`` dict of a ``DatasetSpec`` (``root``, ``split_file`` and
    ``weight`` only if set)."""
    d: dict[str, Any] = {"name": spec.name, **dict(spec.kwargs)}
    if spec.root is not None:
        d["root"] = spec.root
    if spec.split_file is not None:
        d["split_file"] = spec.split_file
    if spec.weight is not None:
        d["weight"] = spec.weight
    return d


def build_datasets(specs: Sequence[DatasetSpec], *, seed: int = 0) -> ConcatDepthDataset | MixtureDataset:
    """The training/validation datasets of ``specs``.

    No weights (the default and the paper's recipe): the plain concatenation
    (``anydepth.data.mixture.ConcatDepthDataset``), shuffled by the sampler, every sample once per epoch.
    Weights on every spec: ``anydepth.data.mixture.build_mixture``, whose epoch holds as many items as the
    datasets together, each drawn from dataset k with probability ``w_k / sum w`` (the share of the samples
    drawn, independent of the sizes); its per-epoch schedule is a pure function of ``(seed, epoch)``.

    Raises:
        ValueError: no dataset, weights on some specs only, bad weights, bad options or an empty mixture.
        KeyError: unknown dataset name (lists the registered ones).
    """
    if not specs:
        raise ValueError("no datasets given")
    if any(s.weight is not None for s in specs):
        return build_mixture([spec_to_dict(s) for s in specs], seed=seed)
    ds = ConcatDepthDataset([build_dataset(spec_to_dict(s)) for s in specs])
    if len(ds) == 0:
        raise ValueError("the dataset mixture is empty")
    return ds


def _train_transform(cfg: TrainConfig) -> Compose:
    a = cfg.data.augment
    return build_transforms(
        tuple(cfg.data.size),  # type: ignore[arg-type]
        train=True,
        flip_p=a.hflip,
        rotate_deg=a.rotate_deg,
        rotate_p=a.rotate_prob,
        brightness=tuple(a.brightness) if a.brightness is not None else None,  # type: ignore[arg-type]
    )


@dataclass
class TrainData:
    """This rank's training stream.

    Attributes:
        dataset: the augmenting wrapper, indexed by ``(epoch, index)``.
        sampler: the resumable sharding sampler.
        batch_size, num_workers: DataLoader settings (``drop_last=True``).
        num_samples: length of the mixture (one epoch, all ranks together).
    """

    dataset: TransformedDataset
    sampler: ShardedSampler
    batch_size: int
    num_workers: int
    pin_memory: bool = False

    @property
    def num_samples(self) -> int:
        return len(self.dataset)

    @property
    def batches_per_epoch(self) -> int:
        return self.sampler.num_samples // self.batch_size

    def iterate(self, epoch: int, skip_batches: int = 0) -> Iterator[Batch]:
        """Batches of ``epoch`` for this rank, starting after ``skip_batches`` micro-batches."""
        self.sampler.set_epoch(epoch, skip=skip_batches * self.batch_size)
        loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            sampler=self.sampler,
            num_workers=self.num_workers,
            collate_fn=collate,
            drop_last=True,
            pin_memory=self.pin_memory,
            persistent_workers=False,
        )
        return iter(loader)


def build_train_loader(
    cfg: TrainConfig, *, rank: int = 0, world_size: int = 1, pin_memory: bool = False
) -> TrainData:
    """The training stream of ``cfg`` for one rank."""
    base = build_datasets(cfg.data.train, seed=cfg.train.seed)
    ds = TransformedDataset(base, _train_transform(cfg), cfg.train.seed)
    sampler = ShardedSampler(len(ds), rank=rank, world_size=world_size, shuffle=True, seed=cfg.train.seed,
                             with_epoch=True)  # fmt: skip
    log.info("training mixture: %d samples from %d dataset(s)", len(ds), len(cfg.data.train))
    return TrainData(ds, sampler, cfg.train.batch_size, cfg.data.num_workers, pin_memory)


def resolve_val_size(cfg: TrainConfig) -> tuple[int, int]:
    """Validation input size: ``data.val_size`` or ``data.size``."""
    return tuple(cfg.data.val_size) if cfg.data.val_size is not None else tuple(cfg.data.size)  # type: ignore[return-value]


def build_val_loader(
    cfg: TrainConfig, *, rank: int = 0, world_size: int = 1, size: tuple[int, int] | None = None
) -> torch.utils.data.DataLoader:
    """Validation loader: this rank's unpadded shard ``rank, rank + W, ...`` of the (capped) validation set."""
    base = build_datasets(cfg.data.val, seed=cfg.train.seed)
    n = len(base) if cfg.val.max_samples <= 0 else min(len(base), cfg.val.max_samples)
    if n < len(base):  # evenly spaced subset, deterministic
        idx = [int(i * len(base) / n) for i in range(n)]
    else:
        idx = list(range(n))
    # resize short side + centre crop: deterministic, so the seed of the wrapper does not matter
    ds = TransformedDataset(
        torch.utils.data.Subset(base, idx), build_transforms(size or resolve_val_size(cfg), train=False)
    )
    shard = list(range(rank, len(ds), world_size))
    return torch.utils.data.DataLoader(
        torch.utils.data.Subset(ds, shard),
        batch_size=cfg.val.batch_size,
        shuffle=False,
        num_workers=cfg.data.num_workers,
        collate_fn=collate,
    )
