"""NYUv2 (labeled set, Eigen test split: 654 images) as prepared by Marigold for evaluation.

Layout (``nyu_labeled_extracted.tar``, Marigold list ``data_split/nyu_depth/labeled/filename_list_test.txt``)::

    test/<scene>/rgb_NNNN.png      640x480 RGB (includes the white border the Eigen mask excludes)
    test/<scene>/depth_NNNN.png    uint16 millimetres, *raw* Kinect depth, 0 = missing
    test/<scene>/filled_NNNN.png   in-painted depth in Marigold's tar (byte-identical to raw; unused)

List columns: ``rgb depth filled``. Depth = value / 1000 (metres); valid where in the open interval (1e-3, 10).
The Eigen evaluation mask (rows 45:471, cols 41:601) is applied by the benchmark, not the reader.
"""

from __future__ import annotations

import re
from typing import ClassVar

import numpy as np

from anydepth.data.datasets.benchmark_base import BenchmarkDataset, decode_png16
from anydepth.registry import DATASETS
from anydepth.types import DepthSpace

__all__ = ["NYUv2Dataset"]


@DATASETS.register("nyuv2")
class NYUv2Dataset(BenchmarkDataset):
    """NYUv2 Eigen test split (654 images) in Marigold's evaluation layout; depth in metres."""

    name: ClassVar[str] = "nyuv2"
    depth_space: ClassVar[DepthSpace] = DepthSpace.DEPTH_METRIC
    min_depth: ClassVar[float] = 1e-3
    max_depth: ClassVar[float] = 10.0
    official_list: ClassVar[str] = "data_split/nyu_depth/labeled/filename_list_test.txt"
    archive_name: ClassVar[str] = "nyu_labeled_extracted.tar"
    expected_count: ClassVar[int] = 654
    scan_pattern: ClassVar[str] = r"test/(?P<scene>[^/]+)/rgb_(?P<id>\d+)\.png"
    marigold_pred_prefix_mode: ClassVar[str] = "rgb_id"

    @classmethod
    def row_from_match(cls, m: re.Match[str], files: set[str]) -> list[str] | None:
        scene, idx = m["scene"], m["id"]
        return [m.group(0), f"test/{scene}/depth_{idx}.png", f"test/{scene}/filled_{idx}.png"]

    def decode_depth_bytes(self, data: bytes, where: str, i: int) -> tuple[np.ndarray, np.ndarray]:
        raw = decode_png16(data, where)
        # divide in float64 then round once to float32, as Marigold does (uint16 / 1000.0 -> .float())
        depth = (raw.astype(np.float64) / 1000.0).astype(np.float32)
        return depth, np.zeros(depth.shape, dtype=bool)
