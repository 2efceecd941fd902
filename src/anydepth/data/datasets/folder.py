"""``folder``: a generic RGB-D reader for users' own data (and for ``write_synthetic_dataset`` output).

Samples come from (first match wins):

1. ``pairs=[(rgb, depth), ...]`` or ``split_file=`` a list with one ``rgb_path depth_path [depth_scale]`` line
   per sample (paths relative to ``root``; an optional third column overrides ``depth_scale`` per sample);
2. the ``list`` named in ``root/dataset.json`` (see below);
3. a directory scan: every image in ``root/<rgb_dir>`` (default ``rgb``) is paired with the file in
   ``root/<depth_dir>`` (default ``depth``) that has the same stem (after removing ``depth_suffix``, e.g.
   ``_depth``) and a depth extension (``.png .npy .pfm .exr .hdf5 .h5``). Images without depth are skipped with a
   log message; sorting is by relative path.

Depth formats: 16-bit PNG (needs ``depth_scale``: stored value / depth_scale = depth, 0 = invalid), NPY, PFM,
EXR, HDF5 (key ``dataset``). Intrinsics (optional) come from a JSON file: either one camera for every image
``{"fx":..., "fy":..., "cx":..., "cy":...}`` or a mapping from RGB path (as listed) or stem to such a camera,
in pixels of the stored image (pixel-index convention, no half-pixel shift).

``root/dataset.json`` (written by ``write_synthetic_dataset``) supplies defaults that options override::

    {"format": "anydepth.folder", "version": 1, "list": "train.txt", "depth_scale": 1000.0,
     "depth_space": "depth_metric", "intrinsics": "intrinsics.json", "max_depth": 100.0}
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from anydepth.data import io
from anydepth.data.datasets.common import ListDepthDataset
from anydepth.registry import DATASETS
from anydepth.types import DepthSpace, Intrinsics

__all__ = ["FolderDataset", "scan_pairs", "FOLDER_META", "IMAGE_EXTENSIONS"]

logger = logging.getLogger(__name__)

FOLDER_META = "dataset.json"
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
_META_KEYS = {
    "format",
    "version",
    "list",
    "depth_scale",
    "depth_space",
    "intrinsics",
    "min_depth",
    "max_depth",
}


def scan_pairs(
    root: str | os.PathLike[str], rgb_dir: str = "rgb", depth_dir: str = "depth", depth_suffix: str = ""
) -> list[tuple[str, str]]:
    """Pair ``root/rgb_dir/**/X.<img>`` with ``root/depth_dir/**/X<depth_suffix>.<depth ext>`` by relative stem.

    Returns:
        sorted ``(rgb_rel, depth_rel)`` POSIX paths relative to ``root``.

    Raises:
        FileNotFoundError: a directory is missing.
        ValueError: two depth files share a stem (ambiguous).
    """
    r = Path(root)
    rd, dd = r / rgb_dir, r / depth_dir
    for d in (rd, dd):
        if not d.is_dir():
            raise FileNotFoundError(f"folder dataset: directory not found: {d}")
    depths: dict[str, Path] = {}
    for p in sorted(dd.rglob("*")):
        if not p.is_file() or p.suffix.lower() not in io.DEPTH_EXTENSIONS:
            continue
        rel = p.relative_to(dd).with_suffix("")
        stem = (
            rel.name[: -len(depth_suffix)] if depth_suffix and rel.name.endswith(depth_suffix) else rel.name
        )
        key = (rel.parent / stem).as_posix()
        if key in depths:
            raise ValueError(f"folder dataset: depth files {depths[key]} and {p} have the same stem {key!r}")
        depths[key] = p
    pairs: list[tuple[str, str]] = []
    skipped = 0
    for p in sorted(rd.rglob("*")):
        if not p.is_file() or p.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        key = p.relative_to(rd).with_suffix("").as_posix()
        if key not in depths:
            skipped += 1
            continue
        pairs.append((p.relative_to(r).as_posix(), depths[key].relative_to(r).as_posix()))
    if skipped:
        logger.info("folder dataset %s: %d image(s) without a depth file skipped", r, skipped)
    return pairs


def _parse_camera(obj: Any, where: str) -> Intrinsics:
    if not isinstance(obj, Mapping) or not {"fx", "fy", "cx", "cy"} <= set(obj):
        raise ValueError(f"{where}: expected a camera {{'fx','fy','cx','cy'}} in pixels, got {obj!r}")
    vals = {k: float(obj[k]) for k in ("fx", "fy", "cx", "cy")}
    if not all(math.isfinite(v) for v in vals.values()) or vals["fx"] <= 0 or vals["fy"] <= 0:
        raise ValueError(f"{where}: invalid camera {vals}")
    return Intrinsics(**vals)


@DATASETS.register("folder")
class FolderDataset(ListDepthDataset):
    """Generic RGB-D folder or list.

    Options:
        depth_scale (float | None): PNG divisor (1000 for millimetres); required when depth files are PNG.
        depth_space (str, "depth_metric"): a ``DepthSpace`` value naming what the depth means.
        intrinsics (str | dict | None): JSON file (relative to root or absolute) or an in-memory camera/mapping.
        rgb_dir / depth_dir / depth_suffix ("rgb" / "depth" / ""): directory-scan layout.
        exr_channel (str | None), hdf5_key ("dataset"): format details.
        min_depth / max_depth (0, inf): open valid interval. path_prefix: see ``ListDepthDataset``.
    """

    name: ClassVar[str] = "folder"
    depth_unit: ClassVar[str] = "as stored (metres for metric data)"
    default_max_depth: ClassVar[float] = math.inf
    OPTIONS: ClassVar[dict[str, Any]] = {
        "depth_scale": None,
        "depth_space": "depth_metric",
        "intrinsics": None,
        "rgb_dir": "rgb",
        "depth_dir": "depth",
        "depth_suffix": "",
        "exr_channel": None,
        "hdf5_key": "dataset",
    }

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        split_file: str | os.PathLike[str] | None = None,
        pairs: Sequence[tuple[str, str]] | None = None,
        **options: Any,
    ) -> None:
        r = Path(root)
        if not r.is_dir():
            raise FileNotFoundError(f"folder dataset: root directory not found: {r}")
        meta = self._read_meta(r)
        for key in ("depth_scale", "depth_space", "intrinsics", "min_depth", "max_depth"):
            if key in meta and key not in options:
                options[key] = meta[key]
        if pairs is None and split_file is None:
            if "list" in meta:
                split_file = r / str(meta["list"])
            else:
                pairs = scan_pairs(
                    r,
                    options.get("rgb_dir", "rgb"),
                    options.get("depth_dir", "depth"),
                    options.get("depth_suffix", ""),
                )
                if not pairs:
                    raise ValueError(f"folder dataset: no rgb/depth pairs found under {r}")
        super().__init__(r, split_file=split_file, pairs=pairs, **options)

    @staticmethod
    def _read_meta(root: Path) -> dict[str, Any]:
        p = root / FOLDER_META
        if not p.is_file():
            return {}
        try:
            meta = json.loads(p.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{p}: not valid JSON: {e}") from e
        if not isinstance(meta, dict) or meta.get("format") != "anydepth.folder":
            raise ValueError(f'{p}: expected a JSON object with "format": "anydepth.folder"')
        unknown = set(meta) - _META_KEYS
        if unknown:
            raise ValueError(f"{p}: unknown key(s) {sorted(unknown)}; valid: {sorted(_META_KEYS)}")
        return meta

    def validate_options(self) -> None:
        try:
            self.depth_space = DepthSpace(self.opts["depth_space"])  # type: ignore[misc]
        except ValueError:
            raise ValueError(
                f"folder: depth_space must be one of {[s.value for s in DepthSpace]}, got {self.opts['depth_space']!r}"
            ) from None
        scale = self.opts["depth_scale"]
        if scale is not None and not float(scale) > 0:
            raise ValueError(f"folder: depth_scale must be > 0, got {scale!r}")
        self._cams = self._load_intrinsics(self.opts["intrinsics"])

    def _load_intrinsics(self, spec: Any) -> Intrinsics | dict[str, Intrinsics] | None:
        if spec is None:
            return None
        where = "folder intrinsics"
        if isinstance(spec, str | os.PathLike):
            p = Path(spec)
            p = p if p.is_absolute() else self.root / p
            if not p.is_file():
                raise FileNotFoundError(f"folder dataset: intrinsics file not found: {p}")
            try:
                spec = json.loads(p.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise ValueError(f"{p}: not valid JSON: {e}") from e
            where = str(p)
        if isinstance(spec, Intrinsics):
            return spec
        if isinstance(spec, Mapping) and {"fx", "fy", "cx", "cy"} <= set(spec):
            return _parse_camera(spec, where)
        if isinstance(spec, Mapping):
            return {str(k): _parse_camera(v, f"{where}[{k!r}]") for k, v in spec.items()}
        raise ValueError(f"{where}: expected a camera or a mapping from RGB path to camera, got {type(spec)}")

    def decode(self, path: Path, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        row = self.rows[i]
        scale = self.opts["depth_scale"]
        if len(row) > 2:
            try:
                scale = float(row[2])
            except ValueError:
                raise ValueError(f"folder: third list column must be a depth scale, got {row[2]!r}") from None
        ext = path.suffix.lower()
        depth = io.read_depth(
            path,
            scale=float(scale) if scale is not None and ext == ".png" else None,
            key=self.opts["hdf5_key"],
            channel=self.opts["exr_channel"],
        )
        return depth, depth <= 0 if ext == ".png" else np.zeros(depth.shape, bool), None

    def intrinsics(self, i: int, hw: tuple[int, int]) -> Intrinsics | None:
        cams = self._cams
        if cams is None or isinstance(cams, Intrinsics):
            return cams
        rgb = self.pair(i)[0]
        for key in (rgb, Path(rgb).name, Path(rgb).stem):
            if key in cams:
                return cams[key]
        return None

    def extra(self, i: int) -> dict[str, Any]:
        return {}
