"""Offscreen software rendering of point clouds (numpy z-buffer splatting; no display, no OpenGL).

``render_points`` projects camera-frame points into a virtual camera placed by ``orbit_view`` (a rotation about
a pivot in front of the original camera), keeps the nearest point per pixel (z-buffer) and splats each point as a
``point_size x point_size`` square. ``shade_by_normals`` multiplies colours by a Lambert term from per-pixel
normals so that geometric noise is visible (flat colours would hide it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["View", "orbit_view", "render_points", "grid_normals", "shade_by_normals"]


@dataclass(frozen=True)
class View:
    """A virtual pinhole camera: ``p_view = rotation @ (p - pivot) + pivot + offset`` for camera-frame points,
    projected with focal ``focal`` (pixels) into an image of ``size = (H, W)``."""

    rotation: np.ndarray
    pivot: np.ndarray
    offset: np.ndarray
    focal: float
    size: tuple[int, int]


def orbit_view(
    pivot_z: float,
    *,
    yaw_deg: float = 30.0,
    pitch_deg: float = -15.0,
    size: tuple[int, int] = (240, 320),
    fov_deg: float = 60.0,
    back_off: float = 0.35,
) -> View:
    """A view orbiting ``yaw_deg`` / ``pitch_deg`` about the point ``(0, 0, pivot_z)`` of the original camera
    frame, stepped back by ``back_off * pivot_z`` so that the cloud fits (same view for every model)."""
    if not pivot_z > 0:
        raise ValueError(f"pivot depth must be > 0, got {pivot_z}")
    a, b = math.radians(yaw_deg), math.radians(pitch_deg)
    ry = np.array([[math.cos(a), 0.0, math.sin(a)], [0.0, 1.0, 0.0], [-math.sin(a), 0.0, math.cos(a)]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, math.cos(b), -math.sin(b)], [0.0, math.sin(b), math.cos(b)]])
    focal = (size[1] / 2.0) / math.tan(math.radians(fov_deg) / 2.0)
    return View(rx @ ry, np.array([0.0, 0.0, pivot_z]), np.array([0.0, 0.0, back_off * pivot_z]), focal, size)


def render_points(
    points: np.ndarray,
    colors: np.ndarray,
    view: View,
    *,
    point_size: int = 2,
    background: tuple[int, int, int] = (255, 255, 255),
) -> np.ndarray:
    """Render ``[N, 3]`` camera-frame points with ``[N, 3]`` uint8 colours from ``view``.

    Returns:
        uint8 ``[H, W, 3]`` image (``view.size``); the nearest point wins each pixel.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    col = np.asarray(colors, dtype=np.uint8).reshape(-1, 3)
    if len(pts) != len(col):
        raise ValueError(f"{len(pts)} points but {len(col)} colours")
    h, w = view.size
    img = np.empty((h, w, 3), np.uint8)
    img[:] = np.asarray(background, np.uint8)
    ok = np.isfinite(pts).all(axis=1)
    q = (pts[ok] - view.pivot) @ view.rotation.T + view.pivot + view.offset
    c = col[ok]
    front = q[:, 2] > 1e-6
    q, c = q[front], c[front]
    if len(q) == 0:
        return img
    u = q[:, 0] / q[:, 2] * view.focal + (w - 1) / 2.0
    v = q[:, 1] / q[:, 2] * view.focal + (h - 1) / 2.0
    z = q[:, 2]
    ui, vi = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
    zbuf = np.full(h * w, np.inf)
    lo = -(point_size // 2)
    offsets = [(dx, dy) for dx in range(lo, lo + point_size) for dy in range(lo, lo + point_size)]
    splats = []
    for dx, dy in offsets:
        uu, vv = ui + dx, vi + dy
        inside = (uu >= 0) & (uu < w) & (vv >= 0) & (vv < h)
        idx = vv[inside] * w + uu[inside]
        np.minimum.at(zbuf, idx, z[inside])
        splats.append((idx, inside))
    flat = img.reshape(-1, 3)
    for idx, inside in splats:
        win = z[inside] <= zbuf[idx]
        flat[idx[win]] = c[inside][win]
    return img


def grid_normals(points: np.ndarray) -> np.ndarray:
    """Per-pixel unit normals ``[H, W, 3]`` of an organised point grid ``[H, W, 3]`` (central differences;
    facing the camera; NaN where undefined)."""
    p = np.asarray(points, dtype=np.float64)
    du = np.zeros_like(p)
    dv = np.zeros_like(p)
    du[:, 1:-1] = p[:, 2:] - p[:, :-2]
    dv[1:-1] = p[2:] - p[:-2]
    n = np.cross(du, dv)
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        n = n / norm
    n = np.where((n[..., 2:3] > 0), -n, n)
    return np.where(norm > 0, n, np.nan)


def shade_by_normals(
    colors: np.ndarray, normals: np.ndarray, light: tuple[float, float, float] = (-0.4, -0.5, -0.77)
) -> np.ndarray:
    """Multiply uint8 ``colors [..., 3]`` by ``0.35 + 0.65 max(0, n . l)`` (``l`` towards the light, camera
    frame); NaN normals keep the ambient term only. Returns uint8."""
    lv = np.asarray(light, dtype=np.float64)
    lv = lv / np.linalg.norm(lv)
    lam = np.clip(np.nan_to_num(np.sum(normals * lv, axis=-1), nan=0.0), 0.0, 1.0)
    out = np.asarray(colors, dtype=np.float64) * (0.35 + 0.65 * lam)[..., None]
    return np.clip(out, 0, 255).astype(np.uint8)
