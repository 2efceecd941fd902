"""Combining datasets: plain concatenation, a reproducible weighted mixture, and builders from config dicts.

``build_dataset({"name": "vkitti2", "root": ..., "split_file": ..., "weight": 1.0, **options})`` builds one
registered reader; ``build_mixture([spec, ...], length=..., seed=...)`` builds a ``MixtureDataset`` using each
spec's ``weight``. The trainer builds its datasets through these too (``engine.data.build_datasets``); convert
OmegaConf containers to plain dicts/lists first (e.g. ``OmegaConf.to_container(cfg, resolve=True)``).

The one meaning of ``weight`` (here, in ``MixtureDataset`` and in the training config): a dataset's **share of
the samples drawn**, independent of its size. Weights ``[3, 1]`` draw 75 % of an epoch's items from the first
dataset however large either is; a zero weight excludes a dataset. No weight at all means "no mixing": for
``MixtureDataset``, shares proportional to the sizes; for the trainer, the plain concatenation (every sample
once per epoch, shuffled by the sampler).
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from anydepth.data import datasets as _datasets  # noqa: F401  (registers the readers)
from anydepth.data.transforms import Transform, make_generator, seeded_apply
from anydepth.registry import DATASETS
from anydepth.types import Sample

__all__ = ["ConcatDepthDataset", "MixtureDataset", "build_dataset", "build_mixture"]


class ConcatDepthDataset(torch.utils.data.Dataset):
    """Concatenation of datasets, in order. ``locate(i) -> (dataset index, local index)``."""

    def __init__(self, datasets: Sequence[Any]) -> None:
        if not datasets:
            raise ValueError("ConcatDepthDataset: no datasets given")
        self.datasets = list(datasets)
        self.offsets: list[int] = []
        total = 0
        for d in self.datasets:
            self.offsets.append(total)
            total += len(d)
        self.total = total

    def __len__(self) -> int:
        return self.total

    def locate(self, i: int) -> tuple[int, int]:
        if i < 0:
            i += self.total
        if not 0 <= i < self.total:
            raise IndexError(f"index {i} out of range for a concatenation of length {self.total}")
        k = bisect.bisect_right(self.offsets, i) - 1
        while len(self.datasets[k]) == 0:  # skip empty datasets sharing the offset
            k += 1
        return k, i - self.offsets[k]

    def set_epoch(self, epoch: int) -> None:
        for d in self.datasets:
            if hasattr(d, "set_epoch"):
                d.set_epoch(epoch)

    def __getitem__(self, i: int) -> Sample:
        k, j = self.locate(i)
        return self.datasets[k][j]


class MixtureDataset(torch.utils.data.Dataset):
    """A weighted mixture: item ``i`` of epoch ``e`` comes from dataset ``k`` with probability ``w_k / sum w``.

    The schedule of an epoch is a pure function of ``(seed, epoch)``: the dataset of every position is drawn with
    replacement by weight, and within each dataset the samples are taken from successive random permutations
    (no sample repeats before all of its dataset has been seen). Every DataLoader worker computes the same
    schedule, so results do not depend on the worker count. With ``transform``, sample ``i`` is transformed with
    a generator seeded by ``(seed, epoch, i)``.

    Args:
        datasets: the datasets (each ``len`` > 0 if its weight is > 0).
        weights: non-negative weights, one per dataset; None = proportional to the dataset sizes.
        length: items per epoch; default the total size of the datasets.
        seed: base seed (>= 0).
        transform: optional ``Sample -> Sample`` transform taking a generator.
    """

    def __init__(
        self,
        datasets: Sequence[Any],
        weights: Sequence[float] | None = None,
        length: int | None = None,
        seed: int = 0,
        transform: Transform | None = None,
    ) -> None:
        if not datasets:
            raise ValueError("MixtureDataset: no datasets given")
        self.datasets = list(datasets)
        sizes = [len(d) for d in self.datasets]
        if weights is None:
            weights = [float(n) for n in sizes]
        if len(weights) != len(self.datasets):
            raise ValueError(f"MixtureDataset: {len(weights)} weights for {len(self.datasets)} datasets")
        w = torch.tensor([float(x) for x in weights], dtype=torch.float64)
        if not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise ValueError(
                f"MixtureDataset: weights must be finite, >= 0 and not all 0, got {list(weights)}"
            )
        for k, (n, wk) in enumerate(zip(sizes, w.tolist(), strict=True)):
            if wk > 0 and n == 0:
                raise ValueError(
                    f"MixtureDataset: dataset {k} ({_name(self.datasets[k])}) is empty but has weight {wk}"
                )
        self.weights = (w / w.sum()).tolist()
        self.length = int(length) if length is not None else sum(sizes)
        if self.length < 0:
            raise ValueError(f"MixtureDataset: length must be >= 0, got {length}")
        if seed < 0:
            raise ValueError(f"MixtureDataset: seed must be >= 0, got {seed}")
        self.seed = int(seed)
        self.transform = transform
        self.epoch = 0
        self._schedule: tuple[int, torch.Tensor, torch.Tensor] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose schedule and augmentations ``__getitem__`` uses."""
        self.epoch = int(epoch)
        for d in self.datasets:
            if hasattr(d, "set_epoch"):
                d.set_epoch(epoch)

    def schedule(self, epoch: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(dataset index [length], local index [length])`` int64 tensors of ``epoch`` (default: current)."""
        e = self.epoch if epoch is None else int(epoch)
        if self._schedule is not None and self._schedule[0] == e:
            return self._schedule[1], self._schedule[2]
        g = make_generator(self.seed, e, 0x5EED)
        w = torch.tensor(self.weights, dtype=torch.float64)
        which = (
            torch.multinomial(w, self.length, replacement=True, generator=g)
            if self.length
            else w.new_zeros(0)
        )
        which = which.long()
        local = torch.zeros(self.length, dtype=torch.long)
        for k, d in enumerate(self.datasets):
            pos = (which == k).nonzero(as_tuple=True)[0]
            if pos.numel() == 0:
                continue
            n = len(d)
            reps = -(-pos.numel() // n)
            perm = torch.cat([torch.randperm(n, generator=g) for _ in range(reps)])[: pos.numel()]
            local[pos] = perm
        if epoch is None or e == self.epoch:
            self._schedule = (e, which, local)
        return which, local

    def locate(self, i: int) -> tuple[int, int]:
        """``(dataset index, local index)`` of item ``i`` in the current epoch."""
        if i < 0:
            i += self.length
        if not 0 <= i < self.length:
            raise IndexError(f"index {i} out of range for a mixture of length {self.length}")
        which, local = self.schedule()
        return int(which[i]), int(local[i])

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> Sample:
        k, j = self.locate(i)
        s = self.datasets[k][j]
        if self.transform is not None:
            s = seeded_apply(self.transform, s, self.seed, self.epoch, i if i >= 0 else i + self.length)
        return s


def _name(d: Any) -> str:
    return str(getattr(d, "name", type(d).__name__))


def build_dataset(spec: Mapping[str, Any]) -> Any:
    """Build one registered dataset from a config dict.

    Keys: ``name`` (required, a ``DATASETS`` name), ``root``, ``split_file`` or ``pairs``, ``weight`` (ignored
    here; used by ``build_mixture``), and the reader's own options (unknown options raise ``ValueError``).

    Raises:
        ValueError: ``name`` missing or an option invalid. KeyError: unknown dataset name (lists the valid ones).
    """
    if not isinstance(spec, Mapping):
        raise ValueError(f"dataset spec must be a mapping, got {type(spec).__name__}")
    opts = dict(spec)
    name = opts.pop("name", None)
    if not name:
        raise ValueError(
            f"dataset spec needs a 'name' (one of {', '.join(DATASETS.names())}); got {dict(spec)}"
        )
    cls = DATASETS.get(str(name))
    opts.pop("weight", None)
    root = opts.pop("root", None)
    kwargs: dict[str, Any] = {}
    if opts.get("split_file") is not None:
        kwargs["split_file"] = opts.pop("split_file")
    else:
        opts.pop("split_file", None)
    if opts.get("pairs") is not None:
        kwargs["pairs"] = [tuple(p) for p in opts.pop("pairs")]
    else:
        opts.pop("pairs", None)
    for k, v in list(opts.items()):
        if isinstance(v, list):
            opts[k] = tuple(v)
    try:
        return cls(root, **kwargs, **opts)
    except TypeError as e:
        raise ValueError(f"dataset {name!r}: bad options {sorted(opts)} ({e})") from None


def build_mixture(
    specs: Sequence[Mapping[str, Any]],
    *,
    length: int | None = None,
    seed: int = 0,
    transform: Transform | None = None,
) -> MixtureDataset:
    """Build each spec with ``build_dataset`` and mix them by their ``weight`` keys (shares of the samples drawn).

    Either every spec has a ``weight`` or none does (then weights are proportional to dataset sizes, i.e. a
    shuffled concatenation).

    Args:
        specs: ``build_dataset`` dicts.
        length: items per epoch; default the total size of the datasets.
        seed: seed of the per-epoch schedules (and of ``transform``).
        transform: optional seeded transform (see ``MixtureDataset``).

    Raises:
        ValueError: no specs, weights given for some specs only, bad weights or options.
    """
    if not specs:
        raise ValueError("build_mixture: no dataset specs given")
    has_w = [("weight" in s and s["weight"] is not None) for s in specs]
    if any(has_w) and not all(has_w):
        missing = [str(s.get("name")) for s, h in zip(specs, has_w, strict=True) if not h]
        raise ValueError(f"build_mixture: give a weight for every dataset or for none; missing for {missing}")
    datasets = [build_dataset(s) for s in specs]
    weights = [float(s["weight"]) for s in specs] if all(has_w) else None
    return MixtureDataset(datasets, weights, length=length, seed=seed, transform=transform)
