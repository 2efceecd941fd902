"""Zero-shot benchmark specifications (Marigold protocol) and the crops/masks they use.

A ``BenchmarkSpec`` is data: which dataset reader, which split, how the frame is cropped before inference, which
evaluation mask applies, the depth range, the default alignment and processing resolution. The five benchmarks of
the paper's Table 2 are registered in ``anydepth.registry.BENCHMARKS`` under ``nyuv2``, ``kitti``, ``eth3d``,
``scannet`` and ``diode``.

Protocol values (Marigold v1.1 configs/scripts; Lotus configs for the processing resolution):

=========  ======  ==================  =======================  =================  ===========  ===========
benchmark  images  crop before infer.  evaluation mask          GT valid (open)    pred clip    proc. res.
=========  ======  ==================  =======================  =================  ===========  ===========
nyuv2      654     none                Eigen rows 45:471,        (1e-3, 10)         [1e-3, 10]   native
                                       cols 41:601
kitti      652     KB 352x1216         "eigen" fractions of the  (1e-5, 80)         [1e-5, 80]   native
                                       cropped frame
eth3d      454     none                none                     (1e-5, inf)        [1e-5, inf)  768 (long)
scannet    800     none                none                     (1e-3, 10)         [1e-3, 10]   native
diode      771     none                mask file only           mask file          [0.6, 350]   640 (long)
=========  ======  ==================  =======================  =================  ===========  ===========

ETH3D fits the alignment on a copy subsampled to 1024 px (``alignment_max_res``). Predictions are clipped to the
range and then to >= 1e-6 after alignment.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from anydepth.data.datasets.benchmark_base import BenchmarkDataset
from anydepth.data.datasets.diode import DIODEDataset
from anydepth.data.datasets.eth3d import ETH3DDataset
from anydepth.data.datasets.kitti import KITTIEigenDataset
from anydepth.data.datasets.nyuv2 import NYUv2Dataset
from anydepth.data.datasets.scannet import ScanNetDataset
from anydepth.eval.metrics import DEFAULT_METRICS, METRICS
from anydepth.ops.alignment import ALIGNMENT_METHODS, DOWNSAMPLE_MODES
from anydepth.registry import BENCHMARKS, DATASETS

__all__ = [
    "BenchmarkSpec",
    "CropBox",
    "KB_CROP_HW",
    "KITTI_MASKS",
    "EVAL_MASKS",
    "kb_crop_box",
    "apply_crop",
    "eval_mask",
    "get_benchmark",
    "list_benchmarks",
    "open_dataset",
    "PAPER_BENCHMARKS",
]

#: Height and width of the KITTI benchmark crop.
KB_CROP_HW = (352, 1216)

#: Values of the ``kitti_mask`` option: ``marigold`` = Eigen fractions on the KB-cropped 352x1216 frame
#: (Marigold/Lotus default), ``eigen_full`` / ``garg_full`` = Eigen / Garg fractions of the *full* frame (BTS,
#: AdaBins), translated into the cropped frame, ``none`` = no crop mask.
KITTI_MASKS: tuple[str, ...] = ("marigold", "eigen_full", "garg_full", "none")

#: Registered evaluation masks.
EVAL_MASKS: tuple[str, ...] = ("nyu_eigen", "kitti_marigold", "kitti_eigen_full", "kitti_garg_full")

# (top, bottom, left, right) fractions, as in BTS / Marigold's KITTI dataset class
_EIGEN_FRACTIONS = (0.3324324, 0.91351351, 0.0359477, 0.96405229)
_GARG_FRACTIONS = (0.40810811, 0.99189189, 0.03594771, 0.96405229)


@dataclass(frozen=True)
class CropBox:
    """A crop of a full frame: ``frame[top:top+height, left:left+width]``; ``full_hw`` is the frame size."""

    top: int
    left: int
    height: int
    width: int
    full_hw: tuple[int, int]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def kb_crop_box(hw: tuple[int, int]) -> CropBox:
    """KITTI benchmark crop of a frame of size ``hw``: the bottom 352 rows, 1216 columns centred (floor).

    Raises:
        ValueError: the frame is smaller than 352x1216.
    """
    h, w = hw
    ch, cw = KB_CROP_HW
    if h < ch or w < cw:
        raise ValueError(f"KITTI benchmark crop needs a frame of at least {ch}x{cw}, got {h}x{w}")
    return CropBox(top=int(h - ch), left=int((w - cw) / 2), height=ch, width=cw, full_hw=(h, w))


def apply_crop(arr: np.ndarray, box: CropBox | None) -> np.ndarray:
    """Crop the first two axes (``[H,W,...]``) of ``arr`` to ``box``; identity when ``box`` is None."""
    if box is None:
        return arr
    return arr[box.top : box.top + box.height, box.left : box.left + box.width]


def _fraction_mask(hw: tuple[int, int], fr: tuple[float, float, float, float]) -> np.ndarray:
    h, w = hw
    m = np.zeros((h, w), dtype=bool)
    m[int(fr[0] * h) : int(fr[1] * h), int(fr[2] * w) : int(fr[3] * w)] = True
    return m


def eval_mask(name: str | None, hw: tuple[int, int], crop: CropBox | None = None) -> np.ndarray | None:
    """The evaluation mask ``name`` for an (optionally cropped) frame of size ``hw``; None when ``name`` is None.

    * ``nyu_eigen``: rows 45:471 and cols 41:601 (end-exclusive) of a 480x640 frame; for another size the box is
      scaled proportionally.
    * ``kitti_marigold``: ``[int(0.3324324 H) : int(0.91351351 H), int(0.0359477 W) : int(0.96405229 W)]`` of the
      frame as given (the KB-cropped frame: rows 117:321, cols 43:1172).
    * ``kitti_eigen_full`` / ``kitti_garg_full``: the Eigen / Garg fractions of the full frame ``crop.full_hw``,
      translated by the crop offsets (requires ``crop``).

    Returns:
        bool ``[H,W]``.
    """
    if name is None:
        return None
    h, w = hw
    if name == "nyu_eigen":
        m = np.zeros((h, w), dtype=bool)
        if (h, w) == (480, 640):
            m[45:471, 41:601] = True
        else:
            m[round(45 * h / 480) : round(471 * h / 480), round(41 * w / 640) : round(601 * w / 640)] = True
        return m
    if name == "kitti_marigold":
        return _fraction_mask((h, w), _EIGEN_FRACTIONS)
    if name in ("kitti_eigen_full", "kitti_garg_full"):
        if crop is None:
            full = _fraction_mask((h, w), _EIGEN_FRACTIONS if name == "kitti_eigen_full" else _GARG_FRACTIONS)
            return full
        full = _fraction_mask(
            crop.full_hw, _EIGEN_FRACTIONS if name == "kitti_eigen_full" else _GARG_FRACTIONS
        )
        return apply_crop(full, crop).copy()
    raise KeyError(f"unknown evaluation mask {name!r}; valid: {', '.join(EVAL_MASKS)}")


@dataclass(frozen=True)
class BenchmarkSpec:
    """One zero-shot benchmark under the Marigold protocol.

    Attributes:
        name: registry name (``nyuv2``...).
        display_name: column title in tables (``NYUv2``...).
        dataset: ``DATASETS`` registry name of the reader.
        official_list: Marigold's split list (repository path) defining the scored samples.
        num_samples: number of samples the official split scores.
        crop: ``"kb"`` (KITTI benchmark crop applied to RGB and GT before inference) or None.
        eval_mask: name of the evaluation mask (``EVAL_MASKS``) or None.
        min_depth, max_depth: depth range in metres: the GT valid interval (open, if ``mask_range``) and the
            clip range of aligned predictions.
        mask_range: intersect the GT valid mask with ``(min_depth, max_depth)``. False for DIODE (mask file only).
        alignment: default alignment (``"auto"`` = by prediction space, or one of ``ALIGNMENT_METHODS``).
        alignment_max_res: fit the alignment on a copy subsampled to this maximum side (ETH3D: 1024).
        alignment_downsample: ``"marigold"`` or ``"nearest2d"`` (see ``anydepth.ops.alignment``).
        processing_res: default inference resolution: longest side in pixels, 0 = native.
        metrics: metric names computed.
        min_pred_depth: final lower clip of predictions (Marigold: 1e-6).
        dataset_kwargs: extra keyword arguments for the reader (e.g. DIODE ``subset``).
        options: free-form protocol options recorded with results (e.g. ``kitti_mask``).
    """

    name: str
    display_name: str
    dataset: str
    official_list: str
    num_samples: int
    crop: str | None
    eval_mask: str | None
    min_depth: float
    max_depth: float
    mask_range: bool = True
    alignment: str = "auto"
    alignment_max_res: int | None = None
    alignment_downsample: str = "marigold"
    processing_res: int = 0
    metrics: tuple[str, ...] = DEFAULT_METRICS
    min_pred_depth: float = 1e-6
    dataset_kwargs: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.crop not in (None, "kb"):
            raise ValueError(f"{self.name}: unknown crop {self.crop!r}; expected None or 'kb'")
        if self.eval_mask is not None and self.eval_mask not in EVAL_MASKS:
            raise ValueError(f"{self.name}: unknown eval_mask {self.eval_mask!r}; valid: {EVAL_MASKS}")
        if self.alignment != "auto" and self.alignment not in ALIGNMENT_METHODS:
            raise ValueError(
                f"{self.name}: unknown alignment {self.alignment!r}; valid: auto, {ALIGNMENT_METHODS}"
            )
        if self.alignment_downsample not in DOWNSAMPLE_MODES:
            raise ValueError(f"{self.name}: unknown alignment_downsample {self.alignment_downsample!r}")
        for m in self.metrics:
            if m not in METRICS:
                raise ValueError(f"{self.name}: unknown metric {m!r}; valid: {', '.join(METRICS)}")
        if not self.min_depth < self.max_depth:
            raise ValueError(f"{self.name}: min_depth {self.min_depth} must be < max_depth {self.max_depth}")

    def replace(self, **changes: Any) -> BenchmarkSpec:
        """A copy with fields changed. ``kitti_mask=...`` and ``diode_range_mask=...`` are accepted as shortcuts.

        Raises:
            ValueError: unknown field or option value.
        """
        changes = dict(changes)
        options = dict(self.options)
        if "kitti_mask" in changes:
            km = changes.pop("kitti_mask")
            if km not in KITTI_MASKS:
                raise ValueError(f"unknown kitti_mask {km!r}; expected one of {KITTI_MASKS}")
            if self.crop != "kb":
                raise ValueError(f"kitti_mask applies to KITTI only, not to benchmark {self.name!r}")
            changes["eval_mask"] = None if km == "none" else f"kitti_{km}"
            options["kitti_mask"] = km
        if "diode_range_mask" in changes:
            flag = bool(changes.pop("diode_range_mask"))
            changes["mask_range"] = flag
            options["range_mask"] = flag
        valid = {f.name for f in dataclasses.fields(self)}
        bad = set(changes) - valid
        if bad:
            raise ValueError(f"unknown BenchmarkSpec field(s) {sorted(bad)}; valid: {sorted(valid)}")
        changes["options"] = options
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly description (``inf`` written as the string ``"inf"``)."""
        d = dataclasses.asdict(self)
        for k in ("min_depth", "max_depth"):
            if not np.isfinite(d[k]):
                d[k] = "inf" if d[k] > 0 else "-inf"
        d["metrics"] = list(self.metrics)
        return d


