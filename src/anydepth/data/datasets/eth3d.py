"""ETH3D high-resolution multi-view (training scenes, DSLR images): 454 images, Marigold's layout.

Layout (``eth3d.tar``, Marigold list ``data_split/eth3d_depth/eth3d_filename_list.txt``)::

    rgb/<scene>/images/dslr_images/DSC_NNNN.JPG                                     6048x4032 JPEG
    depth/<scene>_dslr_depth/<scene>/ground_truth_depth/dslr_images/DSC_NNNN.JPG    raw float32, 4032x6048

The ground-truth file has a ``.JPG`` extension but holds raw little-endian float32 depth in metres, row-major,
4032 rows x 6048 columns; ``+inf`` marks pixels without ground truth (set to 0 -> invalid). Valid in the open
interval (1e-5, inf). ``depth_hw`` overrides the raster size (tests use tiny files).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from anydepth.data.datasets.benchmark_base import BenchmarkDataset
from anydepth.registry import DATASETS
from anydepth.types import DepthSpace

__all__ = ["ETH3DDataset", "ETH3D_DEPTH_HW"]

#: (rows, columns) of every ETH3D DSLR ground-truth raster.
ETH3D_DEPTH_HW = (4032, 6048)


@DATASETS.register("eth3d")
class ETH3DDataset(BenchmarkDataset):
    """ETH3D DSLR images with laser-scan depth (454 images); depth in metres.

    Args:
        root, split_file, pairs: see ``BenchmarkDataset``.
        depth_hw: ``(H, W)`` of the raw float32 ground truth (default 4032x6048).
    """

    name: ClassVar[str] = "eth3d"
    depth_space: ClassVar[DepthSpace] = DepthSpace.DEPTH_METRIC
    min_depth: ClassVar[float] = 1e-5
    max_depth: ClassVar[float] = float("inf")
    official_list: ClassVar[str] = "data_split/eth3d_depth/eth3d_filename_list.txt"
    archive_name: ClassVar[str] = "eth3d.tar"
    expected_count: ClassVar[int] = 454
    scan_pattern: ClassVar[str] = r"rgb/(?P<scene>[^/]+)/images/dslr_images/(?P<file>[^/]+\.JPG)"

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        split_file: str | os.PathLike[str] | None = None,
        pairs: Sequence[Sequence[str]] | None = None,
        depth_hw: tuple[int, int] = ETH3D_DEPTH_HW,
    ) -> None:
        super().__init__(root, split_file=split_file, pairs=pairs)
        self.depth_hw = (int(depth_hw[0]), int(depth_hw[1]))

    @classmethod
    def row_from_match(cls, m: re.Match[str], files: set[str]) -> list[str] | None:
        scene, f = m["scene"], m["file"]
        return [m.group(0), f"depth/{scene}_dslr_depth/{scene}/ground_truth_depth/dslr_images/{f}"]

    def decode_depth_bytes(self, data: bytes, where: str, i: int) -> tuple[np.ndarray, np.ndarray]:
        h, w = self.depth_hw
        if len(data) != h * w * 4:
            raise ValueError(
                f"{where}: expected raw float32 depth of {h}x{w} ({h * w * 4} bytes), got {len(data)} bytes"
            )
        depth = np.frombuffer(data, dtype="<f4").astype(np.float32).reshape(h, w)
        depth[depth == np.inf] = 0.0
        return depth, np.zeros(depth.shape, dtype=bool)
