"""``anydepth live``: depth from a camera, a network stream or a video file played in real time.

Frames are read with PyAV on a background thread into a one-slot mailbox (latest frame wins: when inference is
slower than the source, frames are dropped, never queued), predicted with the fast path (where the model's
decoder has one; else the eager model), aligned over time (``ops.temporal``; ``--per-frame`` disables it) and
written to ``--output``: a colour depth video
(``depth.mp4``, no audio, at the source's frame rate), optional 16-bit PNG / ``.npz`` sequences of the aligned
values, ``latest.jpg`` (the newest colour frame, replaced atomically: other tools can poll it) and
``live.json`` (statistics). A dropped stream is reopened with exponential back-off. Ctrl-C stops cleanly: the
files are finalised.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    from anydepth.cli.runner import add_runtime_args

    p = sub.add_parser(
        "live",
        help="live depth from a camera, RTSP/HTTP stream or a video file played in real time",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "source", metavar="SOURCE", help="camera index (0), device (/dev/video0), URL or video file"
    )
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output directory (created)")
    g = p.add_argument_group("model")
    g.add_argument("--checkpoint", metavar="FILE", help="project, official or converted checkpoint")
    g.add_argument("--model", metavar="PRESET", help="preset name (random decoder: a smoke test only)")
    g.add_argument("--encoder-weights", metavar="FILE", help="encoder weights (decoder-only checkpoints)")
    g.add_argument("--size", default="384", metavar="SPEC", help="processing size (default short side 384)")
    add_runtime_args(
        g,
        fast_help="optimised inference path (the default here wherever the decoder has one, else the eager "
        "model; --fast insists, --no-fast for the eager model)",
    )
    g.add_argument(
        "--no-fast", dest="fast", action="store_false", help="plain eager model instead of the fast path"
    )
    g = p.add_argument_group("stream")
    g.add_argument("--max-frames", type=int, metavar="N", help="stop after N processed frames")
    g.add_argument("--loop", action="store_true", help="restart a video file at its end")
    g.add_argument("--no-realtime", action="store_true", help="read files/URLs as fast as they decode")
    g.add_argument("--backoff", type=float, default=0.5, metavar="S", help="first reconnect delay (s)")
    g.add_argument("--max-backoff", type=float, default=10.0, metavar="S", help="longest reconnect delay (s)")
    g.add_argument("--max-reconnects", type=int, metavar="N",
                   help="give up after N failed reconnections in a row (default: never)")  # fmt: skip
    g = p.add_argument_group("outputs")
    g.add_argument("--per-frame", action="store_true", help="per-frame normalisation instead of alignment")
    g.add_argument("--smooth", type=float, default=0.0, metavar="W",
                   help="temporal noise reduction in [0, 1) on top of alignment (default 0 = off)")  # fmt: skip
    g.add_argument("--save", default="video,latest", metavar="KINDS",
                   help="comma list of video, latest, png16, npz (default video,latest)")  # fmt: skip
    g.add_argument("--fps", type=float, metavar="F", help="frame rate of the written video (default: source)")
    g.add_argument("--colormap", default="turbo", metavar="NAME", help="colour map (default turbo)")
    g.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.set_defaults(func=run, fast="auto")


_KINDS = ("video", "latest", "png16", "npz")


def run(args: argparse.Namespace) -> int:
    import contextlib
    from fractions import Fraction

    import numpy as np

    from anydepth.atomic import write_json
    from anydepth.data.io import write_image
    from anydepth.data.video import DepthSequenceWriter, VideoWriter
    from anydepth.live import FrameReader, LatestFrame, LiveStats, parse_source, run_live
    from anydepth.live.web import DepthColorizer

    saves = [s.strip() for s in args.save.split(",") if s.strip()]
    bad = [s for s in saves if s not in _KINDS]
    if bad or not saves:
        raise ValueError(f"--save: unknown kind(s) {bad or args.save!r}; choose from {', '.join(_KINDS)}")
    if args.max_frames is not None and args.max_frames < 1:
        raise ValueError(f"--max-frames must be >= 1, got {args.max_frames}")
    if not 0.0 <= args.smooth < 1.0:
        raise ValueError(f"--smooth must be in [0, 1), got {args.smooth}")
    if args.smooth > 0 and args.per_frame:
        raise ValueError("--smooth works on aligned frames; it cannot be combined with --per-frame")
    source = parse_source(args.source)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    from anydepth.cli.runner import build_runner

    if not args.checkpoint and not args.model:
        raise ValueError("give --checkpoint FILE (or --model PRESET for a random-weight smoke test)")
    built = build_runner(args)
    runner = built.runner
    space = runner.output_space
    colorizer = DepthColorizer(
        runner, resolution=args.size, colormap=args.colormap, align=not args.per_frame, smooth=args.smooth
    )
    slot = LatestFrame()
    reader = FrameReader(
        source,
        slot,
        realtime=False if args.no_realtime else None,
        loop=args.loop,
        backoff_s=args.backoff,
        max_backoff_s=args.max_backoff,
        max_reconnects=args.max_reconnects,
    )
    stop = threading.Event()

    with contextlib.ExitStack() as stack:
        writers: dict[str, Any] = {}

        def on_result(frame: Any, result: tuple[np.ndarray, np.ndarray], stats: Any) -> None:
            value, color = result
            fps = Fraction(args.fps or reader.info.get("fps") or 15.0).limit_denominator(1001)
            if "video" in saves:
                if "video" not in writers:
                    writers["video"] = stack.enter_context(
                        VideoWriter(out / "depth.mp4", fps, overwrite=args.overwrite, keep_size=True)
                    )
                writers["video"].write(color)
            for kind in ("png16", "npz"):
                if kind in saves:
                    if kind not in writers:
                        path = out / ("depth_png16" if kind == "png16" else "depth.npz")
                        w = DepthSequenceWriter(
                            path, kind, fps=fps, space=str(space), overwrite=args.overwrite
                        )
                        writers[kind] = stack.enter_context(w)
                    writers[kind].write(value)
            if "latest" in saves:
                write_image(out / "latest.jpg", color, overwrite=True)
            log.info("frame %d: %.1f fps, latency %.0f ms", frame.index, stats.fps, stats.latency_ms)

        interrupted = False
        stats = LiveStats()
        try:
            run_live(
                reader,
                lambda f: colorizer.process(f.rgb),
                on_result,
                stop_event=stop,
                max_frames=args.max_frames,
                stats=stats,
            )
        except KeyboardInterrupt:  # Ctrl-C: the reader is already stopped; the writers close below
            interrupted = True
            stop.set()
    summary = {
        "source": source.spec,
        "kind": source.kind,
        "model": {**built.source(), "fast": built.fast},
        "stream": reader.info,
        "interrupted": interrupted,
        "temporal_alignment": colorizer.aligner is not None,
        "reader_error": reader.error,
        "reconnects": reader.reconnects,
        "stats": stats.as_dict(),
        "outputs": sorted(p.name for p in out.iterdir()),
    }
    write_json(out / "live.json", summary, overwrite=True, nonfinite="null", indent=1)
    if stats.frames_out == 0:
        print(
            f"anydepth live: no frames from {source.spec} ({reader.error or 'empty stream'})", file=sys.stderr
        )
        return 1
    d = stats.as_dict()
    print(
        f"anydepth live: {int(d['frames_out'])} frames ({int(d['dropped'])} dropped, {int(d['reconnects'])} "
        f"reconnects) at {d['fps']:.1f} fps, latency {d['latency_ms']:.0f} ms"
        f"{' (interrupted)' if interrupted else ''} -> {out}"
    )
    return 0
