"""Core value types shared by every layer: depth spaces, encoder outputs, samples and predictions.

No IO happens here. Tensor shapes use ``B`` batch, ``C`` channels, ``H, W`` pixels, ``h, w`` token grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import torch

__all__ = ["DepthSpace", "EncoderOutput", "Sample", "Prediction", "Intrinsics"]


class DepthSpace(StrEnum):
    """What the values of a depth-like map mean.

    * ``DEPTH_METRIC``: planar depth (z) in metres.
    * ``DEPTH_AFFINE_INVARIANT``: depth up to an unknown scale and shift.
    * ``DISPARITY_AFFINE_INVARIANT``: inverse depth up to an unknown scale and shift (AnyDepth's output).
    * ``DISPARITY_METRIC``: inverse depth in 1/metres.
    """

    DEPTH_METRIC = "depth_metric"
    DEPTH_AFFINE_INVARIANT = "depth_affine_invariant"
    DISPARITY_AFFINE_INVARIANT = "disparity_affine_invariant"
    DISPARITY_METRIC = "disparity_metric"

    @property
    def is_disparity(self) -> bool:
        return self in (DepthSpace.DISPARITY_AFFINE_INVARIANT, DepthSpace.DISPARITY_METRIC)

    @property
    def is_metric(self) -> bool:
        return self in (DepthSpace.DEPTH_METRIC, DepthSpace.DISPARITY_METRIC)


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels for the image they belong to (no half-pixel shift implied)."""

    fx: float
    fy: float
    cx: float
    cy: float

    def __post_init__(self) -> None:
        values = {"fx": self.fx, "fy": self.fy, "cx": self.cx, "cy": self.cy}
        try:
            ok = all(math.isfinite(float(v)) for v in values.values())
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"intrinsics must be finite numbers (pixels), got {values}")

    def matrix(self) -> np.ndarray:
        """The 3x3 camera matrix K (float64)."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def scaled(self, sx: float, sy: float) -> Intrinsics:
        """Intrinsics after resizing the image by factors ``sx`` (width) and ``sy`` (height).

        Uses the pixel-centre convention: a pixel centre u maps to (u + 0.5) * s - 0.5.
        """
        return Intrinsics(self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5, (self.cy + 0.5) * sy - 0.5)

    def to_dict(self) -> dict[str, float]:
        return {"fx": self.fx, "fy": self.fy, "cx": self.cx, "cy": self.cy}


@dataclass
class EncoderOutput:
    """Features tapped from a ViT encoder at explicit block indices.

    Attributes:
        features: one patch map per tapped block, each ``[B, C_i, h, w]`` (register tokens dropped).
        cls_tokens: one class token per tapped block, each ``[B, C_i]``; empty tuple if not available.
        patch_size: the encoder's patch size in pixels (16 for DINOv3, 14 for DINOv2).
    """

    features: tuple[torch.Tensor, ...]
    cls_tokens: tuple[torch.Tensor, ...]
    patch_size: int

    def __post_init__(self) -> None:
        if self.cls_tokens and len(self.cls_tokens) != len(self.features):
            raise ValueError(
                f"EncoderOutput: {len(self.features)} feature maps but {len(self.cls_tokens)} class tokens"
            )


@dataclass
class Sample:
    """One RGB-D training or evaluation sample.

    Attributes:
        image: float32 ``[3, H, W]`` RGB in [0, 1].
        depth: float32 ``[1, H, W]`` in ``depth_space`` (metric depth in metres for real datasets);
            invalid pixels hold 0.
        valid: bool ``[1, H, W]``; True where ``depth`` is usable.
        depth_space: meaning of ``depth``.
        source: dataset name.
        name: sample identifier (usually the RGB path relative to the dataset root).
        intrinsics: pinhole intrinsics of ``image`` if known.
        extra: free-form metadata (e.g. sky mask, focal length); never used for control flow by the library.
    """

    image: torch.Tensor
    depth: torch.Tensor
    valid: torch.Tensor
    depth_space: DepthSpace = DepthSpace.DEPTH_METRIC
    source: str = ""
    name: str = ""
    intrinsics: Intrinsics | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Prediction:
    """A model prediction for one image, at the input image's resolution.

    Attributes:
        value: float32 ``[H, W]`` array in ``space``.
        space: depth space of ``value`` (AnyDepth presets: affine-invariant disparity).
        intrinsics: camera intrinsics used or estimated for the image, if any.
        metric: True only when ``value`` (or ``depth``) was aligned to metric measurements.
        depth: optional float32 ``[H, W]`` depth derived from ``value`` (metric if ``metric``).
        meta: free-form details (source path, processing size, timings).
    """

    value: np.ndarray
    space: DepthSpace
    intrinsics: Intrinsics | None = None
    metric: bool = False
    depth: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)
