"""Visual model comparisons: N models x M images -> a figure grid, point-cloud renders, PLY files and a
point-cloud quality table (``anydepth figure`` / ``anydepth compare --visual``).

Per image, every model's prediction is aligned (``inference.align_prediction``: least squares in the model's
space) to the ground truth when there is one, otherwise to the first model's nominal depth, so that all models
of a row share one depth scale and one colour range (the row's colour range is the 2nd-98th percentile of the
reference's inverse depth). Error maps show ``|z - z_gt| / z_gt`` (0 to 0.3) where the ground truth exists.

Point clouds: each model's aligned depth is unprojected with the image's intrinsics (the sample's own, else a
60 degree horizontal field of view), depth edges ("flying pixels", ``ops.geometry.depth_edge_mask``) are dropped
for every model alike, and the clouds are rendered by ``vis.render`` from one orbit view per image (pivot at the
reference's median depth), shaded by their normals so that surface noise is visible.

Quality (images with ground truth only): AbsRel of the aligned depth, and ``ops.surface.surface_quality``
(plane-fit residual and normal deviation on GT-planar windows).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from anydepth.data.io import write_image
from anydepth.inference import Runner, align_prediction, nominal_depth, predict_iter
from anydepth.ops.colormap import apply_colormap
from anydepth.ops.geometry import depth_edge_mask, intrinsics_from_fov, unproject_depth
from anydepth.ops.surface import surface_quality
from anydepth.types import Intrinsics
from anydepth.vis.render import grid_normals, orbit_view, render_points, shade_by_normals

__all__ = [
    "FigureSample",
    "ModelResult",
    "Comparison",
    "load_rgbd_samples",
    "load_benchmark_samples",
    "load_image_samples",
    "compare_models",
    "comparison_figure",
    "pointcloud_figure",
    "write_comparison",
]

log = logging.getLogger(__name__)

_ERR_MAX = 0.3


@dataclass
class FigureSample:
    """One image to compare on: ``rgb`` uint8 ``[H, W, 3]``; optional GT ``depth`` (metres, ``[H, W]``) with
    ``valid`` mask; optional ``intrinsics`` (pixels); ``id`` names its files."""

    id: str
    rgb: np.ndarray
    depth: np.ndarray | None = None
    valid: np.ndarray | None = None
    intrinsics: Intrinsics | None = None


@dataclass
class ModelResult:
    """One model on one sample: aligned ``depth [H, W]`` (metres with GT, reference units without), the fit
    ``info``, and with GT: ``abs_rel`` and the surface-quality numbers."""

    depth: np.ndarray
    info: dict[str, Any]
    abs_rel: float | None = None
    quality: dict[str, float] = field(default_factory=dict)


@dataclass
class Comparison:
    """``samples`` and ``results[sample.id][model name]``, in model order ``models``."""

    samples: list[FigureSample]
    models: list[str]
    results: dict[str, dict[str, ModelResult]]


def load_rgbd_samples(root: str | Path) -> list[FigureSample]:
    """Frames of an RGB-D directory in the fixture format (``data.rgbd.read_rgbd_manifest``)."""
    from anydepth.data.rgbd import read_rgbd_manifest

    out = []
    for f in read_rgbd_manifest(root):
        k = f["intrinsics"]
        intr = Intrinsics(k["fx"], k["fy"], k["cx"], k["cy"])
        out.append(FigureSample(f["id"], f["rgb"], f["depth"], f["valid"], intr))
    return out


def load_benchmark_samples(
    name: str, root: str | Path, *, indices: Sequence[int] | None = None, max_samples: int = 4
) -> list[FigureSample]:
    """Samples of a registered benchmark (``eval.benchmarks``: ``nyuv2``, ``kitti``, ...) read from ``root``; GT
    outside the benchmark's ``[min_depth, max_depth]`` is marked invalid.

    Args:
        name: benchmark name. root: its data (directory or tar, as ``anydepth eval`` takes it).
        indices: sample indices (default: the first ``max_samples``).
    """
    from anydepth.eval.benchmarks import get_benchmark, open_dataset

    spec = get_benchmark(name)
    ds = open_dataset(spec, root)
    idx = list(indices) if indices is not None else list(range(min(max_samples, len(ds))))
    out = []
    for i in idx:
        smp = ds.load(i)
        rgb = (smp.image.permute(1, 2, 0).clamp(0, 1) * 255.0).round().byte().numpy()
        depth = smp.depth[0].double().numpy()
        valid = smp.valid[0].numpy() & (depth >= spec.min_depth) & (depth <= spec.max_depth)
        sid = f"{spec.name}_{i:04d}"
        out.append(FigureSample(sid, rgb, depth, valid, smp.intrinsics))
    return out


def load_image_samples(specs: Sequence[str | Path]) -> list[FigureSample]:
    """Images from files, folders, globs or list files (``data.inputs.expand_inputs``); videos are skipped."""
    from anydepth.data.inputs import expand_inputs
    from anydepth.data.io import read_image

    items, errors = expand_inputs(specs)
    if errors:
        raise ValueError("; ".join(f"{e.where}: {e.reason}" for e in errors))
    images = [it for it in items if it.kind == "image"]
    if not images:
        raise ValueError(f"no images found in {[str(s) for s in specs]}")
    return [FigureSample(str(it.rel).replace("/", "_"), read_image(it.path)) for it in images]


def _reference_disparity(depth: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    d = 1.0 / depth[mask]
    lo, hi = (float(x) for x in np.percentile(d, (2.0, 98.0)))
    return lo, hi if hi > lo else lo + 1e-6


def compare_models(
    runners: Mapping[str, Runner],
    samples: Sequence[FigureSample],
    *,
    resolution: str = "384",
    progress: Callable[[str], None] | None = None,
) -> Comparison:
    """Predict every sample with every runner, align, and score against GT where available.

    Args:
        runners: model name -> ``Runner`` (the first one is the reference when a sample has no GT).
        samples: images (with or without GT).
        resolution: processing size (``inference.Resolution`` string).
        progress: called with a line per sample.
    """
    if not runners:
        raise ValueError("compare_models needs at least one model")
    names = list(runners)
    results: dict[str, dict[str, ModelResult]] = {}
    for s in samples:
        row: dict[str, ModelResult] = {}
        ref: np.ndarray | None = None
        has_gt = s.depth is not None
        gt_valid = None
        if has_gt:
            assert s.depth is not None
            gt_valid = (
                (s.valid if s.valid is not None else s.depth > 0) & np.isfinite(s.depth) & (s.depth > 0)
            )
            ref = np.where(gt_valid, s.depth, 0.0)
        for name in names:
            runner = runners[name]
            pred = next(
                predict_iter(runner, [s.rgb], resolution=resolution, batch_size=1, compute_depth=False)
            )
            if ref is None:  # no GT: the first model's nominal depth is the row's reference
                depth, info = nominal_depth(pred.value, runner.output_space)
                ref = depth
            else:
                try:
                    depth, info = align_prediction(pred.value, runner.output_space, ref)
                except ValueError as e:  # e.g. an untrained model's constant map: its best fit is a constant
                    log.warning("%s on %s: %s; using the best constant depth", name, s.id, e)
                    r_ok = ref > 0
                    flat = (
                        float(1.0 / np.mean(1.0 / ref[r_ok]))
                        if runner.output_space.is_disparity
                        else float(np.mean(ref[r_ok]))
                    )
                    depth = np.full(pred.value.shape, flat, np.float32)
                    info = {"mapping": "constant", "reason": str(e)}
            res = ModelResult(depth=depth, info=info)
            if has_gt and s.depth is not None and gt_valid is not None:
                m = gt_valid & np.isfinite(depth) & (depth > 0)
                res.abs_rel = float(np.mean(np.abs(depth[m] - s.depth[m]) / s.depth[m]))
                q = surface_quality(depth, s.depth, gt_valid, _intrinsics(s))
                res.quality = {
                    "plane_residual": q.plane_residual,
                    "normal_noise_deg": q.normal_noise_deg,
                    "planar_windows": float(q.windows),
                }
            row[name] = res
        results[s.id] = row
        if progress is not None:
            progress(f"{s.id}: {len(names)} model(s)")
    return Comparison(list(samples), names, results)


def _intrinsics(s: FigureSample) -> Intrinsics:
    h, w = s.rgb.shape[:2]
    return s.intrinsics if s.intrinsics is not None else intrinsics_from_fov(h, w, 60.0)


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    from PIL import Image, ImageDraw

    im = Image.fromarray(tile)
    draw = ImageDraw.Draw(im)
    draw.rectangle((0, 0, min(tile.shape[1], 8 + 7 * len(text)), 14), fill=(0, 0, 0))
    draw.text((3, 1), text, fill=(255, 255, 255))
    return np.asarray(im)


def _fit(tile: np.ndarray, h: int, w: int) -> np.ndarray:
    from PIL import Image

    if tile.shape[:2] == (h, w):
        return tile
    return np.asarray(Image.fromarray(tile).resize((w, h), Image.Resampling.BILINEAR))


def _row_reference(s: FigureSample, r: dict[str, ModelResult], first: str) -> tuple[np.ndarray, np.ndarray]:
    if s.depth is not None:
        valid = (s.valid if s.valid is not None else s.depth > 0) & (s.depth > 0)
        return s.depth, valid
    d = r[first].depth
    return d, np.isfinite(d) & (d > 0)


def comparison_figure(comp: Comparison, *, tile_width: int = 320, colormap: str = "turbo") -> np.ndarray:
    """The grid: per row (image) input, GT (if any sample has GT), each model's inverse depth with the row's
    shared colour range, then each model's error map (rows with GT). Returns uint8 ``[H, W, 3]``."""
    any_gt = any(s.depth is not None for s in comp.samples)
    rows = []
    for s in comp.samples:
        r = comp.results[s.id]
        h0, w0 = s.rgb.shape[:2]
        th = max(1, round(h0 * tile_width / w0))
        ref, ref_ok = _row_reference(s, r, comp.models[0])
        lo, hi = _reference_disparity(ref, ref_ok)
        tiles = [_label(_fit(s.rgb, th, tile_width), s.id)]
        if any_gt:
            if s.depth is not None:
                inv = np.where(ref_ok, 1.0 / np.where(ref_ok, s.depth, 1.0), np.nan)
                g = apply_colormap(inv, colormap, vmin=lo, vmax=hi, mask=ref_ok)
                tiles.append(_label(_fit(g, th, tile_width), "ground truth"))
            else:
                tiles.append(np.full((th, tile_width, 3), 255, np.uint8))
        for name in comp.models:
            d = r[name].depth
            ok = np.isfinite(d) & (d > 0)
            inv = np.where(ok, 1.0 / np.where(ok, d, 1.0), np.nan)
            text = name if r[name].abs_rel is None else f"{name}  AbsRel {r[name].abs_rel:.3f}"
            tiles.append(_label(_fit(apply_colormap(inv, colormap, vmin=lo, vmax=hi), th, tile_width), text))
        if any_gt:
            for name in comp.models:
                if s.depth is None:
                    tiles.append(np.full((th, tile_width, 3), 255, np.uint8))
                    continue
                d = r[name].depth
                err = np.where(ref_ok, np.abs(d - s.depth) / np.where(ref_ok, s.depth, 1.0), np.nan)
                e = apply_colormap(err, "magma", vmin=0.0, vmax=_ERR_MAX, mask=ref_ok)
                tiles.append(_label(_fit(e, th, tile_width), f"{name} error (0-{_ERR_MAX:g})"))
        rows.append(np.concatenate(tiles, axis=1))
    width = max(x.shape[1] for x in rows)
    rows = [np.pad(x, ((0, 4), (0, width - x.shape[1]), (0, 0)), constant_values=255) for x in rows]
    return np.concatenate(rows, axis=0)


