"""Data plumbing of the trainer: dataset mixture from the config, seeded augmentation, sharded resumable loading.

* ``build_datasets(specs)`` instantiates the registered readers of a mixture through ``anydepth.data.mixture``.
* ``TrainSampleDataset`` applies the training transform (``anydepth.data.transforms.build_transforms``) with a
  ``torch.Generator`` seeded from ``(seed, epoch, index)``, so an augmentation never depends on worker
  scheduling and a resumed run sees exactly the same augmented samples.
* ``TrainData.iterate(epoch, skip_batches)`` yields collated ``Batch``es of this rank's shard of the epoch,
  starting after ``skip_batches`` micro-batches (the resume position).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence, Sized
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import torch

from anydepth.engine.config import DatasetSpec, TrainConfig
from anydepth.engine.distributed import ShardedSampler
from anydepth.types import DepthSpace, Sample

if TYPE_CHECKING:
    from anydepth.data.mixture import ConcatDepthDataset, MixtureDataset

__all__ = [
    "Batch",
    "collate",
    "build_dataset",
    "build_datasets",
    "spec_to_dict",
    "TrainSampleDataset",
    "EvalSampleDataset",
    "TrainData",
    "build_train_loader",
    "build_val_loader",
    "resolve_val_size",
]

log = logging.getLogger(__name__)


@dataclass
class Batch:
    """A collated batch.

    Attributes:
        image: ``[B,3,H,W]`` float32 RGB in [0, 1].
        depth: ``[B,1,H,W]`` float32 ground truth in ``depth_space`` (metric depth in metres usually).
        valid: ``[B,1,H,W]`` bool.
        depth_space: one ``DepthSpace`` per image.
        names: sample identifiers.
    """

    image: torch.Tensor
    depth: torch.Tensor
    valid: torch.Tensor
    depth_space: list[DepthSpace]
    names: list[str]

    def pin_memory(self) -> Batch:
        return Batch(self.image.pin_memory(), self.depth.pin_memory(), self.valid.pin_memory(), self.depth_space,
                     self.names)  # fmt: skip


def collate(samples: Sequence[Sample]) -> Batch:
    """Stack equally sized ``Sample``s into a ``Batch`` (wraps ``anydepth.data.collate.collate_samples``).

    Raises:
        ValueError: empty input or samples of different sizes (names the first mismatch).
    """
    from anydepth.data.collate import collate_samples

    d = collate_samples(samples, include_meta=True)
    return Batch(
        image=d["image"],
        depth=d["depth"],
        valid=d["valid"],
        depth_space=[DepthSpace(x) for x in d["depth_space"]],
        names=list(d["name"]),
    )


# ---------------------------------------------------------------------------------------------------------------
# datasets
# ---------------------------------------------------------------------------------------------------------------


def spec_to_dict(spec: DatasetSpec) -> dict[str, Any]:
    """The ``anydepth.data.mixture.build_dataset`` dict of a ``DatasetSpec`` (``root``/``split_file`` only if set)."""
    d: dict[str, Any] = {"name": spec.name, **dict(spec.kwargs)}
    if spec.root is not None:
        d["root"] = spec.root
    if spec.split_file is not None:
        d["split_file"] = spec.split_file
    return d


def build_dataset(spec: DatasetSpec) -> torch.utils.data.Dataset:
    """Instantiate one registered dataset reader from a ``DatasetSpec`` (via ``anydepth.data.mixture``).

    Raises:
        KeyError: unknown dataset name (lists the registered ones).
        ValueError: bad options (from the reader).
    """
    from anydepth.data.mixture import build_dataset as _build

    try:
        return _build(spec_to_dict(spec))
    except TypeError as e:
        raise ValueError(f"dataset {spec.name!r}: bad options {sorted(spec.kwargs)} ({e})") from None


def build_datasets(specs: Sequence[DatasetSpec], *, seed: int = 0) -> ConcatDepthDataset | MixtureDataset:
    """The training/validation mixture of ``specs``.

    All weights 1 (the default and the paper's recipe): a plain concatenation
    (``anydepth.data.mixture.ConcatDepthDataset``), shuffled by the sampler. Otherwise a
    ``anydepth.data.mixture.MixtureDataset`` whose epoch holds ``sum_k round(w_k * len_k)`` items, each drawn
    from dataset k with probability proportional to ``w_k * len_k`` (so ``weight`` scales a dataset's share
    relative to its size); its per-epoch schedule is a pure function of ``(seed, epoch)``.

    Raises:
        ValueError: no dataset, negative weights or an empty mixture.
    """
    from anydepth.data.mixture import ConcatDepthDataset, MixtureDataset

    if not specs:
        raise ValueError("no datasets given")
    datasets = [build_dataset(s) for s in specs]
    weights = [float(s.weight) for s in specs]
    if any(w < 0 for w in weights):
        raise ValueError(f"dataset weights must be >= 0, got {weights}")
    if all(w == 1.0 for w in weights):
        ds = ConcatDepthDataset(datasets)
        if len(ds) == 0:
            raise ValueError("the dataset mixture is empty")
        return ds
    sizes = [len(cast(Sized, d)) for d in datasets]  # readers are map-style datasets
    length = sum(round(w * n) for w, n in zip(weights, sizes, strict=True))
    if length < 1:
        raise ValueError(f"the dataset mixture is empty (sizes {sizes}, weights {weights})")
    return MixtureDataset(
        datasets, [w * n for w, n in zip(weights, sizes, strict=True)], length=length, seed=seed
    )


# ---------------------------------------------------------------------------------------------------------------
# transforms
# ---------------------------------------------------------------------------------------------------------------


def _train_transform(cfg: TrainConfig) -> Callable[[Sample, torch.Generator], Sample]:
    from anydepth.data.transforms import build_transforms

    a = cfg.data.augment
    return build_transforms(
        tuple(cfg.data.size),  # type: ignore[arg-type]
        train=True,
        flip_p=a.hflip,
        rotate_deg=a.rotate_deg,
        rotate_p=a.rotate_prob,
        brightness=tuple(a.brightness) if a.brightness is not None else None,  # type: ignore[arg-type]
    )


def _eval_transform(size: tuple[int, int]) -> Callable[[Sample, torch.Generator], Sample]:
    from anydepth.data.transforms import build_transforms

    return build_transforms(tuple(size), train=False)  # type: ignore[arg-type]


class TrainSampleDataset(torch.utils.data.Dataset):
    """Applies a seeded training transform; indexed by ``(epoch, index)`` (see ``ShardedSampler(with_epoch=True)``).

    Args:
        base: dataset of ``Sample``s.
        transform: ``(sample, generator) -> sample``.
        seed: base seed.
    """

    def __init__(
        self,
        base: torch.utils.data.Dataset,
        transform: Callable[[Sample, torch.Generator], Sample],
        seed: int,
    ) -> None:
        self.base = base
        self.transform = transform
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Sample:
        from anydepth.data.transforms import make_generator

        epoch, index = key
        if hasattr(self.base, "set_epoch") and getattr(self, "_epoch", None) != epoch:
            self.base.set_epoch(epoch)  # weighted mixtures draw a new schedule per epoch
            self._epoch = epoch
        return self.transform(self.base[index], make_generator(self.seed, epoch, index))


class EvalSampleDataset(torch.utils.data.Dataset):
    """Applies a deterministic evaluation transform (resize short side + centre crop) to ``Sample``s."""

    def __init__(
        self, base: torch.utils.data.Dataset, transform: Callable[[Sample, torch.Generator], Sample]
    ):
        self.base = base
        self.transform = transform

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> Sample:
        return self.transform(self.base[i], torch.Generator().manual_seed(0))


@dataclass
class TrainData:
    """This rank's training stream.

    Attributes:
        dataset: the wrapped (augmenting) dataset.
        sampler: the resumable sharding sampler.
        batch_size, num_workers: DataLoader settings (``drop_last=True``).
        num_samples: length of the mixture (one epoch, all ranks together).
    """

    dataset: TrainSampleDataset
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
    ds = TrainSampleDataset(base, _train_transform(cfg), cfg.train.seed)
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
    ds = EvalSampleDataset(torch.utils.data.Subset(base, idx), _eval_transform(size or resolve_val_size(cfg)))
    shard = list(range(rank, len(ds), world_size))
    return torch.utils.data.DataLoader(
        torch.utils.data.Subset(ds, shard),
        batch_size=cfg.val.batch_size,
        shuffle=False,
        num_workers=cfg.data.num_workers,
        collate_fn=collate,
    )
