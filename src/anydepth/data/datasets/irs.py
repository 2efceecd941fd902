"""IRS (HKBU indoor robotics stereo) reader.

Native layout::

    IRSDataset/{Home,Office,Restaurant,Store}/<sequence>/l_N.png   960x540 left RGB
    IRSDataset/{Home,Office,Restaurant,Store}/<sequence>/d_N.exr   left DISPARITY in pixels (OpenEXR, float)

The official lists (``lists/IRSDataset_{TRAIN,TEST}.list``) have 3-4 columns ``l_N.png r_N.png d_N.exr
[n_N.exr]``; a row whose second column is the right image (``r_*``) is read as (column 1, column 3), so the
official lists work as they are, as do 2-column ``rgb depth`` lists. Depth is converted at load time::

    depth (m) = fx * B / disparity = 480 px * 0.1 m / disparity = 48 / disparity

(fx = fy = 480 px in IRS's loader; B = 0.1 m implied by the ``48/disp`` in its networks). Disparity <= 0 and
non-finite values are invalid; depths beyond ``max_depth`` (100 m, i.e. disparity < 0.48 px) are invalid.
Intrinsics: fx = fy = 480, principal point assumed at the image centre (479.5, 269.5 in pixel-index convention).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from anydepth.data import io
from anydepth.data.datasets.common import ListDepthDataset
from anydepth.registry import DATASETS
from anydepth.types import DepthSpace, Intrinsics

__all__ = ["IRSDataset", "irs_disparity_to_depth", "IRS_FOCAL", "IRS_BASELINE"]

IRS_FOCAL = 480.0
IRS_BASELINE = 0.1
IRS_WIDTH = 960


def irs_disparity_to_depth(disp: np.ndarray, focal_baseline: float = IRS_FOCAL * IRS_BASELINE) -> np.ndarray:
    """``depth = focal_baseline / disp`` (metres) where ``disp > 0`` and finite; 0 elsewhere. float32 ``[H,W]``."""
    d = np.asarray(disp, dtype=np.float32)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(d) & (d > 0)
    out = np.zeros_like(d)
    out[ok] = np.float32(focal_baseline) / d[ok]
    return out


@DATASETS.register("irs")
class IRSDataset(ListDepthDataset):
    """IRS left frames with metric planar depth from the ground-truth disparity.

    Options:
        focal_baseline (float, 48): fx * B in px*m at the native 960 px width.
        exr_channel (str | None): EXR channel holding disparity (default: automatic, ``R`` for RGB files).
        min_depth / max_depth (0, 100): open valid interval in metres. path_prefix: see ``ListDepthDataset``.
    """

    name: ClassVar[str] = "irs"
    depth_space: ClassVar[DepthSpace] = DepthSpace.DEPTH_METRIC
    depth_unit: ClassVar[str] = "m"
    OPTIONS: ClassVar[dict[str, Any]] = {"focal_baseline": IRS_FOCAL * IRS_BASELINE, "exr_channel": None}

    def pair(self, i: int) -> tuple[str, str]:
        r = self.rows[i]
        if len(r) >= 3 and Path(r[1]).name.startswith("r_") and r[2].lower().endswith(".exr"):
            return r[0], r[2]
        return r[0], r[1]

    def decode(self, path: Path, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        if path.suffix.lower() != ".exr":
            raise ValueError(f"{self.name}: {path}: expected an OpenEXR disparity map (.exr)")
        disp = io.read_exr(path, channel=self.opts["exr_channel"])
        with np.errstate(invalid="ignore"):
            invalid = ~(np.isfinite(disp) & (disp > 0))
        return irs_disparity_to_depth(disp, float(self.opts["focal_baseline"])), invalid, None

    def intrinsics(self, i: int, hw: tuple[int, int]) -> Intrinsics | None:
        h, w = hw
        f = IRS_FOCAL * w / IRS_WIDTH
        return Intrinsics(fx=f, fy=f, cx=w / 2 - 0.5, cy=h / 2 - 0.5)

    def validate_options(self) -> None:
        if not float(self.opts["focal_baseline"]) > 0:
            raise ValueError(f"{self.name}: focal_baseline must be > 0, got {self.opts['focal_baseline']!r}")