def _register(spec: BenchmarkSpec) -> BenchmarkSpec:
    BENCHMARKS.add(spec.name, spec)
    return spec


NYUV2 = _register(
    BenchmarkSpec(
        name="nyuv2",
        display_name="NYUv2",
        dataset=NYUv2Dataset.name,
        official_list=NYUv2Dataset.official_list,
        num_samples=NYUv2Dataset.expected_count,
        crop=None,
        eval_mask="nyu_eigen",
        min_depth=1e-3,
        max_depth=10.0,
    )
)
KITTI = _register(
    BenchmarkSpec(
        name="kitti",
        display_name="KITTI",
        dataset=KITTIEigenDataset.name,
        official_list=KITTIEigenDataset.official_list,
        num_samples=KITTIEigenDataset.expected_count,
        crop="kb",
        eval_mask="kitti_marigold",
        min_depth=1e-5,
        max_depth=80.0,
        options={"kitti_mask": "marigold"},
    )
)
ETH3D = _register(
    BenchmarkSpec(
        name="eth3d",
        display_name="ETH3D",
        dataset=ETH3DDataset.name,
        official_list=ETH3DDataset.official_list,
        num_samples=ETH3DDataset.expected_count,
        crop=None,
        eval_mask=None,
        min_depth=1e-5,
        max_depth=float("inf"),
        alignment_max_res=1024,
        processing_res=768,
    )
)
SCANNET = _register(
    BenchmarkSpec(
        name="scannet",
        display_name="ScanNet",
        dataset=ScanNetDataset.name,
        official_list=ScanNetDataset.official_list,
        num_samples=ScanNetDataset.expected_count,
        crop=None,
        eval_mask=None,
        min_depth=1e-3,
        max_depth=10.0,
    )
)
DIODE = _register(
    BenchmarkSpec(
        name="diode",
        display_name="DIODE",
        dataset=DIODEDataset.name,
        official_list=DIODEDataset.official_list,
        num_samples=DIODEDataset.expected_count,
        crop=None,
        eval_mask=None,
        min_depth=0.6,
        max_depth=350.0,
        mask_range=False,
        processing_res=640,
        options={"range_mask": False},
    )
)

