"""Throughput of the data filter at 768x768: scoring alone (from arrays) and end to end (from 16-bit PNG files).

Usage::

    .venv/bin/python scripts/bench_filter.py [--n 64] [--size 768] [--workers 1 2] [--json out.json]

Scoring alone runs ``quality_scores`` in this process on float32 depth maps that are already in memory (one
core). End to end runs ``filter_index`` (no plots) on a folder dataset of PNG16 depth files written to a
temporary directory, with each worker count given; it includes PNG decoding, masking, scoring and writing the
progress cache. Timings are the best of ``--repeat`` passes (the machine may be shared).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def make_depth(rng: np.random.Generator, size: int) -> np.ndarray:
    """A plausible depth map in metres: a tilted floor/wall layout, boxes, sensor noise and an invalid blob."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    depth = 1.5 + 6.0 * (1.0 - y) ** 2 + 2.0 * x * rng.uniform(0.2, 1.0)
    for _ in range(int(rng.integers(2, 6))):
        x0, y0 = rng.uniform(0, 0.8, 2)
        w, h = rng.uniform(0.05, 0.3, 2)
        box = (x > x0) & (x < x0 + w) & (y > y0) & (y < y0 + h)
        depth = np.where(box, rng.uniform(0.8, 4.0) + 0.3 * x, depth)
    depth = depth + rng.normal(0.0, 0.005, depth.shape).astype(np.float32)
    cy, cx, r = rng.uniform(0, 1, 3)
    depth[(x - cx) ** 2 + (y - cy) ** 2 < (0.1 * r) ** 2] = 0.0
    return depth.astype(np.float32)


def bench_scoring(n: int, size: int, repeat: int) -> dict[str, float]:
    from anydepth.data.filtering.scores import (
        DEFAULT_PARAMS,
        _distribution,
        _gradient,
        quality_scores,
        valid_mask,
    )

    rng = np.random.default_rng(0)
    maps = [make_depth(rng, size) for _ in range(n)]
    masks = [m > 0 for m in maps]
    out: dict[str, float] = {}
    for name, fn in (
        ("total", lambda d, v: quality_scores(d, v)),
        ("valid_mask", lambda d, v: valid_mask(d, v)),
        ("s_dist", lambda d, v: _distribution(d, v, DEFAULT_PARAMS)),
        ("s_grad", lambda d, v: _gradient(d, v, DEFAULT_PARAMS)),
    ):
        fn(maps[0], masks[0])  # warm-up (scratch buffers)
        best, best_cpu = float("inf"), float("inf")
        for _ in range(repeat):
            t, c = time.perf_counter(), time.process_time()
            for d, v in zip(maps, masks, strict=True):
                fn(d, v)
            best = min(best, time.perf_counter() - t)
            best_cpu = min(best_cpu, time.process_time() - c)
        out[f"{name}_ms"] = 1000.0 * best / n
        out[f"{name}_cpu_ms"] = 1000.0 * best_cpu / n
    out["scoring_samples_per_s_per_core"] = 1000.0 / out["total_ms"]
    out["scoring_samples_per_s_per_core_cpu_time"] = 1000.0 / out["total_cpu_ms"]
    return out


def bench_end_to_end(n: int, size: int, workers: list[int], repeat: int) -> dict[str, float]:
    from anydepth.data import io
    from anydepth.data.datasets.folder import FolderDataset
    from anydepth.data.filtering import Source, filter_index

    rng = np.random.default_rng(1)
    res: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        lines = []
        rgb = np.zeros((8, 8, 3), np.uint8)  # the filter checks that the RGB exists; it does not decode it
        for i in range(n):
            d = make_depth(rng, size)
            io.write_png16(root / "depth" / f"{i:05d}.png", np.round(d * 1000).astype(np.uint16))
            io.write_image(root / "rgb" / f"{i:05d}.png", rgb)
            lines.append(f"rgb/{i:05d}.png depth/{i:05d}.png\n")
        (root / "train.txt").write_text("".join(lines))
        ds = FolderDataset(root, split_file=root / "train.txt", depth_scale=1000.0)
        best, best_cpu = float("inf"), float("inf")
        for _ in range(repeat):
            t, c = time.perf_counter(), time.process_time()
            for i in range(n):
                ds.load_depth(i)
            best = min(best, time.perf_counter() - t)
            best_cpu = min(best_cpu, time.process_time() - c)
        res["load_depth_ms"] = 1000.0 * best / n
        res["load_depth_cpu_ms"] = 1000.0 * best_cpu / n
        for w in workers:
            best, best_cpu = float("inf"), float("inf")
            for r in range(repeat):
                out = Path(tmp) / f"out_{w}_{r}"
                t, c = time.perf_counter(), time.process_time()
                res_ = filter_index([Source("bench", ds)], out, workers=w, plots=False, parquet=False)
                best = min(best, res_.seconds)  # the scoring phase (pool start-up included)
                best_cpu = min(best_cpu, time.process_time() - c)
            res[f"e2e_workers{w}_samples_per_s"] = n / best
            res[f"e2e_workers{w}_samples_per_s_per_core"] = n / best / w
            if w == 1:  # in-process: CPU time is meaningful
                res["e2e_workers1_samples_per_s_cpu_time"] = n / best_cpu
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=64, help="samples per pass")
    ap.add_argument("--size", type=int, default=768, help="square depth map size in pixels")
    ap.add_argument("--repeat", type=int, default=3, help="passes; the best is reported")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, os.cpu_count() or 1])
    ap.add_argument("--json", default=None, help="also write the results to this file")
    args = ap.parse_args()
    res: dict[str, object] = {
        "size": args.size,
        "n": args.n,
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "numpy": np.__version__,
    }
    res.update(bench_scoring(args.n, args.size, args.repeat))
    res.update(bench_end_to_end(args.n, args.size, sorted(set(args.workers)), args.repeat))
    text = json.dumps(res, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
