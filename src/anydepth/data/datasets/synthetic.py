"""``synthetic``: procedural RGB-D scenes ray-cast exactly per pixel, generated on the fly.

Each sample is a perspective view (pinhole camera with known intrinsics, random field of view, height, pitch,
yaw and roll) of a scene built from textured primitives:

* **indoor**: a closed room (floor, ceiling, four walls) with boxes and spheres standing on the floor or floating;
* **outdoor**: a ground plane up to a horizon distance (60 m), near objects, a few large distant blocks, and sky.

Textures (checker, stripes, multi-octave value noise, plain) are defined in metres on the surfaces, so their
apparent size shrinks with distance; they are low-pass filtered by the pixel footprint to avoid aliasing.
Shading is Lambertian from a directional light with ambient light and cast shadows of the objects; outdoor
scenes add aerial haze, indoor scenes a mild distance falloff. Depth must therefore be inferred from perspective,
occlusion, texture gradients, shading and haze, as in real images.

Depth is exact planar depth z in metres (the ray parameter along camera rays ``((u-cx)/fx, (v-cy)/fy, 1)``); every
pixel is valid except sky, which follows ``sky_policy`` (``invalid`` by default, or ``far_plane`` = ``max_depth``).
Everything is deterministic in ``(seed, index)`` (numpy ``SeedSequence([seed, index])``).

Building blocks (``Camera``, ``Material``, ``Plane``, ``Sphere``, ``Box``, ``Scene``, ``render_scene``) are public
so tests can render known scenes, e.g. a fronto-parallel plane at z = 5 has depth 5 at every pixel.
``write_synthetic_dataset`` dumps samples in the ``folder`` format (PNG RGB, 16-bit PNG depth in mm, list file,
intrinsics JSON, ``dataset.json``) for the command-line tools.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from anydepth.atomic import json_text
from anydepth.data import io
from anydepth.data.datasets.base import DepthDataset
from anydepth.registry import DATASETS
from anydepth.types import DepthSpace, Intrinsics, Sample

__all__ = [
    "Camera",
    "Material",
    "Plane",
    "Sphere",
    "Box",
    "Scene",
    "Render",
    "render_scene",
    "sample_scene",
    "SyntheticDataset",
    "write_synthetic_dataset",
]

_EPS = 1e-4
PATTERNS: tuple[str, ...] = ("plain", "checker", "stripes", "noise")
SCENE_TYPES: tuple[str, ...] = ("indoor", "outdoor")


# ---------------------------------------------------------------------------------------------------------------
# Scene description
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Camera:
    """Pinhole camera. World frame: x right, y down, z forward (the camera frame when ``rotation`` is identity).

    Attributes:
        fx, fy, cx, cy: intrinsics in pixels (pixel-index convention: pixel u's centre is at u).
        rotation: 3x3 camera-to-world rotation.
        position: camera centre in world coordinates (metres).
    """

    fx: float
    fy: float
    cx: float
    cy: float
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    position: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def intrinsics(self) -> Intrinsics:
        return Intrinsics(fx=float(self.fx), fy=float(self.fy), cx=float(self.cx), cy=float(self.cy))


@dataclass
class Material:
    """Surface appearance: ``pattern`` mixes ``color_b`` (value 0) and ``color_a`` (value 1) with period ``scale``
    metres. Colours are RGB in [0, 1]."""

    color_a: tuple[float, float, float] = (0.8, 0.8, 0.8)
    color_b: tuple[float, float, float] = (0.3, 0.3, 0.3)
    pattern: str = "plain"
    scale: float = 1.0
    seed: int = 0


@dataclass
class Plane:
    """Infinite plane ``{x : normal . x = offset}``; texture axes ``tangent_u``/``tangent_v`` (unit vectors).
    ``max_distance`` > 0 limits hits to that ray distance (a ground plane ending at the horizon)."""

    normal: np.ndarray
    offset: float
    tangent_u: np.ndarray
    tangent_v: np.ndarray
    material: Material = field(default_factory=Material)
    max_distance: float = 0.0


@dataclass
class Sphere:
    """Sphere with ``center`` (metres) and ``radius`` (metres)."""

    center: np.ndarray
    radius: float
    material: Material = field(default_factory=Material)


@dataclass
class Box:
    """Box with ``center``, half extents ``half`` (metres) and rotation ``yaw`` (radians) about the vertical axis."""

    center: np.ndarray
    half: np.ndarray
    yaw: float = 0.0
    material: Material = field(default_factory=Material)


@dataclass
class Scene:
    """A camera, primitives and lighting.

    Attributes:
        light_dir: unit vector pointing towards the (directional) light, world frame (y down: "up" is -y).
        ambient: ambient light fraction in [0, 1].
        sky: rays hitting nothing show sky (else black).
        sky_horizon, sky_zenith: sky colours; ``haze`` > 0 blends distant surfaces into ``sky_horizon`` with that
            e-folding distance (metres); ``falloff`` > 0 darkens with distance (indoor light falloff).
        kind: free label ("indoor", "outdoor", "custom").
    """

    camera: Camera
    planes: list[Plane] = field(default_factory=list)
    spheres: list[Sphere] = field(default_factory=list)
    boxes: list[Box] = field(default_factory=list)
    light_dir: np.ndarray = field(
        default_factory=lambda: np.array([0.3, -0.8, -0.5]) / np.linalg.norm([0.3, -0.8, -0.5])
    )
    ambient: float = 0.35
    shadows: bool = True
    sky: bool = True
    sky_horizon: tuple[float, float, float] = (0.78, 0.84, 0.92)
    sky_zenith: tuple[float, float, float] = (0.32, 0.52, 0.84)
    haze: float = 0.0
    falloff: float = 0.0
    kind: str = "custom"


@dataclass
class Render:
    """Result of ``render_scene``: ``rgb`` uint8 ``[H,W,3]``, ``depth`` float32 ``[H,W]`` planar metres (0 on sky),
    ``sky`` bool ``[H,W]``, ``normal`` float32 ``[H,W,3]`` (world frame, facing the camera), ``intrinsics`` and
    the scene ``kind``."""

    rgb: np.ndarray
    depth: np.ndarray
    sky: np.ndarray
    normal: np.ndarray
    intrinsics: Intrinsics
    kind: str = "custom"


# ---------------------------------------------------------------------------------------------------------------
# Ray casting, vectorised over pixels in structure-of-arrays form: a vector field is a tuple of three 1-D arrays
# (x, y, z) and every transform has scalar coefficients. (Small [N,3] @ [3,3] matmuls are far slower in numpy.)
# ---------------------------------------------------------------------------------------------------------------

Vec = tuple[np.ndarray, np.ndarray, np.ndarray]


def _dot(a: Vec, b: Sequence[float] | np.ndarray) -> np.ndarray:
    return a[0] * float(b[0]) + a[1] * float(b[1]) + a[2] * float(b[2])


def _take(a: Vec, idx: np.ndarray) -> Vec:
    return a[0][idx], a[1][idx], a[2][idx]


def _yaw_matrix(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _to_local(a: Vec, ry: np.ndarray) -> Vec:
    """World -> box-local coordinates (``ry`` is local -> world): component j is ``a . ry[:, j]``."""
    return _dot(a, ry[:, 0]), _dot(a, ry[:, 1]), _dot(a, ry[:, 2])


def _intersect_plane(o: np.ndarray, d: Vec, dlen: np.ndarray, pl: Plane) -> np.ndarray:
    nd = _dot(d, pl.normal)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (pl.offset - float(np.dot(pl.normal, o))) / nd
    ok = np.isfinite(t) & (t > _EPS)
    if pl.max_distance > 0:
        ok &= t * dlen <= pl.max_distance
    return np.where(ok, t, np.inf)


def _intersect_sphere(o: np.ndarray, d: Vec, dlen2: np.ndarray, sp: Sphere) -> np.ndarray:
    oc = o - np.asarray(sp.center, dtype=np.float64)
    b = _dot(d, oc)
    c = float(oc @ oc) - sp.radius**2
    disc = b * b - dlen2 * c
    ok = disc >= 0
    sq = np.sqrt(np.where(ok, disc, 0.0))
    t0 = (-b - sq) / dlen2
    t1 = (-b + sq) / dlen2
    t = np.where(t0 > _EPS, t0, np.where(t1 > _EPS, t1, np.inf))
    return np.where(ok, t, np.inf)


def _intersect_box(o: Vec | np.ndarray, d: Vec, bx: Box) -> tuple[np.ndarray, np.ndarray]:
    """Ray parameter of the hit (inf if none) and the index (0-2) of the entered slab axis.

    ``o`` is one origin (array of 3) or one origin per ray (``Vec``).
    """
    ry = _yaw_matrix(bx.yaw)
    c = np.asarray(bx.center, dtype=np.float64)
    if isinstance(o, np.ndarray):
        ol: Sequence[Any] = list(ry.T @ (o - c))
    else:
        ol = _to_local((o[0] - c[0], o[1] - c[1], o[2] - c[2]), ry)
    dl = _to_local(d, ry)
    tmin = np.full(d[0].shape, -np.inf)
    tmax = np.full(d[0].shape, np.inf)
    axis = np.zeros(d[0].shape, dtype=np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        for j in range(3):
            h = float(bx.half[j])
            inv = 1.0 / dl[j]
            t1 = (-h - ol[j]) * inv
            t2 = (h - ol[j]) * inv
            tn = np.nan_to_num(np.minimum(t1, t2), nan=-np.inf)
            tf = np.nan_to_num(np.maximum(t1, t2), nan=np.inf)
            enter = tn > tmin
            axis = np.where(enter, j, axis)
            tmin = np.maximum(tmin, tn)
            tmax = np.minimum(tmax, tf)
    hit = (tmax >= tmin) & (tmax > _EPS)
    t = np.where(tmin > _EPS, tmin, tmax)
    return np.where(hit, t, np.inf), axis


def _smooth(x: np.ndarray) -> np.ndarray:
    return x * x * (3.0 - 2.0 * x)


def _value_noise(table: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    n = table.shape[0]
    xf, yf = np.floor(x), np.floor(y)
    fx, fy = _smooth(x - xf), _smooth(y - yf)
    xi, yi = xf.astype(np.int64) % n, yf.astype(np.int64) % n
    x1, y1 = (xi + 1) % n, (yi + 1) % n
    a = table[yi, xi] * (1 - fx) + table[yi, x1] * fx
    b = table[y1, xi] * (1 - fx) + table[y1, x1] * fx
    return a * (1 - fy) + b * fy


def _contrast(footprint: np.ndarray, period: float) -> np.ndarray:
    """Pattern contrast left after averaging over a pixel footprint: 1 below period/4, 0 from period/2."""
    return np.clip((0.5 * period - footprint) / (0.25 * period), 0.0, 1.0)


def _pattern(mat: Material, u: np.ndarray, v: np.ndarray, footprint: np.ndarray) -> np.ndarray:
    """Pattern value in [0, 1] at surface coordinates (u, v) metres, filtered by ``footprint`` metres/pixel."""
    p = max(float(mat.scale), 1e-3)
    if mat.pattern == "plain":
        return np.ones(u.shape)
    if mat.pattern == "checker":
        s = ((np.floor(u / p) + np.floor(v / p)) % 2).astype(np.float64)
        return 0.5 + (s - 0.5) * _contrast(footprint, 2 * p)
    if mat.pattern == "stripes":
        s = 0.5 + 0.5 * np.tanh(4.0 * np.sin(2 * math.pi * u / p))
        return 0.5 + (s - 0.5) * _contrast(footprint, p)
    if mat.pattern == "noise":
        table = np.random.default_rng(mat.seed).random((64, 64))
        out = np.full(u.shape, 0.5)
        amp = 0.5
        for octave in range(4):
            period = p / (2**octave)
            c = _contrast(footprint, period)
            if not c.any():
                break
            n = _value_noise(table, u / period + 17.0 * octave, v / period + 31.0 * octave)
            out += amp * (n - 0.5) * 2.0 * c
            amp *= 0.5
        return np.clip(out, 0.0, 1.0)
    raise ValueError(f"unknown pattern {mat.pattern!r}; expected one of {PATTERNS}")


def _bounding_sphere(pr: Sphere | Box) -> tuple[np.ndarray, float]:
    if isinstance(pr, Sphere):
        return np.asarray(pr.center, dtype=np.float64), float(pr.radius)
    return np.asarray(pr.center, dtype=np.float64), float(np.linalg.norm(pr.half))


def _screen_rect(cam: Camera, pr: Sphere | Box, height: int, width: int) -> tuple[int, int, int, int] | None:
    """Conservative pixel rectangle ``(v0, v1, u0, u1)`` (half-open) covering the primitive's bounding sphere.

    Returns the full image when the bounding sphere reaches behind the camera, None when it is off-screen.
    """
    c, r = _bounding_sphere(pr)
    cc = np.asarray(cam.rotation, dtype=np.float64).T @ (c - np.asarray(cam.position, dtype=np.float64))
    r *= 1.001
    if cc[2] - r <= 1e-3:
        return 0, height, 0, width
    zs = (cc[2] - r, cc[2] + r)
    xs = [(cc[0] + sx * r) / z for sx in (-1, 1) for z in zs]
    ys = [(cc[1] + sy * r) / z for sy in (-1, 1) for z in zs]
    u0 = max(0, math.floor(cam.cx + cam.fx * min(xs)))
    u1 = min(width, math.ceil(cam.cx + cam.fx * max(xs)) + 1)
    v0 = max(0, math.floor(cam.cy + cam.fy * min(ys)))
    v1 = min(height, math.ceil(cam.cy + cam.fy * max(ys)) + 1)
    if u0 >= u1 or v0 >= v1:
        return None
    return v0, v1, u0, u1


def _occluded(p: Vec, direction: np.ndarray, scene: Scene) -> np.ndarray:
    """Whether rays ``p + s * direction`` (s > 0, ``direction`` a unit 3-vector) hit any sphere or box."""
    hit = np.zeros(p[0].shape, dtype=bool)
    objects: list[Sphere | Box] = [*scene.spheres, *scene.boxes]
    for pr in objects:
        c, r = _bounding_sphere(pr)
        oc = (p[0] - c[0], p[1] - c[1], p[2] - c[2])
        b = _dot(oc, direction)
        dist2 = oc[0] ** 2 + oc[1] ** 2 + oc[2] ** 2 - b * b
        cand = np.flatnonzero((dist2 <= r * r * 1.002) & (b < r) & ~hit)  # passes near, object not behind
        if cand.size == 0:
            continue
        q = _take(p, cand)
        if isinstance(pr, Sphere):
            oq = (q[0] - c[0], q[1] - c[1], q[2] - c[2])
            bq = _dot(oq, direction)
            cq = oq[0] ** 2 + oq[1] ** 2 + oq[2] ** 2 - pr.radius**2
            disc = bq * bq - cq
            h = (disc >= 0) & ((-bq - np.sqrt(np.maximum(disc, 0.0))) > _EPS)
        else:
            ones = np.ones(cand.size)
            t, _ = _intersect_box(q, (ones * direction[0], ones * direction[1], ones * direction[2]), pr)
            h = np.isfinite(t)
        hit[cand[h]] = True
    return hit


def render_scene(scene: Scene, height: int, width: int) -> Render:
    """Ray-cast ``scene`` at ``height`` x ``width`` pixels (one ray through each pixel centre).

    The ray of pixel (u, v) has camera-frame direction ``((u - cx)/fx, (v - cy)/fy, 1)``, so its hit parameter
    is the planar depth z.

    Returns:
        ``Render`` with uint8 RGB, planar depth in metres (0 where sky), sky mask, normals and intrinsics.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"render size must be positive, got {height}x{width}")
    cam = scene.camera
    rot = np.asarray(cam.rotation, dtype=np.float64)
    o = np.asarray(cam.position, dtype=np.float64)
    xc = np.tile((np.arange(width, dtype=np.float64) - cam.cx) / cam.fx, height)
    yc = np.repeat((np.arange(height, dtype=np.float64) - cam.cy) / cam.fy, width)
    d: Vec = tuple(rot[i, 0] * xc + rot[i, 1] * yc + rot[i, 2] for i in range(3))  # type: ignore[assignment]
    n_rays = xc.size
    dlen2 = xc * xc + yc * yc + 1.0  # rotation keeps lengths
    dlen = np.sqrt(dlen2)

    prims: list[Plane | Sphere | Box] = [*scene.planes, *scene.spheres, *scene.boxes]
    t_best = np.full(n_rays, np.inf)
    id_best = np.full(n_rays, -1, dtype=np.int64)
    box_axis = np.zeros(n_rays, dtype=np.int64)
    pix = np.arange(n_rays).reshape(height, width)
    for k, pr in enumerate(prims):
        if isinstance(pr, Plane):
            t = _intersect_plane(o, d, dlen, pr)
            closer = t < t_best
            t_best[closer] = t[closer]
            id_best[closer] = k
            continue
        rect = _screen_rect(cam, pr, height, width)
        if rect is None:
            continue
        idx = pix[rect[0] : rect[1], rect[2] : rect[3]].ravel()
        if isinstance(pr, Sphere):
            t = _intersect_sphere(o, _take(d, idx), dlen2[idx], pr)
        else:
            t, ax = _intersect_box(o, _take(d, idx), pr)
        closer = t < t_best[idx]
        sel = idx[closer]
        t_best[sel] = t[closer]
        id_best[sel] = k
        if isinstance(pr, Box):
            box_axis[sel] = ax[closer]

    sky = id_best < 0
    hit = ~sky
    nrm = np.zeros((3, n_rays))
    albedo = np.zeros((n_rays, 3))
    dist = np.where(hit, t_best * dlen, 0.0)
    f_mean = 0.5 * (cam.fx + cam.fy)
    members = [np.flatnonzero(id_best == k) for k in range(len(prims))]
    for k, pr in enumerate(prims):
        m = members[k]
        if m.size == 0:
            continue
        dm = _take(d, m)
        tm = t_best[m]
        p = (o[0] + dm[0] * tm, o[1] + dm[1] * tm, o[2] + dm[2] * tm)
        if isinstance(pr, Plane):
            n: Vec = tuple(np.full(m.size, float(pr.normal[j])) for j in range(3))  # type: ignore[assignment]
            u, v = _dot(p, pr.tangent_u), _dot(p, pr.tangent_v)
        elif isinstance(pr, Sphere):
            n = tuple((p[j] - float(pr.center[j])) / pr.radius for j in range(3))  # type: ignore[assignment]
            u = np.arctan2(n[0], n[2]) * pr.radius
            v = np.arcsin(np.clip(n[1], -1.0, 1.0)) * pr.radius
        else:
            ry = _yaw_matrix(pr.yaw)
            c = pr.center
            pl = _to_local((p[0] - c[0], p[1] - c[1], p[2] - c[2]), ry)
            dl = _to_local(dm, ry)
            ax = box_axis[m]
            nl = [np.where(ax == j, -np.sign(dl[j]), 0.0) for j in range(3)]
            n = tuple(ry[i, 0] * nl[0] + ry[i, 1] * nl[1] + ry[i, 2] * nl[2] for i in range(3))  # type: ignore[assignment]
            u = np.where(ax == 0, pl[2], pl[0])
            v = np.where(ax == 1, pl[2], pl[1])
        ndot = (n[0] * dm[0] + n[1] * dm[1] + n[2] * dm[2]) / dlen[m]
        sign = np.where(ndot > 0, -1.0, 1.0)  # face the camera
        for j in range(3):
            nrm[j, m] = n[j] * sign
        footprint = dist[m] / f_mean / np.maximum(np.abs(ndot), 0.08)
        s = _pattern(pr.material, u, v, footprint)[:, None]
        a, b = (
            np.asarray(pr.material.color_a, dtype=np.float64),
            np.asarray(pr.material.color_b, dtype=np.float64),
        )
        albedo[m] = b[None] + (a - b)[None] * s

    light = np.asarray(scene.light_dir, dtype=np.float64)
    light = light / np.linalg.norm(light)
    diffuse = np.clip(nrm[0] * light[0] + nrm[1] * light[1] + nrm[2] * light[2], 0.0, None)
    if scene.shadows and (scene.spheres or scene.boxes):
        lit = np.flatnonzero(diffuse > 0)
        if lit.size:
            tl = t_best[lit]
            pts = tuple(o[j] + d[j][lit] * tl + nrm[j, lit] * 1e-3 for j in range(3))
            shadowed = _occluded(pts, light, scene)  # type: ignore[arg-type]
            diffuse[lit[shadowed]] *= 0.15
    shade = scene.ambient + (1.0 - scene.ambient) * diffuse
    if scene.falloff > 0:
        shade *= np.exp(-dist / scene.falloff)
    color = albedo * shade[:, None]
    horizon, zenith = np.asarray(scene.sky_horizon), np.asarray(scene.sky_zenith)
    fog = np.zeros(n_rays)
    if scene.haze > 0:
        fog = 1.0 - np.exp(-dist / scene.haze)
    # Ground planes that end at the horizon fade into the haze colour over their last 40 %.
    for k, pr in enumerate(prims):
        if isinstance(pr, Plane) and pr.max_distance > 0 and members[k].size:
            m = members[k]
            fade = np.clip((dist[m] - 0.6 * pr.max_distance) / (0.4 * pr.max_distance), 0.0, 1.0)
            fog[m] = 1.0 - (1.0 - fog[m]) * (1.0 - fade)
    if scene.haze > 0 or any(isinstance(pr, Plane) and pr.max_distance > 0 for pr in prims):
        color = color * (1.0 - fog)[:, None] + horizon[None] * fog[:, None]
    if scene.sky and sky.any():
        # Sky gradient by elevation (y down: up = -y), with a sun glow.
        sk = np.flatnonzero(sky)
        ds_ = tuple(d[j][sk] / dlen[sk] for j in range(3))
        w = np.power(np.clip(-ds_[1], 0.0, 1.0), 0.6)[:, None]
        sky_col = horizon[None] * (1 - w) + zenith[None] * w
        sky_col += 0.25 * np.power(np.clip(_dot(ds_, light), 0.0, 1.0), 64)[:, None]  # type: ignore[arg-type]
        color[sk] = sky_col
    rgb = np.clip(np.round(color * 255.0), 0, 255).astype(np.uint8).reshape(height, width, 3)
    depth = np.where(hit, t_best, 0.0).astype(np.float32).reshape(height, width)
    return Render(
        rgb=rgb,
        depth=depth,
        sky=sky.reshape(height, width),
        normal=np.ascontiguousarray(nrm.T).astype(np.float32).reshape(height, width, 3),
        intrinsics=cam.intrinsics(),
        kind=scene.kind,
    )


