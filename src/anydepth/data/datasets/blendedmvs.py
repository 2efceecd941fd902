"""BlendedMVS / BlendedMVG reader (MVSNet layout).

Native layout (per project id ``PID``, 24 hex digits)::

    PID/blended_images/NNNNNNNN.jpg            768x576 RGB (also NNNNNNNN_masked.jpg)
    PID/rendered_depth_maps/NNNNNNNN.pfm       float32 PFM (rows stored bottom-to-top; flipped on load)
    PID/cams/NNNNNNNN_cam.txt                  "extrinsic" 4x4, "intrinsic" 3x3, depth_min depth_interval ...

Depth is rendered from a reconstructed mesh and has a **scene-arbitrary (non-metric) scale**: it is proportional
to planar depth, with an unknown per-scene factor and no shift. Decision: ``depth_space`` is
``DEPTH_AFFINE_INVARIANT`` (scale-only is a special case of affine), ``max_depth`` defaults to infinity (a metric
far plane means nothing here) and only the affine-invariant disparity loss may use it. 0 marks pixels where the
mesh is absent (often sky or background) and is invalid; there is no sky policy because those pixels cannot be
told apart from holes.

Intrinsics come from ``cams/NNNNNNNN_cam.txt`` next to ``rendered_depth_maps`` (path derived from the depth path).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from anydepth.data import io
from anydepth.data.datasets.common import ListDepthDataset
from anydepth.registry import DATASETS
from anydepth.types import DepthSpace, Intrinsics

__all__ = ["BlendedMVSDataset", "read_mvsnet_cam"]


def read_mvsnet_cam(path: str | Path) -> dict[str, Any]:
    """Parse an MVSNet ``_cam.txt``: ``{"extrinsic": 4x4, "intrinsic": 3x3, "depth": [min, interval, ...]}``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file does not follow the format (names the file).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"camera file not found: {p}")
    words = p.read_text(encoding="utf-8", errors="replace").split()
    try:
        e = words.index("extrinsic")
        k = words.index("intrinsic")
        extr = np.array([float(x) for x in words[e + 1 : e + 17]], dtype=np.float64).reshape(4, 4)
        intr = np.array([float(x) for x in words[k + 1 : k + 10]], dtype=np.float64).reshape(3, 3)
        depth = [float(x) for x in words[k + 10 :]]
    except (ValueError, IndexError) as err:
        raise ValueError(
            f"{p}: not an MVSNet camera file ('extrinsic' 4x4, 'intrinsic' 3x3, depth range)"
        ) from err
    return {"extrinsic": extr, "intrinsic": intr, "depth": depth}


def cam_path_for(depth_path: Path) -> Path:
    """``PID/rendered_depth_maps/NNNNNNNN.pfm`` -> ``PID/cams/NNNNNNNN_cam.txt``."""
    return depth_path.parent.parent / "cams" / f"{depth_path.stem}_cam.txt"


@DATASETS.register("blendedmvs")
class BlendedMVSDataset(ListDepthDataset):
    """BlendedMVS/BlendedMVG frames; depth up to an unknown per-scene scale.

    Options:
        min_depth / max_depth (0, inf): open valid interval in scene units. path_prefix: see ``ListDepthDataset``.
    """

    name: ClassVar[str] = "blendedmvs"
    depth_space: ClassVar[DepthSpace] = DepthSpace.DEPTH_AFFINE_INVARIANT
    depth_unit: ClassVar[str] = "scene units (non-metric, scale-only)"
    default_max_depth: ClassVar[float] = math.inf

    def decode(self, path: Path, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        if path.suffix.lower() != ".pfm":
            raise ValueError(f"{self.name}: {path}: expected a .pfm rendered depth map")
        depth = io.read_pfm(path)
        if depth.ndim != 2:
            raise ValueError(f"{self.name}: {path}: expected a single-channel PFM, got shape {depth.shape}")
        return depth, depth <= 0, None

    def intrinsics(self, i: int, hw: tuple[int, int]) -> Intrinsics | None:
        _, dpath = self.paths(i)
        k = read_mvsnet_cam(cam_path_for(dpath))["intrinsic"]
        return Intrinsics(fx=float(k[0, 0]), fy=float(k[1, 1]), cx=float(k[0, 2]), cy=float(k[1, 2]))
