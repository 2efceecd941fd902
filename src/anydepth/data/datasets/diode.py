"""DIODE validation set, indoor + outdoor (771 = 325 + 446 images), Marigold's layout.

Layout (``diode_val.tar``, Marigold list ``data_split/diode_depth/diode_val_all_filename_list.txt``)::

    {indoors,outdoor}/scene_XXXXX/scan_XXXXX/<id>.png              1024x768 RGB
    {indoors,outdoor}/scene_XXXXX/scan_XXXXX/<id>_depth.npy        float32 metres, [H,W,1]
    {indoors,outdoor}/scene_XXXXX/scan_XXXXX/<id>_depth_mask.npy   [H,W], 1 = valid

List columns: ``rgb depth mask``. The valid mask is the mask file only (Marigold does not intersect it with the
scanner range 0.6-350 m, which only clips predictions); pixels with non-finite or non-positive depth are also
excluded (they would make every relative metric infinite). ``subset`` keeps only ``indoors`` or ``outdoor`` rows.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from anydepth.data.datasets.benchmark_base import BenchmarkDataset, decode_npy
from anydepth.registry import DATASETS
from anydepth.types import DepthSpace

__all__ = ["DIODEDataset", "DIODE_SUBSETS"]

DIODE_SUBSETS: tuple[str, ...] = ("all", "indoors", "outdoor")
_SUBSET_COUNTS = {"all": 771, "indoors": 325, "outdoor": 446}


@DATASETS.register("diode")
class DIODEDataset(BenchmarkDataset):
    """DIODE val (indoor + outdoor) with its per-pixel mask files; depth in metres.

    Args:
        root, split_file, pairs: see ``BenchmarkDataset``.
        subset: ``"all"`` (default), ``"indoors"`` or ``"outdoor"``.
    """

    name: ClassVar[str] = "diode"
    depth_space: ClassVar[DepthSpace] = DepthSpace.DEPTH_METRIC
    min_depth: ClassVar[float] = 0.0
    max_depth: ClassVar[float] = float("inf")
    official_list: ClassVar[str] = "data_split/diode_depth/diode_val_all_filename_list.txt"
    archive_name: ClassVar[str] = "diode_val.tar"
    expected_count: ClassVar[int] = 771
    scan_pattern: ClassVar[str] = r"(?P<stem>(?:indoors|outdoor)/scene_\d+/scan_\d+/[^/]+)\.png"
    min_list_columns: ClassVar[int] = 3

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        split_file: str | os.PathLike[str] | None = None,
        pairs: Sequence[Sequence[str]] | None = None,
        subset: str = "all",
    ) -> None:
        if subset not in DIODE_SUBSETS:
            raise ValueError(f"unknown DIODE subset {subset!r}; expected one of {DIODE_SUBSETS}")
        self.subset = subset
        super().__init__(root, split_file=split_file, pairs=pairs)

    @property
    def expected_num_samples(self) -> int:
        return _SUBSET_COUNTS[self.subset]

    @classmethod
    def row_from_match(cls, m: re.Match[str], files: set[str]) -> list[str] | None:
        stem = m["stem"]
        return [m.group(0), f"{stem}_depth.npy", f"{stem}_depth_mask.npy"]

    def filter_rows(self, rows: list[list[str]]) -> list[list[str]]:
        for r in rows:
            if len(r) < 3:
                raise ValueError(f"DIODE list rows need 3 columns (rgb depth mask), got {r}")
        if self.subset == "all":
            return rows
        return [r for r in rows if r[0].startswith(self.subset + "/")]

    def decode_depth_bytes(self, data: bytes, where: str, i: int) -> tuple[np.ndarray, np.ndarray]:
        depth = decode_npy(data, where).squeeze().astype(np.float32)
        mask_rel = self.rows[i][2]
        mask = decode_npy(self.read(mask_rel), self.describe(mask_rel)).squeeze().astype(bool)
        if depth.ndim != 2 or mask.shape != depth.shape:
            raise ValueError(
                f"{where}: depth shape {depth.shape} and mask shape {mask.shape} must be equal [H,W]"
            )
        return depth, ~mask
