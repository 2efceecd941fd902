"""Flicker benchmark: per-frame normalisation vs temporal alignment (``anydepth.bench.flicker``).

Usage::

    PYTHONPATH=src .venv/bin/python scripts/flicker_bench.py --out OUT_DIR [--seeds 0 1 2] [--frames 48]
        [--model sdt_test]

Writes ``OUT_DIR/flicker.json`` (all numbers), ``OUT_DIR/flicker.md`` (the table for docs/video.md) and
``OUT_DIR/flicker_strip_<setting>.jpg`` (RGB, exact depth, per-frame, temporal rows). Two settings are run: a
camera moving through the room (``moving``) and a static camera (``static``); both have a moving sphere and the
emulated per-frame scale/shift, noise and outlier disc (see the module docstring of ``anydepth.bench.flicker``).

``--model PRESET_OR_CHECKPOINT`` also streams the clip's RGB frames through the real pipeline (``predict_iter``,
then ``TemporalAligner``) and reports frames per second and restarts: it proves the path runs end to end (a
random preset's nearly constant output restarts the reference at every frame; use a trained checkpoint).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

SETTINGS: dict[str, dict[str, Any]] = {
    "moving": {},
    "static": {"travel": (0.0, 0.0), "pan_deg": 0.0},
}


def _table(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| camera | method | flicker | excess flicker | AbsRel (clip-aligned) | AbsRel (per-frame fit) |",
        "|---|---|---|---|---|---|",
    ]
    for setting, r in results.items():
        for name, m in r["mean"].items():
            lines.append(
                f"| {setting} | {name} | {m['flicker']:.4f} | {m['excess_flicker']:.4f} | "
                f"{m['abs_rel_clip']:.4f} | {m['abs_rel_frame']:.4f} |"
            )
    lines.append("")
    for setting, r in results.items():
        lines.append(
            f"- {setting}: flicker reduced {r['flicker_reduction']:.2f}x (excess flicker "
            f"{r['excess_flicker_reduction']:.2f}x); clip-aligned AbsRel {100 * r['abs_rel_clip_change']:+.1f}%, "
            f"per-frame AbsRel {100 * r['abs_rel_frame_change']:+.1f}% (temporal vs per-frame)"
        )
    return "\n".join(lines) + "\n"


def _stream_real_model(preset: str, frames: int, size: tuple[int, int]) -> dict[str, Any]:
    import anydepth
    from anydepth.bench.flicker import synthetic_clip
    from anydepth.inference import TorchRunner, predict_iter
    from anydepth.ops.temporal import TemporalAligner

    model = anydepth.load_model(preset) if Path(preset).is_file() else anydepth.create_model(preset)
    runner = TorchRunner(model)
    aligner = TemporalAligner(runner.output_space)
    rgb = (f.render.rgb for f in synthetic_clip(frames=frames, size=size, seed=0))
    t0 = time.perf_counter()
    n = 0
    restarts = 0
    for pred in predict_iter(runner, rgb, resolution="native", batch_size=1, compute_depth=False):
        out = aligner.update(pred.value)
        restarts += int(out.restarted)
        n += 1
    dt = time.perf_counter() - t0
    return {"preset": preset, "frames": n, "seconds": dt, "frames_per_s": n / dt, "restarts": restarts}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="output directory (created)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--size", type=int, nargs=2, default=[120, 160], metavar=("H", "W"))
    ap.add_argument("--model", help="also stream the clip through this preset or checkpoint file and time it")
    args = ap.parse_args()

    from anydepth.bench.flicker import clip_outputs, flicker_strip, run_flicker_benchmark
    from anydepth.data.io import write_image

    args.out.mkdir(parents=True, exist_ok=True)
    size = (int(args.size[0]), int(args.size[1]))
    results = {}
    for name, clip in SETTINGS.items():
        results[name] = run_flicker_benchmark(
            seeds=tuple(args.seeds), frames=args.frames, size=size, clip=clip, progress=print
        )
        frames, outputs, _ = clip_outputs(args.seeds[0], frames=args.frames, size=size, clip=clip)
        write_image(args.out / f"flicker_strip_{name}.jpg", flicker_strip(frames, outputs), overwrite=True)
    summary: dict[str, Any] = {"results": results}
    if args.model:
        summary["real_model_stream"] = _stream_real_model(args.model, args.frames, size)
    (args.out / "flicker.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    table = _table(results)
    (args.out / "flicker.md").write_text(table, encoding="utf-8")
    print(table)
    if args.model:
        print(json.dumps(summary["real_model_stream"]))


if __name__ == "__main__":
    main()
