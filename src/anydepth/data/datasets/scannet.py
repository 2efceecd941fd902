"""ScanNet v2 validation frames sampled by Marigold (800 frames from 271 scenes).

Layout (``scannet_val_sampled_800_1.tar``, Marigold list
``data_split/scannet_depth/scannet_val_sampled_list_800_1.txt``)::

    <sceneXXXX_YY>/color/NNNNNN.jpg    640x480 RGB (resized to the depth size)
    <sceneXXXX_YY>/depth/NNNNNN.png    uint16 millimetres, 0 = missing

Depth = value / 1000 (metres); valid in the open interval (1e-3, 10).
"""

from __future__ import annotations

import re
from typing import ClassVar

import numpy as np

from anydepth.data.datasets.benchmark_base import BenchmarkDataset, decode_png16
from anydepth.registry import DATASETS
from anydepth.types import DepthSpace

__all__ = ["ScanNetDataset"]


@DATASETS.register("scannet")
class ScanNetDataset(BenchmarkDataset):
    """ScanNet validation frames (Marigold's 800-frame sample); depth in metres."""

    name: ClassVar[str] = "scannet"
    depth_space: ClassVar[DepthSpace] = DepthSpace.DEPTH_METRIC
    min_depth: ClassVar[float] = 1e-3
    max_depth: ClassVar[float] = 10.0
    official_list: ClassVar[str] = "data_split/scannet_depth/scannet_val_sampled_list_800_1.txt"
    archive_name: ClassVar[str] = "scannet_val_sampled_800_1.tar"
    expected_count: ClassVar[int] = 800
    scan_pattern: ClassVar[str] = r"(?P<scene>scene\d+_\d+)/color/(?P<id>\d+)\.jpg"

    @classmethod
    def row_from_match(cls, m: re.Match[str], files: set[str]) -> list[str] | None:
        return [m.group(0), f"{m['scene']}/depth/{m['id']}.png"]

    def decode_depth_bytes(self, data: bytes, where: str, i: int) -> tuple[np.ndarray, np.ndarray]:
        raw = decode_png16(data, where)
        depth = (raw.astype(np.float64) / 1000.0).astype(np.float32)
        return depth, np.zeros(depth.shape, dtype=bool)
