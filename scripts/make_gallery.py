#!/usr/bin/env python
"""Regenerate the inference gallery of ``docs/inference.md`` with ``anydepth infer`` on the real RGB-D fixtures.

For each fixture frame the script runs the ``infer`` command (in-process) with ``--save side,ply`` and
``--align-to`` the frame's ground-truth depth (so the point cloud is metric), then writes under ``--out``:

* ``infer_<id>_depth.jpg``: the tool's side-by-side output (input | colour-mapped prediction), downscaled;
* ``infer_<id>_cloud.jpg``: the tool's PLY rendered from a viewpoint rotated away from the camera, next to the
  ground-truth depth unprojected with the same intrinsics and rendered the same way.

The renderer is a small numpy point splatter (z-buffered 2x2 splats, no extra dependencies).

Usage::

    python scripts/make_gallery.py --checkpoint demo.safetensors [--encoder-weights W] [--out docs/images]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RGBD = REPO.parent / "shared" / "fixtures" / "rgbd"
SAMPLES = ("nyu_00000", "kitti_0000000005", "livingroom_00000")


def _rotation(yaw_deg: float, pitch_deg: float) -> np.ndarray:
    y, p = math.radians(yaw_deg), math.radians(pitch_deg)
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    return rx @ ry


def render_points(
    points: np.ndarray,
    colors: np.ndarray,
    *,
    width: int = 400,
    height: int = 300,
    yaw_deg: float = 28.0,
    pitch_deg: float = 12.0,
    fov_deg: float = 60.0,
    pivot: np.ndarray | None = None,
    zoom_out: float = 1.0,
    background: tuple[int, int, int] = (255, 255, 255),
) -> np.ndarray:
    """Render a coloured point cloud (OpenCV camera frame) to a uint8 ``[height, width, 3]`` image.

    The virtual camera orbits the ``pivot`` (default: the median point) by ``yaw`` (to the right) and ``pitch``
    (upwards) degrees, keeps the pivot at the image centre at ``zoom_out`` times its original distance, and draws
    2x2-pixel splats with a z-buffer.
    """
    pts = np.asarray(points, np.float64)
    cols = np.asarray(colors, np.uint8)
    ok = np.isfinite(pts).all(1)
    pts, cols = pts[ok], cols[ok]
    img = np.empty((height, width, 3), np.uint8)
    img[:] = background
    if len(pts) == 0:
        return img
    c = np.median(pts, axis=0) if pivot is None else np.asarray(pivot, np.float64)
    dist = float(np.linalg.norm(c)) * zoom_out
    r = _rotation(yaw_deg, pitch_deg)
    cam = (pts - c) @ r.T + np.array([0.0, 0.0, dist])
    f = width / (2.0 * math.tan(math.radians(fov_deg) / 2.0))
    front = cam[:, 2] > 1e-3
    cam, cols = cam[front], cols[front]
    u = np.round(cam[:, 0] / cam[:, 2] * f + (width - 1) / 2.0).astype(np.int64)
    v = np.round(cam[:, 1] / cam[:, 2] * f + (height - 1) / 2.0).astype(np.int64)
    us = np.concatenate([u, u + 1, u, u + 1])
    vs = np.concatenate([v, v, v + 1, v + 1])
    zs = np.tile(cam[:, 2], 4)
    cs = np.tile(cols, (4, 1))
    inside = (us >= 0) & (us < width) & (vs >= 0) & (vs < height)
    us, vs, zs, cs = us[inside], vs[inside], zs[inside], cs[inside]
    idx = vs * width + us
    order = np.lexsort((zs, idx))  # by pixel, nearest first
    idx, cs = idx[order], cs[order]
    first = np.unique(idx, return_index=True)[1]
    img.reshape(-1, 3)[idx[first]] = cs[first]
    return img


def _resize(img: np.ndarray, width: int) -> np.ndarray:
    from PIL import Image

    h, w = img.shape[:2]
    return np.asarray(Image.fromarray(img).resize((width, max(1, round(h * width / w))), Image.LANCZOS))


def _save_jpeg(path: Path, img: np.ndarray, max_kb: int = 140) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    for q in (88, 80, 70, 60, 50):
        Image.fromarray(img).save(path, quality=q, optimize=True)
        if path.stat().st_size <= max_kb * 1024:
            return


def _label(img: np.ndarray, text: str) -> np.ndarray:
    from PIL import Image, ImageDraw

    im = Image.fromarray(img)
    d = ImageDraw.Draw(im)
    d.rectangle([0, 0, 8 + 6 * len(text), 14], fill=(0, 0, 0))
    d.text((4, 2), text, fill=(255, 255, 255))
    return np.asarray(im)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", help="checkpoint for `anydepth infer --checkpoint`")
    ap.add_argument("--model", help="preset (random decoder) instead of a checkpoint: layout check only")
    ap.add_argument("--encoder-weights")
    ap.add_argument(
        "--out", default=str(REPO / "docs" / "images"), help="output folder (default docs/images)"
    )
    ap.add_argument("--size", default="384", help="infer --size (default 384: quick on a CPU)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--samples", nargs="*", default=list(SAMPLES), help=f"fixture ids (default {SAMPLES})")
    args = ap.parse_args(argv)
    if not (RGBD / "manifest.json").is_file():
        print(f"fixtures not found under {RGBD}", file=sys.stderr)
        return 2
    if not (args.checkpoint or args.model):
        ap.error("give --checkpoint (or --model for a layout check)")

    sys.path.insert(0, str(REPO / "src"))
    from anydepth.cli.main import main as anydepth_main
    from anydepth.data.io import read_depth, read_image
    from anydepth.data.pointcloud import read_ply
    from anydepth.ops.geometry import unproject_depth
    from anydepth.types import Intrinsics

    manifest = {s["id"]: s for s in json.loads((RGBD / "manifest.json").read_text())["samples"]}
    out = Path(args.out)
    model_args = ["--checkpoint", args.checkpoint] if args.checkpoint else ["--model", args.model]
    if args.encoder_weights:
        model_args += ["--encoder-weights", args.encoder_weights]
    with tempfile.TemporaryDirectory() as tmp:
        for sid in args.samples:
            s = manifest[sid]
            k = s["intrinsics"]
            run_out = Path(tmp) / sid
            infer = ["infer", str(RGBD / s["rgb"]), "-o", str(run_out), *model_args, "--size", args.size,
                     "--device", args.device, "--save", "side,ply", "--intrinsics", json.dumps(k), "-q"]  # fmt: skip
            rc = anydepth_main(
                [*infer, "--align-to", str(RGBD / s["depth"]), "--align-scale", str(s["depth_scale"])]
            )
            aligned = rc == 0
            if not aligned:  # e.g. a random-weight model: the fit to the ground truth has no positive scale
                print(
                    f"{sid}: alignment to the ground truth failed; rendering the nominal (non-metric) cloud"
                )
                run_out = Path(tmp) / f"{sid}_nominal"
                rc = anydepth_main([*infer[:3], str(run_out), *infer[4:]])
            stem = Path(s["rgb"]).stem
            if rc != 0 or not (run_out / f"{stem}_side.png").is_file():
                print(f"{sid}: anydepth infer failed (rc {rc}); see {run_out}", file=sys.stderr)
                return 1
            side = read_image(run_out / f"{stem}_side.png")
            if s["width"] / s["height"] > 2:  # wide frames: input above prediction instead of side by side
                half = side.shape[1] // 2
                side = np.concatenate([side[:, :half], side[:, half:]], axis=0)
            _save_jpeg(
                out / f"infer_{sid}_depth.jpg", _resize(side, 720 if side.shape[1] > side.shape[0] else 480)
            )

            pts, cols, _ = read_ply(run_out / f"{stem}.ply")
            gt = read_depth(RGBD / s["depth"], scale=s["depth_scale"])
            rgb = read_image(RGBD / s["rgb"])
            gt_pts = unproject_depth(gt, Intrinsics(**k))[gt > 0]
            gt_cols = rgb[gt > 0]
            pivot = np.median(gt_pts, axis=0)
            wide = s["width"] / s["height"] > 2
            w, h = (480, 220) if wide else (360, 270)
            # wide street scenes: pulled back and raised; rooms: orbit the middle of the scene
            if wide:
                view = {"yaw_deg": 15.0, "pitch_deg": 20.0, "zoom_out": 2.5}
            else:
                view = {"yaw_deg": 28.0, "pitch_deg": 12.0, "zoom_out": 1.0}
            a = render_points(pts, cols, width=w, height=h, pivot=pivot if aligned else None, **view)
            b = render_points(gt_pts, gt_cols, width=w, height=h, pivot=pivot, **view)
            title = "prediction aligned to GT (PLY)" if aligned else "prediction, nominal depth (PLY)"
            pair = np.concatenate(
                [_label(a, title), np.full((h, 6, 3), 255, np.uint8), _label(b, "ground truth unprojected")],
                axis=1,
            )
            _save_jpeg(out / f"infer_{sid}_cloud.jpg", pair)
            summ = json.loads((run_out / "summary.json").read_text())["inputs"][0]
            d = summ.get("depth", {})
            print(
                f"{sid}: {d.get('mapping')} depth, abs_rel of the fit {d.get('abs_rel', float('nan')):.4f}, "
                f"{summ['ply']['points']} points "
                f"-> {out}/infer_{sid}_depth.jpg, infer_{sid}_cloud.jpg"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
