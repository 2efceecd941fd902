"""KITTI Eigen test split with annotated ground truth (652 of the 697 listed images), Marigold's layout.

Layout (``kitti_eigen_split_test.tar``, Marigold list ``data_split/kitti_depth/eigen_test_files_with_gt.txt``)::

    <date>/<drive>_sync/image_02/data/NNNNNNNNNN.png                 RGB, about 1242x375 (varies by date)
    <drive>_sync/proj_depth/groundtruth/image_02/NNNNNNNNNN.png      uint16, metres * 256, 0 = no LiDAR point

List columns: ``rgb gt|None focal``. Rows whose ground truth is ``None`` (45 of 697) are dropped, as Marigold's
``KITTIDepthDataset`` does. Depth = value / 256 (metres); valid in the open interval (1e-5, 80). The KITTI
benchmark (KB) crop to 352x1216 and the evaluation mask are applied by the benchmark, not the reader. The list's
focal length (pixels, full frame) is exposed as ``extra(i)["focal"]``.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import numpy as np

from anydepth.data.datasets.benchmark_base import BenchmarkDataset, decode_png16
from anydepth.registry import DATASETS
from anydepth.types import DepthSpace

__all__ = ["KITTIEigenDataset"]


@DATASETS.register("kitti")
class KITTIEigenDataset(BenchmarkDataset):
    """KITTI Eigen test images with annotated depth (652), full frames; depth in metres."""

    name: ClassVar[str] = "kitti"
    depth_space: ClassVar[DepthSpace] = DepthSpace.DEPTH_METRIC
    min_depth: ClassVar[float] = 1e-5
    max_depth: ClassVar[float] = 80.0
    official_list: ClassVar[str] = "data_split/kitti_depth/eigen_test_files_with_gt.txt"
    archive_name: ClassVar[str] = "kitti_eigen_split_test.tar"
    expected_count: ClassVar[int] = 652
    scan_pattern: ClassVar[str] = (
        r"(?P<date>\d{4}_\d\d_\d\d)/(?P<drive>[^/]+_sync)/image_02/data/(?P<id>\d+)\.png"
    )

    @classmethod
    def row_from_match(cls, m: re.Match[str], files: set[str]) -> list[str] | None:
        gt = f"{m['drive']}/proj_depth/groundtruth/image_02/{m['id']}.png"
        return [m.group(0), gt] if gt in files else None  # images without annotated GT are not scored

    def filter_rows(self, rows: list[list[str]]) -> list[list[str]]:
        return [r for r in rows if r[1] != "None"]

    def decode_depth_bytes(self, data: bytes, where: str, i: int) -> tuple[np.ndarray, np.ndarray]:
        raw = decode_png16(data, where)
        depth = (raw.astype(np.float64) / 256.0).astype(np.float32)
        return depth, np.zeros(depth.shape, dtype=bool)

    def extra(self, i: int) -> dict[str, Any]:
        row = self.rows[i]
        return {"focal": float(row[2])} if len(row) > 2 else {}