#: The five benchmarks of the paper's Table 2, in its column order.
PAPER_BENCHMARKS: tuple[str, ...] = ("nyuv2", "kitti", "eth3d", "scannet", "diode")


def get_benchmark(name: str | BenchmarkSpec) -> BenchmarkSpec:
    """The registered spec ``name`` (a spec is returned unchanged). Raises ``KeyError`` with close matches."""
    if isinstance(name, BenchmarkSpec):
        return name
    spec: BenchmarkSpec = BENCHMARKS.get(name)
    return spec


def list_benchmarks() -> list[str]:
    """Registered benchmark names in the paper's column order first."""
    rest = [n for n in BENCHMARKS.names() if n not in PAPER_BENCHMARKS]
    return [n for n in PAPER_BENCHMARKS if n in BENCHMARKS] + rest


def open_dataset(
    spec: BenchmarkSpec | str,
    root: str | os.PathLike[str],
    *,
    split_file: str | os.PathLike[str] | None = None,
    **dataset_kwargs: Any,
) -> BenchmarkDataset:
    """Instantiate the reader of ``spec`` on ``root`` (extracted directory, tar, or directory holding the tar).

    Args:
        spec: benchmark spec or name.
        root: benchmark data location.
        split_file: Marigold-format list; None = look for the official list's basename in ``root``, else scan.
        **dataset_kwargs: reader options (override ``spec.dataset_kwargs``; e.g. ETH3D ``depth_hw``).
    """
    s = get_benchmark(spec)
    cls = DATASETS.get(s.dataset)
    kwargs = {**s.dataset_kwargs, **dataset_kwargs}
    ds: BenchmarkDataset = cls(root, split_file=split_file, **kwargs)
    return ds
