"""Flicker benchmark: per-frame normalisation vs temporal alignment on a procedural video with exact depth.

The clip (``synthetic_clip``): a camera moves through a ``synthetic`` indoor room (a forward and sideways
translation with a slow pan) while one sphere moves across the room; every frame is ray-cast with exact planar
depth and known pose, so co-visible pixels between consecutive frames are known exactly (reprojection with the
true depth, checked against the next frame's depth to drop occlusions and the moving sphere).

A model's per-frame affine ambiguity is emulated without trained weights (``simulate_predictions``): the
prediction of frame ``t`` is ``a_t (x_t (1 + e) + o) + b_t`` with ``x_t`` the exact disparity ``1/z``, a random
per-frame scale ``a_t = exp(N(0, scale_sigma))`` and shift ``b_t = N(0, shift_sigma) * median(x_t)``,
multiplicative pixel noise ``e ~ N(0, noise)``, and a moving outlier disc ``o`` (a region where the "model" is
wrong by ``outlier`` times the median disparity, moving across the frame like a mis-predicted object).

Methods compared, all in disparity: ``per_frame`` is ``inference.nominal_depth`` (what ``anydepth infer`` does
per frame: robust percentiles to a fixed range); ``temporal`` is ``ops.temporal.TemporalAligner``; ``oracle`` is
the same emulated prediction without the per-frame scale and shift (the best any per-frame affine correction can
do: its flicker is the floor left by the pixel noise and the outlier disc). ``excess`` flicker is a method's
flicker minus the oracle's: the part caused by the per-frame ambiguity, which is what alignment can remove.

Metrics (``evaluate_clip``), on the depth obtained after ONE clip-level least-squares scale+shift in disparity
(fitted on all frames at once, as an ``--align-to`` anchor would):

* ``flicker``: mean over consecutive frame pairs and co-visible pixels of ``|dz_pred / z_pred - dz_gt / z_gt|``,
  the relative depth change of the prediction minus that of the ground truth (0 = changes exactly as the
  scene does);
* ``abs_rel_clip``: mean per-frame AbsRel of that clip-aligned depth;
* ``abs_rel_frame``: mean per-frame AbsRel after each frame's own least-squares fit (the per-frame quality,
  which an affine per-frame method cannot change; reported to show nothing is lost).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from anydepth.data.datasets.synthetic import Material, Render, Scene, Sphere, render_scene, sample_scene
from anydepth.inference import nominal_depth
from anydepth.ops.alignment import fit_scale_shift
from anydepth.ops.colormap import apply_colormap
from anydepth.ops.geometry import project_points, unproject_depth
from anydepth.ops.temporal import TemporalAligner, reduce_temporal_noise, robust_fit_scale_shift
from anydepth.types import DepthSpace

__all__ = [
    "ClipFrame",
    "synthetic_clip",
    "simulate_predictions",
    "covisible_pairs",
    "evaluate_clip",
    "FLICKER_METHODS",
    "clip_outputs",
    "run_flicker_benchmark",
    "flicker_strip",
]

#: Methods compared by ``run_flicker_benchmark``.
FLICKER_METHODS: tuple[str, ...] = (
    "per_frame",
    "temporal",
    "temporal_smooth",
    "exact_motion_bound",
    "oracle",
)
#: ``smooth`` of the ``temporal_smooth`` and ``exact_motion_bound`` methods (temporal noise reduction weight).
SMOOTH = 0.7


@dataclass(frozen=True)
class ClipFrame:
    """One frame of ``synthetic_clip``: ``render`` (RGB, planar depth in metres, intrinsics), the camera-to-world
    ``rotation`` [3,3] and ``position`` [3] (metres), and the frame ``index``."""

    render: Render
    rotation: np.ndarray
    position: np.ndarray
    index: int


def _yaw(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def synthetic_clip(
    *,
    frames: int = 48,
    size: tuple[int, int] = (120, 160),
    seed: int = 0,
    travel: tuple[float, float] = (0.8, 0.8),
    pan_deg: float = 8.0,
) -> Iterator[ClipFrame]:
    """Render a procedural video of an indoor ``synthetic`` room with a moving camera and a moving sphere.

    Args:
        frames: number of frames.
        size: ``(H, W)`` pixels.
        seed: scene seed (``numpy.random.default_rng(seed)``).
        travel: camera translation over the clip ``(sideways x, forward z)`` in metres.
        pan_deg: peak-to-peak yaw of the camera over the clip (degrees, a half sine).

    Yields:
        ``ClipFrame`` per frame (rendered lazily, one at a time).
    """
    if frames < 2:
        raise ValueError(f"a clip needs at least 2 frames, got {frames}")
    rng = np.random.default_rng(seed)
    base = sample_scene(rng, size, kind="indoor")
    cam0 = base.camera
    floor_y = -base.planes[0].offset  # floor plane: normal (0,-1,0), offset -cam_h
    radius = 0.45
    mover = Sphere(np.zeros(3), radius, Material((0.9, 0.3, 0.2), (0.5, 0.1, 0.1), "checker", 0.25, seed))
    for t in range(frames):
        u = t / (frames - 1)
        scene: Scene = copy.copy(base)
        cam = copy.copy(cam0)
        cam.rotation = _yaw(math.radians(pan_deg / 2.0) * math.sin(math.pi * (u - 0.5))) @ cam0.rotation
        cam.position = np.asarray(cam0.position, dtype=np.float64) + np.array(
            [travel[0] * u, 0.0, travel[1] * u]
        )
        scene.camera = cam
        sphere = copy.copy(mover)
        # crosses the room from the left, passing close in front of the camera mid-clip
        sphere.center = np.array([-2.0 + 4.0 * u, floor_y - radius, 1.6 + 2.4 * abs(2.0 * u - 1.0)])
        scene.spheres = [*base.spheres, sphere]
        r = render_scene(scene, size[0], size[1])
        yield ClipFrame(
            render=r, rotation=np.asarray(cam.rotation), position=np.asarray(cam.position), index=t
        )


def simulate_predictions(
    disparities: list[np.ndarray],
    *,
    seed: int = 0,
    scale_sigma: float = 0.3,
    shift_sigma: float = 0.3,
    gamma: float = 0.85,
    noise: float = 0.005,
    outlier: float = 0.5,
    outlier_radius: float = 0.15,
) -> list[np.ndarray]:
    """Emulate a relative depth model's per-frame output from exact disparities (see the module docstring).

    The "model" output of frame ``t`` is ``a_t (m^(1-gamma) x^gamma (1 + e) + o_t) + b_t``: a shape error that is
    the same for every frame (``gamma`` < 1 compresses the disparity range, as models often do; ``m`` is the
    clip's median disparity), independent pixel noise ``e ~ N(0, noise)``, an outlier disc ``o_t`` that grows
    and shrinks while it moves across the frame, and a random per-frame scale and shift.

    Args:
        disparities: per frame ``[H, W]`` exact disparity ``1/z`` (0 = invalid).
        seed: random seed of the perturbation.
        scale_sigma, shift_sigma: spread of the per-frame scale (log) and shift (times the median disparity).
        gamma: exponent of the persistent shape error (1 = none).
        noise: relative pixel noise, independent per frame.
        outlier: error of the outlier disc, in units of the median disparity (0 = none).
        outlier_radius: largest disc radius as a fraction of the image width.

    Returns:
        Per frame ``[H, W]`` float32 affine-invariant disparity (NaN where the input is invalid).
    """
    rng = np.random.default_rng(seed)
    out = []
    n = len(disparities)
    m = float(np.median(np.concatenate([x[x > 0] for x in disparities])))
    for t, x in enumerate(disparities):
        h, w = x.shape
        ok = x > 0
        y = (
            m ** (1.0 - gamma)
            * np.power(np.where(ok, x, m), gamma)
            * (1.0 + noise * rng.standard_normal(x.shape))
        )
        u = t / max(n - 1, 1)
        if outlier and 0.2 < u < 0.8:
            cy, cx = h * 0.35, w * (0.8 - 0.6 * u)
            r = outlier_radius * w * math.sin(math.pi * (u - 0.2) / 0.6)
            yy, xx = np.mgrid[0:h, 0:w]
            y = y + outlier * m * (((yy - cy) ** 2 + (xx - cx) ** 2) <= r * r)
        a = math.exp(scale_sigma * rng.standard_normal())
        b = shift_sigma * m * rng.standard_normal()
        out.append(np.where(ok, a * y + b, np.nan).astype(np.float32))
    return out


def covisible_pairs(
    clip: list[ClipFrame], rtol: float = 0.01
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Pixel correspondences between consecutive frames from the exact depth and poses.

    Returns:
        Per pair ``(t, t+1)``: ``(idx_t, idx_t1, valid)``; flat pixel indices in frame ``t`` and their nearest
        reprojection in frame ``t+1``, kept where the reprojected depth agrees with frame ``t+1``'s depth within
        ``rtol`` (relative): occluded pixels and moving objects drop out.
    """
    pairs = []
    for a, b in zip(clip[:-1], clip[1:], strict=True):
        z0, z1 = a.render.depth, b.render.depth
        h, w = z0.shape
        k = a.render.intrinsics
        pts = unproject_depth(z0.astype(np.float64), k).reshape(-1, 3)
        world = pts @ a.rotation.T + a.position
        cam1 = (world - b.position) @ b.rotation
        uv = project_points(cam1, k)
        u = np.rint(uv[:, 0]).astype(np.int64)
        v = np.rint(uv[:, 1]).astype(np.int64)
        ok = (z0.reshape(-1) > 0) & (cam1[:, 2] > 0) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
        idx0 = np.nonzero(ok)[0]
        idx1 = v[ok] * w + u[ok]
        zt = z1.reshape(-1)[idx1]
        agree = (zt > 0) & (np.abs(cam1[ok, 2] - zt) <= rtol * zt)
        pairs.append((idx0[agree], idx1[agree], agree[agree]))
    return pairs


def _depth_from_disp(d: np.ndarray, min_disp: float) -> np.ndarray:
    return 1.0 / np.maximum(d, min_disp)


def evaluate_clip(
    outputs: list[np.ndarray], clip: list[ClipFrame], pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
) -> dict[str, float]:
    """Flicker and AbsRel of per-frame disparity ``outputs`` (``[H, W]`` each) against the clip's exact depth.

    Returns:
        ``flicker``, ``abs_rel_clip``, ``abs_rel_frame`` (see the module docstring), and ``clip_scale``,
        ``clip_shift`` of the clip-level fit.
    """
    gt = [f.render.depth.astype(np.float64) for f in clip]
    valid = [(z > 0) & np.isfinite(o) for z, o in zip(gt, outputs, strict=True)]
    p = np.concatenate([o[m].astype(np.float64) for o, m in zip(outputs, valid, strict=True)])
    d = np.concatenate([1.0 / z[m] for z, m in zip(gt, valid, strict=True)])
    s, c = fit_scale_shift(p[None], d[None])
    s, c = float(s[0]), float(c[0])
    min_disp = 1.0 / (2.0 * max(float(z.max()) for z in gt))
    depth = [_depth_from_disp(s * o.astype(np.float64) + c, min_disp) for o in outputs]
    ar_clip, ar_frame = [], []
    for o, z, m, zp in zip(outputs, gt, valid, depth, strict=True):
        ar_clip.append(float(np.mean(np.abs(zp[m] - z[m]) / z[m])))
        fs, fc = fit_scale_shift(o[m][None].astype(np.float64), (1.0 / z[m])[None])
        zf = _depth_from_disp(float(fs[0]) * o[m].astype(np.float64) + float(fc[0]), min_disp)
        ar_frame.append(float(np.mean(np.abs(zf - z[m]) / z[m])))
    flick = []
    for t, (i0, i1, _) in enumerate(pairs):
        z0, z1 = gt[t].reshape(-1), gt[t + 1].reshape(-1)
        p0, p1 = depth[t].reshape(-1), depth[t + 1].reshape(-1)
        keep = np.isfinite(outputs[t].reshape(-1)[i0]) & np.isfinite(outputs[t + 1].reshape(-1)[i1])
        i0, i1 = i0[keep], i1[keep]
        if i0.size == 0:
            continue
        dg = (z1[i1] - z0[i0]) / z0[i0]
        dp = (p1[i1] - p0[i0]) / p0[i0]
        flick.append(float(np.mean(np.abs(dp - dg))))
    return {
        "flicker": float(np.mean(flick)) if flick else float("nan"),
        "abs_rel_clip": float(np.mean(ar_clip)),
        "abs_rel_frame": float(np.mean(ar_frame)),
        "clip_scale": s,
        "clip_shift": c,
    }


def _per_frame(values: list[np.ndarray]) -> list[np.ndarray]:
    out = []
    for v in values:
        depth, _ = nominal_depth(v, DepthSpace.DISPARITY_AFFINE_INVARIANT)
        out.append((1.0 / depth.astype(np.float64)).astype(np.float32))
    return out


def _temporal(values: list[np.ndarray], **kwargs: float) -> list[np.ndarray]:
    al = TemporalAligner(DepthSpace.DISPARITY_AFFINE_INVARIANT, **kwargs)  # type: ignore[arg-type]
    return [al.update(v).value for v in values]


def _exact_motion(
    values: list[np.ndarray], pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray]], smooth: float
) -> list[np.ndarray]:
    """The ``exact_motion_bound`` method: what per-frame affine alignment plus temporal noise reduction could reach
    with perfect motion compensation. Each frame is fitted (the aligner's robust symmetric fit, its default
    tolerances) to the previous output moved onto this frame's pixels along the exact correspondences of
    ``covisible_pairs``, and ``reduce_temporal_noise`` runs against that moved output. Not a method a video can
    use (it needs the exact depth and poses): a bound on what better motion handling could add."""
    first = TemporalAligner(DepthSpace.DISPARITY_AFFINE_INVARIANT).update(values[0]).value
    prev = first.astype(np.float64)
    outs = [first]
    for v, (i0, i1, _) in zip(values[1:], pairs, strict=True):
        x = v.astype(np.float64)
        flat = np.full(x.size, np.nan)
        flat[i1] = prev.reshape(-1)[i0]
        moved = flat.reshape(x.shape)
        mask = (np.isfinite(moved) & np.isfinite(x)).ravel()
        lo, hi = np.percentile(moved.ravel()[mask], (2.0, 98.0))
        s, c, _ = robust_fit_scale_shift(
            x.ravel(), moved.ravel(), mask, symmetric=True, max_residual=0.1 * float(hi - lo)
        )
        prev = reduce_temporal_noise(s * x + c, moved, smooth)
        outs.append(prev.astype(np.float32))
    return outs


