"""Virtual KITTI 2 (Naver) reader.

Native layout::

    Scene{01,02,06,18,20}/<variation>/frames/rgb/Camera_{0,1}/rgb_NNNNN.jpg      1242x375 RGB
    Scene{01,02,06,18,20}/<variation>/frames/depth/Camera_{0,1}/depth_NNNNN.png  uint16, centimetres

with ``<variation>`` in ``clone, fog, morning, overcast, rain, sunset, 15-deg-left, 15-deg-right, 30-deg-left,
30-deg-right``. Depth is planar, in centimetres (value / 100 = metres). **Sky is coded 65535 (655.35 m)** and
handled by ``sky_policy`` (default ``invalid``: the model's far plane is 100 m). The paper's released list
(``datasets/vkitti/train.txt``) holds absolute paths such as ``/root/autodl-tmp/datasets/vkitti2/Scene20/...``;
they are rebased onto ``root`` (the directory holding ``Scene01`` ...) automatically.

Intrinsics (constant over the dataset, from ``intrinsic.txt``): fx = fy = 725.0087, cx = 620.5, cy = 187.0 at
1242x375, scaled if the image has another size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from anydepth.data import io
from anydepth.data.datasets.common import ListDepthDataset
from anydepth.registry import DATASETS
from anydepth.types import DepthSpace, Intrinsics

__all__ = ["VKITTI2Dataset", "VKITTI2_INTRINSICS", "VKITTI2_SKY_CODE"]

VKITTI2_INTRINSICS = Intrinsics(fx=725.0087, fy=725.0087, cx=620.5, cy=187.0)
VKITTI2_SIZE = (375, 1242)  # (H, W) the intrinsics belong to
VKITTI2_SKY_CODE = 65535


@DATASETS.register("vkitti2")
class VKITTI2Dataset(ListDepthDataset):
    """Virtual KITTI 2 frames as metric planar depth (metres).

    Options:
        sky_policy ("invalid"): ``invalid`` | ``far_plane`` (sky = ``max_depth``) | ``max_nonsky``.
        depth_scale (float, 100): stored value / depth_scale = metres.
        min_depth / max_depth (0, 100): open valid interval in metres. path_prefix: see ``ListDepthDataset``.
    """

    name: ClassVar[str] = "vkitti2"
    depth_space: ClassVar[DepthSpace] = DepthSpace.DEPTH_METRIC
    depth_unit: ClassVar[str] = "m"
    has_sky: ClassVar[bool] = True
    OPTIONS: ClassVar[dict[str, Any]] = {"depth_scale": 100.0}

    def decode(self, path: Path, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        raw = io.read_png16(path)
        sky = raw == VKITTI2_SKY_CODE
        depth = raw.astype(np.float32) / np.float32(self.opts["depth_scale"])
        return depth, raw == 0, sky

    def intrinsics(self, i: int, hw: tuple[int, int]) -> Intrinsics | None:
        h, w = hw
        if (h, w) == VKITTI2_SIZE:
            return VKITTI2_INTRINSICS
        return VKITTI2_INTRINSICS.scaled(w / VKITTI2_SIZE[1], h / VKITTI2_SIZE[0])

    def validate_options(self) -> None:
        if not float(self.opts["depth_scale"]) > 0:
            raise ValueError(f"{self.name}: depth_scale must be > 0, got {self.opts['depth_scale']!r}")
