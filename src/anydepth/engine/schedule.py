"""Learning-rate schedules: linear warm-up followed by polynomial decay (PolyLR, power 0.9).

AnyDepth (paper §3.4): AdamW, base LR 1e-3, PolyLR with power 0.9 and a linear warm-up over the first 2 of 5
epochs. The paper does not say how the warm-up and the decay are joined, nor the start and end factors; project
decisions (docs/training.md):

* the LR multiplier used for optimizer step ``s`` (0-based) is

  - warm-up, ``s < W``: ``start + (1 - start) * s / W`` (linear from ``start_factor`` to 1);
  - decay, ``s >= W``: ``end + (1 - end) * (1 - (s - W) / (T - W)) ** power``, so the peak (= base LR) is
    reached exactly when the warm-up ends and the last step (``s = T - 1``) is just above ``end_factor``;

* defaults: ``start_factor = 0.001``, ``end_factor = 0.0``, ``power = 0.9``.

The schedule is a ``torch.optim.lr_scheduler.LambdaLR`` whose lambda is a small picklable dataclass, so its state
(the step counter) is saved and restored with the training checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["WarmupPoly", "build_scheduler", "steps_from_epochs"]


@dataclass(frozen=True)
class WarmupPoly:
    """LR multiplier: linear warm-up over ``warmup_steps`` then polynomial decay until ``total_steps``.

    Args:
        total_steps: T, number of optimizer steps in the run (> 0).
        warmup_steps: W in [0, T).
        power: polynomial power (0.9 for PolyLR).
        start_factor: multiplier at step 0 when ``warmup_steps > 0``.
        end_factor: multiplier approached at the end of training.
    """

    total_steps: int
    warmup_steps: int = 0
    power: float = 0.9
    start_factor: float = 0.001
    end_factor: float = 0.0

    def __post_init__(self) -> None:
        if self.total_steps <= 0:
            raise ValueError(f"total_steps must be > 0, got {self.total_steps}")
        if not 0 <= self.warmup_steps < self.total_steps:
            raise ValueError(
                f"warmup_steps must be in [0, total_steps={self.total_steps}), got {self.warmup_steps}"
            )
        if self.power < 0:
            raise ValueError(f"power must be >= 0, got {self.power}")
        if not 0.0 <= self.start_factor <= 1.0 or not 0.0 <= self.end_factor <= 1.0:
            raise ValueError(
                f"start_factor/end_factor must be in [0, 1], got {self.start_factor}/{self.end_factor}"
            )

    def __call__(self, step: int) -> float:
        """The LR multiplier for optimizer step ``step`` (0-based); steps past the end give ``end_factor``."""
        s = max(int(step), 0)
        w, t = self.warmup_steps, self.total_steps
        if s < w:
            return self.start_factor + (1.0 - self.start_factor) * s / w
        frac = min((s - w) / (t - w), 1.0)
        return self.end_factor + (1.0 - self.end_factor) * (1.0 - frac) ** self.power


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    *,
    total_steps: int,
    warmup_steps: int = 0,
    power: float = 0.9,
    start_factor: float = 0.001,
    end_factor: float = 0.0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` applying ``WarmupPoly`` to every parameter group's own base LR.

    Call ``scheduler.step()`` once after each optimizer step. Right after construction the groups hold the LR of
    step 0.
    """
    fn = WarmupPoly(total_steps, warmup_steps, power, start_factor, end_factor)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=fn)


def steps_from_epochs(
    dataset_len: int,
    *,
    batch_size: int,
    world_size: int = 1,
    grad_accum: int = 1,
    epochs: float = 1.0,
    drop_last: bool = True,
) -> tuple[int, int]:
    """Optimizer steps per epoch and in total for ``epochs`` passes over a dataset of ``dataset_len`` samples.

    Each of the ``world_size`` processes sees ``ceil(dataset_len / world_size)`` samples per epoch (the sharding
    sampler pads to equal shares), grouped into micro-batches of ``batch_size`` (incomplete last batch dropped
    when ``drop_last``) and ``grad_accum`` micro-batches per optimizer step.

    Returns:
        ``(steps_per_epoch, total_steps)``; ``total_steps = round(epochs * steps_per_epoch)``.

    Raises:
        ValueError: when the dataset is too small for a single optimizer step.
    """
    if batch_size < 1 or world_size < 1 or grad_accum < 1:
        raise ValueError(
            f"batch_size/world_size/grad_accum must be >= 1, got {batch_size}/{world_size}/{grad_accum}"
        )
    per_rank = math.ceil(dataset_len / world_size)
    micro = per_rank // batch_size if drop_last else math.ceil(per_rank / batch_size)
    steps_per_epoch = micro // grad_accum
    if steps_per_epoch < 1:
        raise ValueError(
            f"dataset of {dataset_len} samples is too small for one optimizer step of "
            f"{batch_size} x {grad_accum} (accumulation) x {world_size} (processes) samples"
        )
    return steps_per_epoch, max(1, round(epochs * steps_per_epoch))
