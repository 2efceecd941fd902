"""Point-cloud surface quality: local plane fits and normals on regions that are planar in the ground truth.

"Less noisy point clouds" measured as two numbers per image (``surface_quality``), both computed on the
prediction's 3D points (depth unprojected with the image's intrinsics, after the prediction has been aligned to
the ground truth so that units match) over *GT-planar windows*: ``k x k`` pixel windows whose ground-truth points
all exist and lie on a plane within ``planar_tol`` (relative RMS distance to their best-fit plane):

* ``plane_residual``: RMS distance of the predicted points of each window to *their own* best-fit plane,
  divided by the window's mean GT depth (dimensionless; 0 = locally perfectly flat where the scene is flat);
* ``normal_noise_deg``: angle between each window's predicted-plane normal and the GT-plane normal, in degrees
  (mean over windows): bumpy or tilted surfaces raise it.

Both are medians/means over windows sampled with stride ``stride``. Windows are fitted with per-window 3x3
covariance matrices from box sums (one eigen-decomposition per window, vectorised); in float64 the box sums
leave a floor of about 1e-7 relative residual on exact planes, far below real-world values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from anydepth.ops.geometry import unproject_depth
from anydepth.types import Intrinsics

__all__ = ["WindowPlanes", "window_planes", "SurfaceQuality", "surface_quality"]


@dataclass(frozen=True)
class WindowPlanes:
    """Best-fit planes of ``k x k`` windows (centres on a stride grid).

    Attributes:
        rms: ``[h, w]`` RMS point-to-plane distance (units of the points); NaN where a window has missing points.
        normal: ``[h, w, 3]`` unit plane normals (sign: facing the camera, ``n_z < 0``).
        mean_z: ``[h, w]`` mean depth of the window.
    """

    rms: np.ndarray
    normal: np.ndarray
    mean_z: np.ndarray


def _box_sum(a: np.ndarray, k: int, stride: int) -> np.ndarray:
    """Sum over ``k x k`` windows (valid positions only) of ``a [H, W, ...]``, sampled every ``stride``."""
    c = np.cumsum(np.cumsum(a, axis=0), axis=1)
    c = np.pad(c, ((1, 0), (1, 0)) + ((0, 0),) * (a.ndim - 2))
    s = c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]
    return s[::stride, ::stride]


def window_planes(points: np.ndarray, valid: np.ndarray, k: int = 7, stride: int = 4) -> WindowPlanes:
    """Fit a plane to the points of every ``k x k`` window.

    Args:
        points: ``[H, W, 3]`` camera-frame points.
        valid: ``[H, W]`` bool, points that exist.
        k: window side (pixels, >= 3). stride: spacing of window positions (pixels).

    Returns:
        ``WindowPlanes`` on the ``[(H-k)//stride+1, (W-k)//stride+1]`` grid of window positions.
    """
    if k < 3 or stride < 1:
        raise ValueError(f"need k >= 3 and stride >= 1, got k={k}, stride={stride}")
    p = np.asarray(points, dtype=np.float64)
    centre = p[valid].mean(axis=0) if valid.any() else np.zeros(3)
    p = np.where(valid[..., None], p - centre, 0.0)  # smaller moments: less cancellation in the box sums
    m = valid.astype(np.float64)
    n = _box_sum(m, k, stride)
    s1 = _box_sum(p, k, stride)  # [h,w,3]
    outer = p[..., :, None] * p[..., None, :]  # [H,W,3,3]
    s2 = _box_sum(outer.reshape(*p.shape[:2], 9), k, stride).reshape(*n.shape, 3, 3)
    full = n >= k * k - 0.5
    n_safe = np.maximum(n, 1.0)
    mean = s1 / n_safe[..., None]
    cov = s2 / n_safe[..., None, None] - mean[..., :, None] * mean[..., None, :]
    cov = np.where(full[..., None, None], cov, np.eye(3))
    w, v = np.linalg.eigh(cov)  # ascending eigenvalues
    normal = v[..., :, 0]
    normal = np.where((normal[..., 2] > 0)[..., None], -normal, normal)
    rms = np.sqrt(np.maximum(w[..., 0], 0.0))
    rms = np.where(full, rms, np.nan)
    return WindowPlanes(rms=rms, normal=normal, mean_z=np.where(full, mean[..., 2] + centre[2], np.nan))


@dataclass(frozen=True)
class SurfaceQuality:
    """Result of ``surface_quality``: ``plane_residual`` (relative, median over windows), ``normal_noise_deg``
    (mean angle, degrees), ``windows`` (number of GT-planar windows used) and ``planar_fraction`` (of all windows
    with complete GT)."""

    plane_residual: float
    normal_noise_deg: float
    windows: int
    planar_fraction: float


def surface_quality(
    pred_depth: np.ndarray,
    gt_depth: np.ndarray,
    valid: np.ndarray,
    intrinsics: Intrinsics,
    *,
    k: int = 7,
    stride: int = 4,
    planar_tol: float = 0.002,
) -> SurfaceQuality:
    """Plane-fit residual and normal noise of a predicted depth map on regions planar in the ground truth.

    Args:
        pred_depth: ``[H, W]`` predicted depth aligned to the ground truth (metres, same units as ``gt_depth``).
        gt_depth: ``[H, W]`` ground-truth depth (metres). valid: ``[H, W]`` bool, GT pixels that exist.
        intrinsics: pinhole intrinsics of this ``H x W`` image (pixels).
        k, stride: window side and spacing (pixels).
        planar_tol: a window is GT-planar when its GT RMS plane distance is below ``planar_tol`` times its
            mean depth (default 0.2 %).

    Returns:
        ``SurfaceQuality`` (NaN metrics and ``windows = 0`` when no window is planar, e.g. sparse LiDAR GT).
    """
    if pred_depth.shape != gt_depth.shape or valid.shape != gt_depth.shape:
        raise ValueError(
            f"pred {pred_depth.shape}, gt {gt_depth.shape} and valid {valid.shape} must have one shape"
        )
    ok = valid & np.isfinite(pred_depth) & (pred_depth > 0) & np.isfinite(gt_depth) & (gt_depth > 0)
    g = window_planes(unproject_depth(np.where(ok, gt_depth, 0.0), intrinsics), ok, k, stride)
    p = window_planes(unproject_depth(np.where(ok, pred_depth, 0.0), intrinsics), ok, k, stride)
    complete = np.isfinite(g.rms)
    planar = complete & (g.rms <= planar_tol * g.mean_z)
    nw = int(planar.sum())
    if nw == 0:
        return SurfaceQuality(float("nan"), float("nan"), 0, 0.0)
    rel = p.rms[planar] / g.mean_z[planar]
    cosang = np.clip(np.abs(np.sum(p.normal[planar] * g.normal[planar], axis=-1)), 0.0, 1.0)
    return SurfaceQuality(
        plane_residual=float(np.median(rel)),
        normal_noise_deg=float(np.degrees(np.arccos(cosang)).mean()),
        windows=nw,
        planar_fraction=nw / max(int(complete.sum()), 1),
    )
