#!/usr/bin/env python3
"""The GPU efficiency check: official heads vs eager vs fast path on one accelerator (``anydepth.bench.gpu``).

Usage (on a machine with a CUDA GPU; the official AnyDepth head files are read from a local copy, never
committed)::

    mkdir -p /tmp/official
    for f in sdt_head dpt_head; do
        git -C PATH/TO/AnyDepth show HEAD:model/$f.py > /tmp/official/$f.py
    done
    scripts/gpu_check.sh OUT_DIR --official-dir /tmp/official          # ~5 min on one H100/H200

    python scripts/gpu_check.py --dry-run --out /tmp/gpu_dry             # CPU, tiny presets, seconds

Writes ``OUT_DIR/gpu_check.json`` (every row, parity figures, environment) and ``OUT_DIR/gpu_check.md``
(targets, parity, all rows) and prints progress lines. Rows that do not fit ``--budget-s`` are recorded as
skipped. Exit status: 0 when every parity check of the fast path is within tolerance, 1 otherwise, 2 for bad
arguments.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]
try:
    import anydepth  # noqa: F401
except ImportError:  # running from a checkout without an installed package
    sys.path.insert(0, str(REPO / "src"))

from anydepth.bench.gpu import (  # noqa: E402
    PARITY_RTOL,
    TINY_PRESETS,
    WIDTH_PRESETS,
    GpuCheckConfig,
    run_gpu_check,
    write_report,
)


def _ints(s: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in s.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from None


def _strs(s: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in s.split(",") if v.strip())


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"official_{name}", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"gpu_check: cannot import {path}")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="output directory (gpu_check.json / .md)")
    ap.add_argument(
        "--official-dir", type=Path, help="directory holding the official sdt_head.py and dpt_head.py"
    )
    ap.add_argument("--device", default=None, help="torch device (default: cuda; cpu with --dry-run)")
    ap.add_argument(
        "--dry-run", action="store_true", help="tiny presets, small sizes, float32 (CPU smoke test)"
    )
    ap.add_argument("--widths", type=_strs, help="subset of L,S,B (default all, L first)")
    ap.add_argument("--resolutions", type=_ints, help="square sizes (default 256,512,1024)")
    ap.add_argument("--batches", type=_ints, help="batch sizes (default 1,8)")
    ap.add_argument("--dtypes", type=_strs, help="default bfloat16,float16,float32")
    ap.add_argument("--parts", type=_strs, help="decoder,model (default both)")
    ap.add_argument("--variants", type=_strs, help="only these variants (default: all that apply)")
    ap.add_argument(
        "--budget-s", type=float, default=None, help="time budget of the measurements (default 300)"
    )
    ap.add_argument("--no-compile", action="store_true", help="leave the torch.compile rows out")
    ap.add_argument(
        "--graphs", action="store_true", help="add the experimental CUDA-graph rows (see docs/efficiency.md)"
    )
    ap.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    args = ap.parse_args(argv)

    import torch

    kw: dict = {}
    if args.dry_run:
        kw.update(widths=dict(TINY_PRESETS), resolutions=(64, 96), batches=(1, 2), dtypes=("float32",),
                  compile=(), warmup=1, min_repeats=2, max_repeats=3, budget_s=120.0, parity_hw=(48, 80))  # fmt: skip
        device = args.device or "cpu"
    else:
        device = args.device or "cuda"
        if torch.device(device).type == "cuda" and not torch.cuda.is_available():
            print(
                "gpu_check: CUDA is not available here (use --dry-run for the CPU smoke test)",
                file=sys.stderr,
            )
            return 2
    kw["device"] = device
    if args.widths:
        unknown = [w for w in args.widths if w not in WIDTH_PRESETS]
        if unknown:
            print(f"gpu_check: unknown width(s) {unknown}; valid: {list(WIDTH_PRESETS)}", file=sys.stderr)
            return 2
        kw["widths"] = {w: WIDTH_PRESETS[w] for w in args.widths}
    for name in ("resolutions", "batches", "dtypes", "parts", "variants"):
        if getattr(args, name):
            kw[name] = getattr(args, name)
    if args.budget_s is not None:
        kw["budget_s"] = args.budget_s
    if args.no_compile:
        kw["compile"] = ()
    if args.graphs:
        kw["cuda_graphs"] = True
    try:
        cfg = GpuCheckConfig(**kw)
    except ValueError as e:
        print(f"gpu_check: {e}", file=sys.stderr)
        return 2
    official = None
    if args.official_dir is not None:
        files = {k: args.official_dir / f"{k}_head.py" for k in ("sdt", "dpt")}
        missing = [str(p) for p in files.values() if not p.is_file()]
        if missing:
            print(f"gpu_check: official head file(s) not found: {missing}", file=sys.stderr)
            return 2
        official = {k: _load(p, k) for k, p in files.items()}
    out = args.out
    for f in ("gpu_check.json", "gpu_check.md"):
        if (out / f).exists() and not args.overwrite:
            print(f"gpu_check: {out / f} exists (use --overwrite)", file=sys.stderr)
            return 2
    t0 = time.perf_counter()
    result = run_gpu_check(
        cfg,
        official=official,
        progress=lambda s: print(f"[{time.perf_counter() - t0:6.1f}s] {s}", flush=True),
    )
    paths = write_report(result, out, overwrite=args.overwrite)
    print(f"wrote {paths['json']} and {paths['md']} ({result['elapsed_s']:.0f} s)")
    bad = [
        f"{preset} {k}: {v['max_rel']:.2e} > {PARITY_RTOL[k.split('/')[-1]]:.0e}"
        for preset, checks in result["parity"].items()
        for k, v in checks.items()
        if isinstance(v, dict) and k.startswith("fast") and v["max_rel"] > PARITY_RTOL[k.split("/")[-1]]
    ]
    for b in bad:
        print(f"parity FAILED: {b}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
