"""TartanAir (CMU, AirSim / Unreal) reader.

Native layout::

    <env>/{Easy,Hard}/P00K/image_left/NNNNNN_left.png              640x480 RGB
    <env>/{Easy,Hard}/P00K/depth_left/NNNNNN_left_depth.npy        float32 planar depth, metres

(the right camera is the same with ``_right``). The sky sphere is a **large finite depth (about 10,000 m)**,
not inf. Pixels at or beyond ``sky_threshold`` (default 5,000 m) are sky and follow ``sky_policy`` (default
``invalid``); anything else beyond ``max_depth`` (the 100 m far plane) is invalid too.
Intrinsics: fx = fy = 320, cx = 320, cy = 240 at 640x480 (90 deg FOV), as published (scaled for other sizes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from anydepth.data import io
from anydepth.data.datasets.common import ListDepthDataset
from anydepth.registry import DATASETS
from anydepth.types import DepthSpace, Intrinsics

__all__ = ["TartanAirDataset", "TARTANAIR_INTRINSICS"]

TARTANAIR_INTRINSICS = Intrinsics(fx=320.0, fy=320.0, cx=320.0, cy=240.0)
TARTANAIR_SIZE = (480, 640)


@DATASETS.register("tartanair")
class TartanAirDataset(ListDepthDataset):
    """TartanAir frames as metric planar depth.

    Options:
        sky_policy ("invalid"): ``invalid`` | ``far_plane`` | ``max_nonsky``.
        sky_threshold (float, 5000): depths >= this (metres) are sky.
        min_depth / max_depth (0, 100): open valid interval in metres. path_prefix: see ``ListDepthDataset``.
    """

    name: ClassVar[str] = "tartanair"
    depth_space: ClassVar[DepthSpace] = DepthSpace.DEPTH_METRIC
    depth_unit: ClassVar[str] = "m"
    has_sky: ClassVar[bool] = True
    OPTIONS: ClassVar[dict[str, Any]] = {"sky_threshold": 5000.0}

    def decode(self, path: Path, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        if path.suffix.lower() != ".npy":
            raise ValueError(f"{self.name}: {path}: expected a .npy depth map")
        depth = io.read_depth(path)
        with np.errstate(invalid="ignore"):
            sky = np.isfinite(depth) & (depth >= float(self.opts["sky_threshold"]))
        return depth, ~np.isfinite(depth), sky

    def intrinsics(self, i: int, hw: tuple[int, int]) -> Intrinsics | None:
        h, w = hw
        if (h, w) == TARTANAIR_SIZE:
            return TARTANAIR_INTRINSICS
        return TARTANAIR_INTRINSICS.scaled(w / TARTANAIR_SIZE[1], h / TARTANAIR_SIZE[0])

    def validate_options(self) -> None:
        if not float(self.opts["sky_threshold"]) > 0:
            raise ValueError(f"{self.name}: sky_threshold must be > 0, got {self.opts['sky_threshold']!r}")
