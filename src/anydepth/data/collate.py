"""Batching ``Sample`` objects: ``collate`` builds the trainer's ``Batch``, ``collate_samples`` a dict of tensors."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from anydepth.types import DepthSpace, Sample

__all__ = ["Batch", "collate", "collate_samples"]


@dataclass
class Batch:
    """A collated batch of equally sized samples (what the training loop consumes).

    Attributes:
        image: ``[B,3,H,W]`` float32 RGB in [0, 1].
        depth: ``[B,1,H,W]`` float32 ground truth in ``depth_space`` (metric depth in metres usually), 0 where
            invalid.
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
        """The same batch with its tensors in pinned memory (``DataLoader(pin_memory=True)`` calls this)."""
        return Batch(self.image.pin_memory(), self.depth.pin_memory(), self.valid.pin_memory(), self.depth_space,
                     self.names)  # fmt: skip


def collate(samples: Sequence[Sample]) -> Batch:
    """Stack equally sized ``Sample``s into a ``Batch`` (the ``collate_fn`` of the training and validation loaders).

    Raises:
        ValueError: empty input or samples of different sizes (names the first mismatch).
    """
    t = _stack(samples)
    return Batch(
        t["image"], t["depth"], t["valid"], [s.depth_space for s in samples], [s.name for s in samples]
    )


def _stack(samples: Sequence[Sample]) -> dict[str, torch.Tensor]:
    """``image`` float32 ``[B,3,H,W]``, ``depth`` float32 ``[B,1,H,W]``, ``valid`` bool ``[B,1,H,W]``."""
    if len(samples) == 0:
        raise ValueError("collate_samples: empty batch")
    hw = tuple(samples[0].image.shape[-2:])
    for s in samples:
        if (
            tuple(s.image.shape[-2:]) != hw
            or tuple(s.depth.shape[-2:]) != hw
            or tuple(s.valid.shape[-2:]) != hw
        ):
            raise ValueError(
                f"collate_samples: sample {s.name!r} has size {tuple(s.image.shape[-2:])}, "
                f"but {samples[0].name!r} has {hw}; crop or resize to one size first"
            )
    return {
        "image": torch.stack([s.image.float() for s in samples]),
        "depth": torch.stack([s.depth.float().reshape(1, *hw) for s in samples]),
        "valid": torch.stack([s.valid.bool().reshape(1, *hw) for s in samples]),
    }


def collate_samples(samples: Sequence[Sample], *, include_meta: bool = False) -> dict[str, Any]:
    """Stack samples of one size into a batch.

    Args:
        samples: ``B`` samples with identical ``H, W`` (crop or resize them first).
        include_meta: also return the per-sample lists ``name``, ``source`` and ``depth_space`` (strings).

    Returns:
        ``image`` float32 ``[B,3,H,W]`` in [0, 1]; ``depth`` float32 ``[B,1,H,W]`` (0 where invalid);
        ``valid`` bool ``[B,1,H,W]``; ``intrinsics`` float32 ``[B,4]`` as (fx, fy, cx, cy) in pixels, NaN rows
        where unknown; ``metric`` bool ``[B]`` (depth is metric). With ``include_meta`` also the lists above.

    Raises:
        ValueError: empty input or samples of different sizes (names them).
    """
    nan = math.nan
    batch: dict[str, Any] = {
        **_stack(samples),
        "intrinsics": torch.tensor(
            [
                [s.intrinsics.fx, s.intrinsics.fy, s.intrinsics.cx, s.intrinsics.cy]
                if s.intrinsics is not None
                else [nan, nan, nan, nan]
                for s in samples
            ],
            dtype=torch.float32,
        ),
        "metric": torch.tensor([s.depth_space.is_metric for s in samples], dtype=torch.bool),
    }
    if include_meta:
        batch["name"] = [s.name for s in samples]
        batch["source"] = [s.source for s in samples]
        batch["depth_space"] = [s.depth_space.value for s in samples]
    return batch