# ---------------------------------------------------------------------------------------------------------------
# Random scenes
# ---------------------------------------------------------------------------------------------------------------


def _rot_x(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _rot_z(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _hsv(h: float, s: float, v: float) -> tuple[float, float, float]:
    i = int(h * 6.0) % 6
    f = h * 6.0 - math.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    r, g, b = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return (r, g, b)


def _material(
    rng: np.random.Generator, patterns: Sequence[str], scale: tuple[float, float], **hsv: Any
) -> Material:
    h = float(rng.uniform(*hsv.get("hue", (0.0, 1.0)))) % 1.0
    s = float(rng.uniform(*hsv.get("sat", (0.15, 0.7))))
    v = float(rng.uniform(*hsv.get("val", (0.45, 0.95))))
    a = _hsv(h, s, v)
    if rng.random() < 0.5:  # same hue, darker
        b = _hsv(h, min(1.0, s * 1.1), v * float(rng.uniform(0.35, 0.7)))
    else:  # another hue
        b = _hsv((h + float(rng.uniform(0.1, 0.5))) % 1.0, s * float(rng.uniform(0.5, 1.0)), v * 0.75)
    return Material(
        color_a=a,
        color_b=b,
        pattern=str(rng.choice(list(patterns))),
        scale=float(math.exp(rng.uniform(math.log(scale[0]), math.log(scale[1])))),
        seed=int(rng.integers(0, 2**31 - 1)),
    )


def _plane(normal: Sequence[float], offset: float, tu: Sequence[float], tv: Sequence[float], mat: Material,
           max_distance: float = 0.0) -> Plane:  # fmt: skip
    return Plane(np.asarray(normal, float), float(offset), np.asarray(tu, float), np.asarray(tv, float), mat,
                 max_distance)  # fmt: skip


def _objects(
    rng: np.random.Generator, n: int, z_range: tuple[float, float], ground_y: float, tan_half: float,
    x_limits: tuple[float, float], ceiling_y: float | None, size_scale: float = 1.0,
) -> tuple[list[Sphere], list[Box]]:  # fmt: skip
    spheres: list[Sphere] = []
    boxes: list[Box] = []
    obj_patterns = ("plain", "checker", "stripes", "noise", "noise")
    for _ in range(n):
        z = float(rng.uniform(*z_range))
        half_w = z * tan_half * 0.85
        x = float(np.clip(rng.uniform(-half_w, half_w), x_limits[0], x_limits[1]))
        mat = _material(rng, obj_patterns, (0.08, 0.6), sat=(0.25, 0.85))
        if rng.random() < 0.5:
            hx, hz = rng.uniform(0.2, 0.8, size=2) * size_scale
            hy = float(rng.uniform(0.2, 1.0)) * size_scale
            if ceiling_y is not None:
                hy = min(hy, 0.45 * (ground_y - ceiling_y))
            x = float(np.clip(x, x_limits[0] + max(hx, hz), x_limits[1] - max(hx, hz)))
            center = np.array([x, ground_y - hy, z])
            boxes.append(Box(center, np.array([hx, hy, hz]), float(rng.uniform(0, math.pi)), mat))
        else:
            r = float(rng.uniform(0.2, 0.7)) * size_scale
            lift = float(rng.uniform(0.3, 1.0)) if rng.random() < 0.3 else 0.0
            y = ground_y - r - lift
            if ceiling_y is not None:
                y = max(y, ceiling_y + r + 0.05)
            x = float(np.clip(x, x_limits[0] + r, x_limits[1] - r))
            spheres.append(Sphere(np.array([x, y, z]), r, mat))
    return spheres, boxes


def sample_scene(
    rng: np.random.Generator,
    size: tuple[int, int],
    *,
    kind: str | None = None,
    fov_deg: tuple[float, float] = (50.0, 80.0),
    num_objects: tuple[int, int] = (2, 6),
    scene_types: Sequence[str] = SCENE_TYPES,
) -> Scene:
    """Draw a random indoor or outdoor scene for an image of ``size = (H, W)`` pixels.

    Args:
        rng: numpy generator (all randomness comes from it).
        size: image size (H, W); the horizontal field of view is drawn from ``fov_deg`` (degrees).
        kind: "indoor" or "outdoor"; drawn from ``scene_types`` if None.
        num_objects: inclusive range of the number of boxes + spheres.
    """
    h_img, w_img = size
    kind = kind if kind is not None else str(rng.choice(list(scene_types)))
    if kind not in SCENE_TYPES:
        raise ValueError(f"unknown scene type {kind!r}; expected one of {SCENE_TYPES}")
    fov = math.radians(float(rng.uniform(*fov_deg)))
    f = (w_img / 2.0) / math.tan(fov / 2.0)
    tan_half = math.tan(fov / 2.0)
    pitch = math.radians(float(rng.uniform(-18.0, 4.0)))  # negative: looking down
    roll = math.radians(float(rng.uniform(-3.0, 3.0)))
    yaw = math.radians(float(rng.uniform(-15.0, 15.0)))
    rot = _yaw_matrix(yaw) @ _rot_x(pitch) @ _rot_z(roll)  # forward = (0, -sin(pitch), cos(pitch))
    cam = Camera(fx=f, fy=f, cx=(w_img - 1) / 2.0, cy=(h_img - 1) / 2.0, rotation=rot)
    n_obj = int(rng.integers(num_objects[0], num_objects[1] + 1))
    elev = math.radians(float(rng.uniform(25.0, 70.0)))
    azim = float(rng.uniform(0, 2 * math.pi))
    light = np.array([math.cos(elev) * math.sin(azim), -math.sin(elev), math.cos(elev) * math.cos(azim)])

    if kind == "indoor":
        cam_h = float(rng.uniform(1.2, 1.8))
        room_h = float(rng.uniform(2.5, 3.6))
        room_w = float(rng.uniform(4.0, 10.0))
        room_d = float(rng.uniform(5.0, 14.0))
        x0 = float(rng.uniform(-0.3, 0.3)) * room_w
        xl, xr = -(room_w / 2 + x0), room_w / 2 - x0
        ceil_y = cam_h - room_h
        wall = _material(
            rng, ("plain", "noise", "stripes", "plain"), (0.15, 0.8), sat=(0.05, 0.4), val=(0.6, 0.95)
        )
        floor = _material(rng, ("checker", "stripes", "noise"), (0.25, 1.0), sat=(0.1, 0.6), val=(0.4, 0.85))
        ceiling = _material(rng, ("plain", "noise"), (0.5, 2.0), sat=(0.0, 0.1), val=(0.8, 0.95))
        back = _material(rng, ("plain", "noise", "stripes", "checker"), (0.2, 0.8), sat=(0.05, 0.5))
        planes = [
            _plane((0, -1, 0), -cam_h, (1, 0, 0), (0, 0, 1), floor),  # floor y = cam_h (normal up)
            _plane((0, 1, 0), ceil_y, (1, 0, 0), (0, 0, 1), ceiling),
            _plane((1, 0, 0), xl, (0, 0, 1), (0, 1, 0), wall),
            _plane((-1, 0, 0), -xr, (0, 0, 1), (0, 1, 0), wall),
            _plane((0, 0, -1), -room_d, (1, 0, 0), (0, 1, 0), back),
            _plane((0, 0, 1), -0.5, (1, 0, 0), (0, 1, 0), wall),
        ]
        spheres, boxes = _objects(
            rng, n_obj, (1.5, room_d - 0.6), cam_h, tan_half, (xl + 0.1, xr - 0.1), ceil_y
        )
        return Scene(cam, planes, spheres, boxes, light_dir=light, ambient=float(rng.uniform(0.35, 0.5)),
                     sky=False, falloff=float(rng.uniform(15.0, 40.0)), kind="indoor")  # fmt: skip

    cam_h = float(rng.uniform(1.2, 2.5))
    ground = _material(rng, ("noise", "checker", "noise"), (0.5, 3.0), hue=(0.05, 0.4), sat=(0.2, 0.6),
                       val=(0.35, 0.7))  # fmt: skip
    horizon_dist = 60.0
    planes = [_plane((0, -1, 0), -cam_h, (1, 0, 0), (0, 0, 1), ground, max_distance=horizon_dist)]
    spheres, boxes = _objects(rng, n_obj, (2.5, 18.0), cam_h, tan_half, (-40.0, 40.0), None, size_scale=1.6)
    for _ in range(int(rng.integers(1, 5))):  # distant buildings
        z = float(rng.uniform(14.0, 45.0))
        hx, hz = rng.uniform(2.0, 6.0, size=2)
        hy = float(rng.uniform(3.0, 12.0))
        x = float(rng.uniform(-1, 1)) * z * tan_half
        mat = _material(rng, ("stripes", "checker", "noise", "plain"), (0.6, 2.5), sat=(0.05, 0.35))
        boxes.append(
            Box(np.array([x, cam_h - hy, z]), np.array([hx, hy, hz]), float(rng.uniform(0, math.pi)), mat)
        )
    hue = float(rng.uniform(0.55, 0.62))
    return Scene(
        cam, planes, spheres, boxes, light_dir=light, ambient=float(rng.uniform(0.3, 0.45)), sky=True,
        sky_horizon=_hsv(hue, float(rng.uniform(0.05, 0.2)), float(rng.uniform(0.85, 0.97))),
        sky_zenith=_hsv(hue, float(rng.uniform(0.4, 0.65)), float(rng.uniform(0.7, 0.9))),
        haze=float(rng.uniform(60.0, 160.0)), kind="outdoor",
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------------------------------------------


def _pair(v: Any, name: str, typ: type) -> tuple[Any, Any]:
    if isinstance(v, int | float) and not isinstance(v, bool):
        v = (v, v)
    if not (isinstance(v, Sequence) and len(v) == 2):
        raise ValueError(f"synthetic: {name} must be a number or a (min, max) pair, got {v!r}")
    a, b = typ(v[0]), typ(v[1])
    if a > b:
        raise ValueError(f"synthetic: {name} must have min <= max, got {v!r}")
    return a, b


@DATASETS.register("synthetic")
class SyntheticDataset(DepthDataset):
    """Procedural RGB-D scenes (see the module docstring); deterministic in ``(seed, index)``.

    Args:
        root: unused; must be None (the data is generated).
        split_file, pairs: must be None.
        **options:
            length (int, 64): number of samples.
            size ((H, W), (256, 256)): image size in pixels (an int means square).
            seed (int, 0): base seed.
            fov_deg ((min, max), (50, 80)): horizontal field of view range, degrees.
            num_objects ((min, max), (2, 6)): boxes + spheres per scene.
            scene_types (list, ["indoor", "outdoor"]): scene kinds to draw from.
            sky_policy ("invalid"): ``invalid`` (sky masked) or ``far_plane`` (sky depth = max_depth, valid).
            min_depth / max_depth (0, 100): open valid interval in metres.

    Samples are metric planar depth in metres (``DEPTH_METRIC``); intrinsics are exact.
    """

    name: ClassVar[str] = "synthetic"
    depth_space: ClassVar[DepthSpace] = DepthSpace.DEPTH_METRIC
    depth_unit: ClassVar[str] = "m"
    OPTIONS: ClassVar[dict[str, Any]] = {
        "length": 64,
        "size": (256, 256),
        "seed": 0,
        "fov_deg": (50.0, 80.0),
        "num_objects": (2, 6),
        "scene_types": SCENE_TYPES,
        "sky_policy": "invalid",
        "min_depth": 0.0,
        "max_depth": 100.0,
    }

    @classmethod
    def options(cls) -> dict[str, Any]:
        """All options with their defaults."""
        return dict(cls.OPTIONS)

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        split_file: str | os.PathLike[str] | None = None,
        pairs: Sequence[tuple[str, str]] | None = None,
        **options: Any,
    ) -> None:
        if root is not None or split_file is not None or pairs is not None:
            raise ValueError("synthetic: the data is generated; root, split_file and pairs must not be given")
        unknown = sorted(set(options) - set(self.OPTIONS))
        if unknown:
            raise ValueError(
                f"synthetic: unknown option(s) {unknown}; valid options: {', '.join(self.OPTIONS)}"
            )
        o = {**self.OPTIONS, **options}
        self.length = int(o["length"])
        if self.length < 0:
            raise ValueError(f"synthetic: length must be >= 0, got {o['length']!r}")
        size = o["size"]
        size = (size, size) if isinstance(size, int) else tuple(size)
        if len(size) != 2 or min(int(size[0]), int(size[1])) < 1:
            raise ValueError(f"synthetic: size must be (H, W) with positive entries, got {o['size']!r}")
        self.size = (int(size[0]), int(size[1]))
        self.seed = int(o["seed"])
        if self.seed < 0:
            raise ValueError(f"synthetic: seed must be >= 0, got {self.seed}")
        self.fov_deg = _pair(o["fov_deg"], "fov_deg", float)
        if not (1.0 <= self.fov_deg[0] and self.fov_deg[1] <= 170.0):
            raise ValueError(f"synthetic: fov_deg must lie in [1, 170], got {o['fov_deg']!r}")
        self.num_objects = _pair(o["num_objects"], "num_objects", int)
        if self.num_objects[0] < 0:
            raise ValueError(f"synthetic: num_objects must be >= 0, got {o['num_objects']!r}")
        types = [o["scene_types"]] if isinstance(o["scene_types"], str) else list(o["scene_types"])
        bad = [t for t in types if t not in SCENE_TYPES]
        if not types or bad:
            raise ValueError(
                f"synthetic: scene_types must be a non-empty subset of {SCENE_TYPES}, got {types!r}"
            )
        self.scene_types = tuple(types)
        if o["sky_policy"] not in ("invalid", "far_plane"):
            raise ValueError(
                f"synthetic: sky_policy must be 'invalid' or 'far_plane', got {o['sky_policy']!r}"
            )
        self.sky_policy = o["sky_policy"]  # type: ignore[misc]
        self.min_depth, self.max_depth = float(o["min_depth"]), float(o["max_depth"])  # type: ignore[misc]
        if not (0 <= self.min_depth < self.max_depth) or not math.isfinite(self.max_depth):
            raise ValueError(
                f"synthetic: need 0 <= min_depth < max_depth < inf, got {self.min_depth}, {self.max_depth}"
            )
        self.opts = o
        self.root = None  # type: ignore[assignment]
        self.split_file = None
        self.rows = []
        self._cache: dict[int, Render] = {}

    def __len__(self) -> int:
        return self.length

    def _check(self, i: int) -> int:
        if not -self.length <= i < self.length:
            raise IndexError(f"synthetic: index {i} out of range for length {self.length}")
        return i % self.length if self.length else i

    def scene(self, i: int) -> Scene:
        """The random scene of sample ``i``."""
        i = self._check(i)
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, i]))
        return sample_scene(
            rng, self.size, fov_deg=self.fov_deg, num_objects=self.num_objects, scene_types=self.scene_types
        )

    def render(self, i: int) -> Render:
        """Render sample ``i`` (the last few renders are cached, so ``load_image`` + ``load_depth`` render once)."""
        i = self._check(i)
        r = self._cache.get(i)
        if r is None:
            r = render_scene(self.scene(i), *self.size)
            if len(self._cache) >= 4:
                self._cache.pop(next(iter(self._cache)))
            self._cache[i] = r
        return r

    def pair(self, i: int) -> tuple[str, str]:
        i = self._check(i)
        return f"synthetic/seed{self.seed}/{i:06d}.png", f"synthetic/seed{self.seed}/{i:06d}_depth.png"

    def paths(self, i: int) -> tuple[Path, Path]:
        raise NotImplementedError(
            "synthetic samples are generated, not read from files; use write_synthetic_dataset() to write them"
        )

    def load_image(self, i: int) -> np.ndarray:
        return self.render(i).rgb

    def load_depth(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        r = self.render(i)
        depth = r.depth
        valid = (depth > self.min_depth) & (depth < self.max_depth) & ~r.sky
        out = np.where(valid, depth, np.float32(0.0)).astype(np.float32)
        if self.sky_policy == "far_plane":
            out[r.sky] = self.max_depth
            valid = valid | r.sky
        return out, valid

    def intrinsics(self, i: int, hw: tuple[int, int]) -> Intrinsics | None:
        return self.render(i).intrinsics

    def load(self, i: int) -> Sample:
        i = self._check(i)
        s = super().load(i)
        s.extra = {"scene_type": self.render(i).kind, "seed": self.seed, "index": i}
        return s


def write_synthetic_dataset(
    out_dir: str | os.PathLike[str],
    n: int,
    size: tuple[int, int] | int = (256, 256),
    seed: int = 0,
    *,
    overwrite: bool = False,
    **options: Any,
) -> Path:
    """Write ``n`` synthetic samples to ``out_dir`` in the ``folder`` format and return the list file path.

    Layout: ``rgb/NNNNNN.png`` (uint8 RGB), ``depth/NNNNNN.png`` (uint16 millimetres, 0 = invalid/sky),
    ``train.txt`` (``rgb/NNNNNN.png depth/NNNNNN.png`` per line), ``intrinsics.json`` (RGB path -> camera) and
    ``dataset.json`` (``depth_scale`` 1000, ``depth_space`` depth_metric), so ``FolderDataset(out_dir)`` reads it
    back with no options. Depths >= 65.535 m cannot be stored and are written as 0 (the generator stays below 60 m).

    Args:
        out_dir: output directory (created).
        n: number of samples.
        size: (H, W) or an int for square images.
        seed: base seed (sample i is identical to ``SyntheticDataset(seed=seed, size=size)[i]``).
        overwrite: replace existing files; otherwise an existing ``dataset.json`` or sample file raises.
        **options: other ``SyntheticDataset`` options (fov_deg, num_objects, scene_types).

    Raises:
        FileExistsError: the directory already holds a dataset and ``overwrite`` is False.
    """
    bad = {"length", "size", "seed", "sky_policy"} & set(options)
    if bad:
        raise ValueError(
            f"write_synthetic_dataset: pass {sorted(bad)} as arguments (sky is always invalid on disk)"
        )
    out = Path(out_dir)
    if (out / "dataset.json").exists() and not overwrite:
        raise FileExistsError(
            f"{out / 'dataset.json'} already exists (refusing to overwrite; pass overwrite=True)"
        )
    ds = SyntheticDataset(length=n, size=size, seed=seed, **options)
    lines: list[str] = []
    cams: dict[str, dict[str, float]] = {}
    for i in range(n):
        r = ds.render(i)
        depth, valid = ds.load_depth(i)
        mm = np.round(depth.astype(np.float64) * 1000.0)
        mm = np.where(valid & (mm > 0) & (mm <= 65535), mm, 0).astype(np.uint16)
        rgb_rel, depth_rel = f"rgb/{i:06d}.png", f"depth/{i:06d}.png"
        io.write_image(out / rgb_rel, r.rgb, overwrite=overwrite)
        io.write_png16(out / depth_rel, mm, overwrite=overwrite)
        lines.append(f"{rgb_rel} {depth_rel}")
        cams[rgb_rel] = r.intrinsics.to_dict()
    _write_text(out / "train.txt", "\n".join(lines) + ("\n" if lines else ""), overwrite)
    _write_text(out / "intrinsics.json", json_text(cams, indent=1) + "\n", overwrite)
    meta = {
        "format": "anydepth.folder",
        "version": 1,
        "list": "train.txt",
        "depth_scale": 1000.0,
        "depth_space": DepthSpace.DEPTH_METRIC.value,
        "intrinsics": "intrinsics.json",
    }
    _write_text(out / "dataset.json", json_text(meta, indent=1) + "\n", overwrite)
    return out / "train.txt"


def _write_text(path: Path, text: str, overwrite: bool) -> None:
    with io.atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
