"""Batching ``Sample`` objects into tensors for the training loop."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from anydepth.types import Sample

__all__ = ["collate_samples"]


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
    nan = math.nan
    batch: dict[str, Any] = {
        "image": torch.stack([s.image.float() for s in samples]),
        "depth": torch.stack([s.depth.float().reshape(1, *hw) for s in samples]),
        "valid": torch.stack([s.valid.bool().reshape(1, *hw) for s in samples]),
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
