"""Losses for affine-invariant disparity training (pure functions of ``(pred, target, mask)``).

AnyDepth's loss (paper §3.3, following Depth Anything v2) is ``L = L_ssi + 2 * L_gm``:

* ``ssi.ssi_loss``: scale-and-shift-invariant data term (median/MAD "robust" normalisation by default,
  or least-squares alignment), masked to valid pixels;
* ``gradient.gradient_loss``: 4-scale gradient matching on the residual of the SAME normalised maps;
* ``targets.disparity_target``: metric depth -> per-image min-max normalised disparity (100 m far plane).

``depth_loss`` combines them; ``DepthLoss`` is the same as a configurable callable for the trainer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from anydepth.losses.gradient import gradient_loss
from anydepth.losses.ssi import REDUCTIONS, SSI_VARIANTS, normalize_pair, residual_loss, ssi_loss
from anydepth.losses.targets import DEFAULT_FAR_PLANE, disparity_target

__all__ = [
    "DepthLoss",
    "depth_loss",
    "ssi_loss",
    "gradient_loss",
    "disparity_target",
    "normalize_pair",
    "residual_loss",
    "SSI_VARIANTS",
    "REDUCTIONS",
    "DEFAULT_FAR_PLANE",
]


def depth_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    *,
    variant: str = "robust",
    trim: float = 0.0,
    gradient_weight: float = 2.0,
    scales: int = 4,
    reduction: str = "batch",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """AnyDepth training loss ``L_ssi + gradient_weight * L_gm`` on valid pixels.

    Args:
        pred: ``[B,1,H,W]`` predicted affine-invariant disparity.
        target: ``[B,1,H,W]`` target disparity (normalised, see ``disparity_target``).
        mask: ``[B,1,H,W]`` bool valid pixels.
        variant: SSI normalisation, ``"robust"`` (default) or ``"lstsq"``.
        trim: fraction of largest per-image residuals dropped from the data term (0 = none).
        gradient_weight: weight of the gradient term (AnyDepth / DAv2: 2; MiDaS: 0.5). 0 disables it.
        scales: number of gradient scales (4).
        reduction: ``"batch"`` or ``"image"``, used by both terms.

    Returns:
        ``(total, parts)`` with scalar float32 tensors; ``parts`` has ``"ssi"`` and ``"grad"`` (detached).
    """
    p_hat, d_hat = normalize_pair(pred, target, mask, variant)
    mask = mask.bool()
    l_ssi = residual_loss(
        p_hat, d_hat, mask, power=1 if variant == "robust" else 2, trim=trim, reduction=reduction
    )
    if gradient_weight:
        l_gm = gradient_loss(p_hat, d_hat, mask, scales=scales, reduction=reduction)
    else:
        l_gm = torch.zeros((), device=pred.device)
    total = l_ssi + float(gradient_weight) * l_gm
    return total, {"ssi": l_ssi.detach(), "grad": l_gm.detach()}


@dataclass(frozen=True)
class DepthLoss:
    """Callable form of ``depth_loss`` with fixed settings (what ``engine.trainer`` builds from the config).

    Example:
        >>> loss_fn = DepthLoss(variant="robust", gradient_weight=2.0)
        >>> total, parts = loss_fn(pred, target, mask)  # doctest: +SKIP
    """

    variant: str = "robust"
    trim: float = 0.0
    gradient_weight: float = 2.0
    scales: int = 4
    reduction: str = "batch"

    def __post_init__(self) -> None:
        if self.variant not in SSI_VARIANTS:
            raise ValueError(f"unknown SSI variant {self.variant!r}; valid: {list(SSI_VARIANTS)}")
        if self.reduction not in REDUCTIONS:
            raise ValueError(f"unknown reduction {self.reduction!r}; valid: {list(REDUCTIONS)}")
        if not 0.0 <= self.trim < 1.0:
            raise ValueError(f"trim must be in [0, 1), got {self.trim}")
        if self.scales < 1:
            raise ValueError(f"scales must be >= 1, got {self.scales}")
        if self.gradient_weight < 0:
            raise ValueError(f"gradient_weight must be >= 0, got {self.gradient_weight}")

    def __call__(
        self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return depth_loss(
            pred,
            target,
            mask,
            variant=self.variant,
            trim=self.trim,
            gradient_weight=self.gradient_weight,
            scales=self.scales,
            reduction=self.reduction,
        )