def clip_outputs(
    seed: int,
    *,
    frames: int = 48,
    size: tuple[int, int] = (120, 160),
    clip: dict[str, Any] | None = None,
    aligner: dict[str, Any] | None = None,
    perturbation: dict[str, Any] | None = None,
) -> tuple[list[ClipFrame], dict[str, list[np.ndarray]], float]:
    """Render clip ``seed``, emulate the predictions and run every method of ``FLICKER_METHODS``.

    Returns:
        ``(clip frames, {method: per-frame [H, W] disparity}, alignment milliseconds per frame and method)``.
    """
    frames_ = list(synthetic_clip(frames=frames, size=size, seed=seed, **(clip or {})))
    disp = [np.where(f.render.depth > 0, 1.0 / np.maximum(f.render.depth, 1e-6), 0.0) for f in frames_]
    values = simulate_predictions(disp, seed=seed, **(perturbation or {}))
    t0 = time.perf_counter()
    outputs = {"per_frame": _per_frame(values), "temporal": _temporal(values, **(aligner or {}))}
    ms = 1000.0 * (time.perf_counter() - t0) / (2 * frames)
    outputs["temporal_smooth"] = _temporal(values, **{**(aligner or {}), "smooth": SMOOTH})
    outputs["exact_motion_bound"] = _exact_motion(values, covisible_pairs(frames_), SMOOTH)
    pert = {**(perturbation or {}), "scale_sigma": 0.0, "shift_sigma": 0.0}
    outputs["oracle"] = simulate_predictions(disp, seed=seed, **pert)  # same noise draws, no per-frame affine
    return frames_, outputs, ms