def _cloud(s: FigureSample, depth: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Points ``[N,3]`` and shaded colours ``[N,3]`` of a depth map (edges and invalid pixels dropped)."""
    k = _intrinsics(s)
    pts = np.asarray(unproject_depth(depth.astype(np.float64), k))
    ok = (
        np.isfinite(depth)
        & (depth > 0)
        & ~np.asarray(depth_edge_mask(np.where(np.isfinite(depth), depth, 0.0)))
    )
    colors = shade_by_normals(s.rgb, grid_normals(pts))
    h, w = depth.shape
    stride = max(1, int(np.ceil(np.sqrt(h * w / max_points))))
    sel = np.zeros_like(ok)
    sel[::stride, ::stride] = True
    m = ok & sel
    return pts[m], colors[m]


def pointcloud_figure(
    comp: Comparison,
    *,
    size: tuple[int, int] = (240, 320),
    yaw_deg: float = 30.0,
    pitch_deg: float = -15.0,
    max_points: int = 150_000,
) -> tuple[np.ndarray, dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]]:
    """Render every model's cloud (and the GT cloud) of each sample from one orbit view per sample.

    Returns:
        ``(grid uint8 [H, W, 3], {(sample id, name): (points [N,3], colours [N,3])})``; the GT cloud is stored
        under the name ``"ground_truth"``.
    """
    clouds: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
    rows = []
    for s in comp.samples:
        r = comp.results[s.id]
        ref, ref_ok = _row_reference(s, r, comp.models[0])
        view = orbit_view(float(np.median(ref[ref_ok])), yaw_deg=yaw_deg, pitch_deg=pitch_deg, size=size)
        entries: list[tuple[str, np.ndarray]] = []
        if s.depth is not None:
            entries.append(("ground_truth", np.where(ref_ok, s.depth, np.nan)))
        entries += [(name, r[name].depth) for name in comp.models]
        tiles = []
        for name, depth in entries:
            pts, col = _cloud(s, depth, max_points)
            clouds[(s.id, name)] = (pts, col)
            psize = 3 if name == "ground_truth" and ref_ok.mean() < 0.5 else 2
            tiles.append(_label(render_points(pts, col, view, point_size=psize), f"{s.id}: {name}"))
        rows.append(np.concatenate(tiles, axis=1))
    width = max(x.shape[1] for x in rows)
    rows = [np.pad(x, ((0, 4), (0, width - x.shape[1]), (0, 0)), constant_values=255) for x in rows]
    return np.concatenate(rows, axis=0), clouds


def _quality_rows(comp: Comparison) -> list[dict[str, Any]]:
    rows = []
    for s in comp.samples:
        for name in comp.models:
            res = comp.results[s.id][name]
            if res.abs_rel is None:
                continue
            rows.append({"image": s.id, "model": name, "abs_rel": res.abs_rel, **res.quality})
    return rows


def _quality_plot(rows: list[dict[str, Any]], models: list[str], path: Path, overwrite: bool) -> None:
    from anydepth.extras import require

    require("matplotlib", "quality plot (pip install 'anydepth[vis]')")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = list(dict.fromkeys(r["image"] for r in rows))
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    keys = [("abs_rel", "AbsRel (aligned)"), ("plane_residual", "plane-fit residual (rel.)"),
            ("normal_noise_deg", "normal deviation (deg)")]  # fmt: skip
    x = np.arange(len(images))
    width = 0.8 / max(len(models), 1)
    for ax, (key, title) in zip(axes, keys, strict=True):
        for j, m in enumerate(models):
            vals = [
                next((r[key] for r in rows if r["image"] == im and r["model"] == m), np.nan) for im in images
            ]
            ax.bar(x + (j - (len(models) - 1) / 2) * width, vals, width, label=m)
        ax.set_xticks(x, images, rotation=30, ha="right", fontsize=7)
        ax.set_title(title, fontsize=9)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    from anydepth.atomic import atomic_path

    with atomic_path(path, overwrite=overwrite) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _cell(x: float, digits: int) -> str:
    """A table cell: ``x`` with ``digits`` decimals, or ``n/a`` where there is no value (NaN)."""
    return f"{x:.{digits}f}" if np.isfinite(x) else "n/a"


def write_comparison(comp: Comparison, out_dir: str | Path, *, overwrite: bool = False) -> dict[str, Any]:
    """Write ``figure.png``, ``pointclouds.png``, ``ply/<image>_<model>.ply`` and, when some image has GT,
    ``quality.json``, ``quality.md`` and ``quality.png`` under ``out_dir``. Returns a summary dict."""
    from anydepth.atomic import atomic_path, write_json
    from anydepth.data.pointcloud import write_ply

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_image(out / "figure.png", comparison_figure(comp), overwrite=overwrite)
    grid, clouds = pointcloud_figure(comp)
    write_image(out / "pointclouds.png", grid, overwrite=overwrite)
    plys = []
    has_gt = {s.id: s.depth is not None for s in comp.samples}
    for (sid, name), (pts, col) in clouds.items():
        p = out / "ply" / f"{sid}_{name}.ply"
        units = (
            "metres (aligned to ground truth)" if has_gt[sid] else "units of the first model's nominal depth"
        )
        note = f"anydepth figure: image {sid}, {name}, {units}"
        write_ply(p, pts.astype(np.float32), col, comments=[note], overwrite=overwrite)
        plys.append(str(p))
    summary: dict[str, Any] = {"models": comp.models, "images": [s.id for s in comp.samples], "ply": plys}
    rows = _quality_rows(comp)
    if rows:
        summary["quality"] = rows
        # strict JSON: a measure with no data (e.g. no planar window in sparse ground truth) is null, not NaN
        write_json(out / "quality.json", rows, overwrite=overwrite, nonfinite="null", indent=1)
        lines = ["| image | model | AbsRel | plane residual | normal deviation (deg) | planar windows |",
                 "|---|---|---|---|---|---|"]  # fmt: skip
        for r in rows:
            lines.append(
                f"| {r['image']} | {r['model']} | {_cell(r['abs_rel'], 4)} | {_cell(r['plane_residual'], 4)} | "
                f"{_cell(r['normal_noise_deg'], 2)} | {int(r['planar_windows'])} |"
            )
        with atomic_path(out / "quality.md", overwrite=overwrite) as tmp:
            tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        _quality_plot(rows, comp.models, out / "quality.png", overwrite)
    return summary
