"""Hypersim (Apple, photorealistic indoor scenes) reader.

Native layout (per scene ``ai_VVV_NNN``; Lotus copies the same tree for the frames it keeps)::

    ai_001_001/images/scene_cam_00_final_preview/frame.0000.tonemap.jpg        8-bit tone-mapped RGB
    ai_001_001/images/scene_cam_00_final_hdf5/frame.0000.color.hdf5            linear HDR RGB (optional)
    ai_001_001/images/scene_cam_00_geometry_hdf5/frame.0000.depth_meters.hdf5  key "dataset", float16

``depth_meters`` is the **Euclidean distance from the optical centre** in metres (Hypersim README), not planar
depth. It is converted at load time to planar depth::

    z = dist * f / ||(u - W/2 + 1/2, v - H/2 + 1/2, f)||,   f = 886.81 px at 1024x768 (scaled with the width)

NaN marks pixels without geometry (windows, void) and is invalid. Hypersim has no sky code.

Also accepted: the Marigold-preprocessed variant (``rgb_cam_00_fr0000.png`` + ``depth_plane_cam_00_fr0000.png``,
planar depth in millimetres as uint16, 0 = invalid): any ``.png`` depth path is decoded as value / 1000 m.
An RGB path ending in ``.hdf5`` is read as linear HDR and tone-mapped as Hypersim does (gamma 1/2.2, scaled so
the 90th brightness percentile maps to 0.8), computed over all pixels (the entity-id mask is not used).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from anydepth.data import io
from anydepth.data.datasets.common import ListDepthDataset
from anydepth.registry import DATASETS
from anydepth.types import DepthSpace, Intrinsics

__all__ = ["HypersimDataset", "HYPERSIM_FOCAL", "hypersim_distance_to_depth", "hypersim_tonemap"]

#: Focal length in pixels of the Hypersim camera at the native 1024x768 size (60 deg horizontal FOV).
HYPERSIM_FOCAL = 886.81
HYPERSIM_WIDTH = 1024


def hypersim_distance_to_depth(dist: np.ndarray, focal: float | None = None) -> np.ndarray:
    """Convert Hypersim ray distance ``[H,W]`` (metres from the optical centre) to planar depth z (metres).

    Args:
        dist: float ``[H,W]`` distances; NaN stays NaN.
        focal: focal length in pixels; default 886.81 * W / 1024.

    Returns:
        float32 ``[H,W]`` planar depth.
    """
    h, w = dist.shape
    f = HYPERSIM_FOCAL * w / HYPERSIM_WIDTH if focal is None else float(focal)
    x = np.arange(w, dtype=np.float64) - w / 2 + 0.5
    y = np.arange(h, dtype=np.float64) - h / 2 + 0.5
    norm = np.sqrt(x[None, :] ** 2 + y[:, None] ** 2 + f * f)
    return (dist.astype(np.float64) * (f / norm)).astype(np.float32)


def hypersim_tonemap(
    rgb_linear: np.ndarray, *, gamma: float = 1.0 / 2.2, percentile: float = 90.0
) -> np.ndarray:
    """Tone-map a linear HDR image ``[H,W,3]`` to uint8 ``[H,W,3]`` as Hypersim's preview images do.

    Brightness is ``0.3 R + 0.59 G + 0.11 B`` of the linear image (Hypersim's weights); the scale maps its
    ``percentile`` to 0.8 after the gamma curve.
    """
    rgb = np.nan_to_num(np.asarray(rgb_linear, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    rgb = np.clip(rgb, 0.0, None)
    lum = 0.3 * rgb[..., 0] + 0.59 * rgb[..., 1] + 0.11 * rgb[..., 2]
    p = float(np.percentile(lum, percentile)) if lum.size else 0.0
    scale = (0.8 ** (1.0 / gamma)) / p if p > 1e-8 else 1.0
    out = np.power(np.clip(rgb * scale, 0.0, None), gamma)
    return np.clip(np.round(out * 255.0), 0, 255).astype(np.uint8)


@DATASETS.register("hypersim")
class HypersimDataset(ListDepthDataset):
    """Hypersim RGB-D frames as metric planar depth.

    Options:
        planar (bool, True): convert the stored ray distance to planar depth (False keeps ray distance).
        focal (float | None): focal length in pixels for the conversion; default 886.81 * W / 1024.
        png_scale (float, 1000): divisor of ``.png`` depth files (Marigold's mm planar-depth variant).
        min_depth / max_depth (0, 100): open valid interval in metres. path_prefix: see ``ListDepthDataset``.
    """

    name: ClassVar[str] = "hypersim"
    depth_space: ClassVar[DepthSpace] = DepthSpace.DEPTH_METRIC
    depth_unit: ClassVar[str] = "m"
    OPTIONS: ClassVar[dict[str, Any]] = {"planar": True, "focal": None, "png_scale": 1000.0}

    def decode(self, path: Path, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        ext = path.suffix.lower()
        if ext == ".png":
            depth = io.read_depth(path, scale=float(self.opts["png_scale"]))
            return depth, depth <= 0, None
        if ext not in (".hdf5", ".h5"):
            raise ValueError(f"{self.name}: {path}: expected a .hdf5 distance map or a .png planar depth map")
        dist = io.read_hdf5_dataset(path, "dataset")
        if dist.ndim != 2:
            raise ValueError(f"{self.name}: {path}: expected an [H,W] distance map, got shape {dist.shape}")
        dist = dist.astype(np.float32)
        invalid = ~np.isfinite(dist)
        depth = hypersim_distance_to_depth(dist, self.opts["focal"]) if self.opts["planar"] else dist
        return depth, invalid, None

    def load_image(self, i: int) -> np.ndarray:
        rgb, _ = self.paths(i)
        if rgb.suffix.lower() in (".hdf5", ".h5"):
            hdr = io.read_hdf5_dataset(rgb, "dataset")
            if hdr.ndim != 3 or hdr.shape[2] != 3:
                raise ValueError(f"{self.name}: {rgb}: expected an [H,W,3] HDR colour image, got {hdr.shape}")
            return hypersim_tonemap(hdr)
        return io.read_image(rgb)

    def intrinsics(self, i: int, hw: tuple[int, int]) -> Intrinsics | None:
        h, w = hw
        f = HYPERSIM_FOCAL * w / HYPERSIM_WIDTH if self.opts["focal"] is None else float(self.opts["focal"])
        # Principal point at the image centre: continuous W/2 is pixel index W/2 - 1/2.
        return Intrinsics(fx=f, fy=f, cx=w / 2 - 0.5, cy=h / 2 - 0.5)

    def validate_options(self) -> None:
        f = self.opts["focal"]
        if f is not None and not (isinstance(f, int | float) and math.isfinite(f) and f > 0):
            raise ValueError(f"{self.name}: focal must be a positive number of pixels, got {f!r}")
        if not float(self.opts["png_scale"]) > 0:
            raise ValueError(f"{self.name}: png_scale must be > 0, got {self.opts['png_scale']!r}")