def run_flicker_benchmark(
    *,
    seeds: tuple[int, ...] = (0, 1, 2),
    frames: int = 48,
    size: tuple[int, int] = (120, 160),
    clip: dict[str, Any] | None = None,
    aligner: dict[str, Any] | None = None,
    perturbation: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run every method on ``len(seeds)`` procedural clips and return per-seed and mean metrics.

    Args:
        seeds: one clip (scene and perturbation seed) per entry.
        frames, size: clip length and frame size ``(H, W)``.
        clip: keyword arguments for ``synthetic_clip`` (``travel``, ``pan_deg``).
        aligner: keyword arguments for ``TemporalAligner`` (default settings when None).
        perturbation: keyword arguments for ``simulate_predictions`` (besides ``seed``).
        progress: called with a line of text after each clip (the caller logs it).

    Returns:
        ``{"settings": ..., "per_seed": [...], "mean": {method: metrics}, "flicker_reduction": x,
        "excess_flicker_reduction": x, "abs_rel_clip_change": relative change, "abs_rel_frame_change": ...}``
        (changes are temporal vs per-frame; negative = better).
    """
    per_seed = []
    for seed in seeds:
        t0 = time.perf_counter()
        frames_, outputs, ms = clip_outputs(
            seed, frames=frames, size=size, clip=clip, aligner=aligner, perturbation=perturbation
        )
        pairs = covisible_pairs(frames_)
        row: dict[str, Any] = {"seed": seed, "align_ms_per_frame": ms}
        for name in FLICKER_METHODS:
            row[name] = evaluate_clip(outputs[name], frames_, pairs)
        row["covisible_fraction"] = float(np.mean([len(p[0]) for p in pairs]) / (size[0] * size[1]))
        per_seed.append(row)
        if progress is not None:
            progress(f"seed {seed}: {time.perf_counter() - t0:.1f} s")
    mean = {
        name: {
            k: float(np.mean([r[name][k] for r in per_seed]))
            for k in ("flicker", "abs_rel_clip", "abs_rel_frame")
        }
        for name in FLICKER_METHODS
    }
    pf, tm, orc = mean["per_frame"], mean["temporal"], mean["oracle"]
    for m in mean.values():
        m["excess_flicker"] = m["flicker"] - orc["flicker"]
    return {
        "settings": {
            "seeds": list(seeds),
            "frames": frames,
            "size": list(size),
            "clip": clip or {},
            "aligner": aligner or {},
            "perturbation": perturbation or {},
        },
        "per_seed": per_seed,
        "mean": mean,
        "flicker_reduction": pf["flicker"] / max(tm["flicker"], 1e-12),
        "excess_flicker_reduction": pf["excess_flicker"] / max(tm["excess_flicker"], 1e-12),
        "abs_rel_clip_change": tm["abs_rel_clip"] / pf["abs_rel_clip"] - 1.0,
        "abs_rel_frame_change": tm["abs_rel_frame"] / pf["abs_rel_frame"] - 1.0,
    }


def flicker_strip(
    clip: list[ClipFrame], outputs: dict[str, list[np.ndarray]], *, columns: int = 6, colormap: str = "turbo"
) -> np.ndarray:
    """A picture of the clip: rows RGB, exact depth, then each method's depth after the clip-level alignment,
    at ``columns`` evenly spaced frames; every depth panel uses the exact depth's colour range of the whole clip
    (so flicker shows as colour changes along a row). Returns uint8 ``[rows*H, columns*W, 3]``."""
    gt = [f.render.depth for f in clip]
    vals = np.concatenate([z[z > 0] for z in gt])
    lo, hi = (float(x) for x in np.percentile(vals, (1.0, 99.0)))
    pick = np.linspace(0, len(clip) - 1, columns).round().astype(int)
    rows = [np.concatenate([clip[i].render.rgb for i in pick], axis=1)]
    rows.append(
        np.concatenate([apply_colormap(gt[i], colormap, vmin=lo, vmax=hi, mask=gt[i] > 0) for i in pick], 1)
    )
    min_disp = 1.0 / (2.0 * float(vals.max()))
    for name in ("per_frame", "temporal"):
        o = outputs[name]
        ok = [(z > 0) & np.isfinite(x) for z, x in zip(gt, o, strict=True)]
        p = np.concatenate([x[m] for x, m in zip(o, ok, strict=True)]).astype(np.float64)
        d = np.concatenate([1.0 / z[m] for z, m in zip(gt, ok, strict=True)])
        s, c = fit_scale_shift(p[None], d[None])
        depth = [
            _depth_from_disp(float(s[0]) * o[i].astype(np.float64) + float(c[0]), min_disp) for i in pick
        ]
        rows.append(np.concatenate([apply_colormap(z, colormap, vmin=lo, vmax=hi) for z in depth], axis=1))
    return np.concatenate(rows, axis=0)
