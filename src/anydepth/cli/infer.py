"""``anydepth infer``: depth maps, colour maps, point clouds and depth videos for images, folders and videos.

A thin layer over ``anydepth.inference.predict_iter``: it expands the inputs, reads them, resolves camera
intrinsics and reference depth, writes the requested outputs atomically and a ``summary.json``. See
``docs/inference.md`` for every flag.

Several processes or machines (``--shard K/N`` or torchrun's ``RANK``/``WORLD_SIZE``, see ``anydepth.shard``):
shard ``K/N`` processes the inputs ``K, K+N, ...`` of the expanded list (images, then videos; a video is one
item), writes their outputs where one run would and its ``summary.json`` + ``shard.json`` into
``OUTPUT/shards/K-of-N/``. The same command without a shard then merges the shard summaries into ``summary.json``
(``_merge_shards``; no model is loaded, nothing is recomputed).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anydepth.cli.runner import CHECKPOINT_HELP, ENCODER_WEIGHTS_HELP, add_runtime_args, build_runner

log = logging.getLogger("anydepth.cli.infer")

SAVE_KINDS = ("png16", "npy", "color", "side", "ply")
DEFAULT_SAVE = "png16,color"
PLY_MAX_POINTS = 2_000_000

_EXAMPLES = """examples:
  anydepth infer photos/ -o out/ --checkpoint anydepth_vits16.safetensors --encoder-weights dinov3_vits16.pth
  anydepth infer 'shots/**/*.jpg' -o out/ --checkpoint ckpt.safetensors --save color,ply --fov 70
  anydepth infer img.png -o out/ --checkpoint ckpt.safetensors --save ply,npy --align-to lidar.png --align-scale 256
  anydepth infer clip.mp4 -o out/ --checkpoint ckpt.safetensors --save color,side --batch-size 8
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "infer",
        help="predict depth for images, folders, globs, list files and videos",
        description="Predict depth and write depth maps, colour maps, point clouds and depth videos.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "inputs", nargs="*", metavar="INPUT", help="image, video, directory, glob or .txt list file"
    )
    p.add_argument("-i", "--input", dest="extra_inputs", action="append", default=[], metavar="INPUT",
                   help="another input (repeatable; same forms as INPUT)")  # fmt: skip
    p.add_argument(
        "-o", "--output", required=True, metavar="DIR", help="output directory (mirrors input trees)"
    )

    g = p.add_argument_group("model")
    g.add_argument("--checkpoint", metavar="FILE", help=CHECKPOINT_HELP)
    g.add_argument("--model", metavar="PRESET", help="preset name (see `anydepth models`); decoder is random")
    g.add_argument("--encoder-weights", metavar="FILE", help=ENCODER_WEIGHTS_HELP)
    model_group = g
    g = p.add_argument_group("processing")
    g.add_argument("--size", default="768", metavar="SPEC",
                   help="processing size: N or short:N (short side, default 768), long:N, HxW, or native")  # fmt: skip
    g.add_argument(
        "--batch-size", type=int, default=4, metavar="N", help="images per forward pass (default 4)"
    )
    add_runtime_args(g, backend_group=model_group)
    g.add_argument("--tta", action="store_true", help="horizontal-flip test-time augmentation (2x compute)")

    g = p.add_argument_group("outputs")
    g.add_argument("--save", default=DEFAULT_SAVE, metavar="KINDS",
                   help=f"comma list of {','.join(SAVE_KINDS)} or 'all' (default {DEFAULT_SAVE})")  # fmt: skip
    g.add_argument("--colormap", default="turbo", metavar="NAME",
                   help="colour map: turbo, viridis, magma, inferno, plasma, spectral, gray (+ _r)")  # fmt: skip

    g = p.add_argument_group("camera and depth (point clouds)")
    g.add_argument("--intrinsics", metavar="JSON",
                   help="JSON file or string with fx, fy, cx, cy in pixels (optional width, height)")  # fmt: skip
    g.add_argument("--fov", type=float, metavar="DEG", help="horizontal field of view in degrees")
    g.add_argument("--default-fov", type=float, default=60.0, metavar="DEG",
                   help="horizontal FOV when no intrinsics, --fov or EXIF focal length (default 60)")  # fmt: skip
    g.add_argument("--align-to", metavar="PATH",
                   help="metric reference depth (file for one image or video, or a directory of <name>.<ext>; "
                   "for a video also <name>/<frame>.<ext> to anchor several frames)")  # fmt: skip
    g.add_argument("--align-scale", type=float, metavar="S",
                   help="reference PNG value / S = metres (1000 for mm, 256 for KITTI, 5000 for TUM)")  # fmt: skip
    g.add_argument("--nominal-range", type=float, nargs=2, default=(1.0, 10.0), metavar=("NEAR", "FAR"),
                   help="nominal depth range for unaligned point clouds (default 1 10, arbitrary units)")  # fmt: skip
    g.add_argument("--max-depth", type=float, metavar="Z",
                   help="drop points farther than Z (default: 2x the farthest reference depth when aligned)")  # fmt: skip
    g.add_argument("--edge-threshold", type=float, default=0.05, metavar="R",
                   help="drop points at relative depth jumps above R (default 0.05; 0 keeps all)")  # fmt: skip
    g.add_argument("--ply-stride", type=int, default=0, metavar="N",
                   help=f"keep every N-th pixel per axis (default 0 = auto, at most {PLY_MAX_POINTS:,} points)")  # fmt: skip

    g = p.add_argument_group("video")
    g.add_argument("--video-align", default="temporal", choices=["temporal", "per-frame"],
                   help="temporal: align each frame's scale/shift to the previous frames (stable values, see "
                   "docs/video.md; --align-to anchors frame 0 or the frames it names metrically); per-frame: each frame on its own")  # fmt: skip
    g.add_argument("--video-smooth", type=float, default=0.0, metavar="W",
                   help="temporal noise reduction of aligned videos in [0, 1) (default 0 = off; 0.7 in "
                   "docs/video.md's benchmark): averages per-pixel jitter over frames, not motion")  # fmt: skip
    g.add_argument("--video-ema", type=float, default=0.9, metavar="M",
                   help="EMA momentum of the colour range across frames (default 0.9; 0 = per frame)")  # fmt: skip
    g.add_argument("--frame-stride", type=int, default=1, metavar="N", help="process every N-th frame")
    g.add_argument("--max-frames", type=int, metavar="N", help="stop each video after N processed frames")

    g = p.add_argument_group("run")
    ex = g.add_mutually_exclusive_group()
    ex.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    ex.add_argument("--skip-existing", action="store_true", help="skip inputs whose outputs exist (resume)")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bar, errors only")
    g.add_argument("--allow-nonfinite", action="store_true",
                   help="write predictions holding NaN/inf values (counted and warned about) instead of failing "
                        "those inputs")  # fmt: skip
    g.add_argument("--shard", metavar="K/N",
                   help="process only shard K (0-based) of N (inputs K, K+N, ...; summary in OUTPUT/shards/K-of-N), "
                   "for several processes or machines (default under torchrun: RANK/WORLD_SIZE); then run the "
                   "same command without --shard (and outside torchrun) to merge the summaries")  # fmt: skip
    p.set_defaults(func=run)


# ----------------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------------


def _parse_save(spec: str) -> list[str]:
    kinds = [k.strip().lower() for k in spec.split(",") if k.strip()]
    if kinds == ["all"]:
        return list(SAVE_KINDS)
    bad = [k for k in kinds if k not in SAVE_KINDS]
    if bad or not kinds:
        raise ValueError(
            f"--save: unknown output kind(s) {bad or spec!r}; choose from {', '.join(SAVE_KINDS)}, all"
        )
    return list(dict.fromkeys(kinds))


def _load_intrinsics_arg(spec: str | None) -> dict[str, float] | None:
    if spec is None:
        return None
    text = spec
    path = Path(spec)
    if not spec.lstrip().startswith("{"):
        if not path.is_file():
            raise FileNotFoundError(
                f"--intrinsics: no such file {spec} (pass a JSON file or a JSON object string)"
            )
        text = path.read_text(encoding="utf-8")

    def refuse(token: str) -> Any:
        raise ValueError(f"--intrinsics: {token} is not a finite number (expected fx, fy, cx, cy in pixels)")

    try:
        d = json.loads(text, parse_constant=refuse)
    except json.JSONDecodeError as e:
        raise ValueError(f"--intrinsics: not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise ValueError("--intrinsics: expected a JSON object with fx, fy, cx, cy")
    from anydepth.ops.geometry import intrinsics_from_dict

    try:  # every value checked up front: finite numbers, positive focal lengths and size, known keys
        intrinsics_from_dict(d, 2, 2)
    except ValueError as e:
        raise ValueError(f"--intrinsics: {e}") from None
    return d


def _make_runner(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The inference runner (``cli.runner.build_runner``) and a description of its source for the summary."""
    built = build_runner(args)
    return built.runner, built.source()


def _outputs_for_image(out_dir: Path, rel: Any, saves: list[str], metric: bool) -> dict[str, Path]:
    base = out_dir / Path(str(rel))
    outs: dict[str, Path] = {}
    for kind in saves:
        if kind == "png16":
            outs["png16"] = base.with_name(base.name + "_pred16.png")
        elif kind == "npy":
            outs["npy"] = base.with_name(base.name + "_pred.npy")
            if metric:
                outs["npy_depth"] = base.with_name(base.name + "_depth.npy")
        elif kind == "color":
            outs["color"] = base.with_name(base.name + "_color.png")
        elif kind == "side":
            outs["side"] = base.with_name(base.name + "_side.png")
        elif kind == "ply":
            outs["ply"] = base.with_name(base.name + ".ply")
    return outs


def _outputs_for_video(out_dir: Path, rel: Any, saves: list[str]) -> tuple[dict[str, Path], Path | None]:
    base = out_dir / Path(str(rel))
    outs: dict[str, Path] = {}
    if "color" in saves:
        outs["color"] = base.with_name(base.name + "_color.mp4")
    if "side" in saves:
        outs["side"] = base.with_name(base.name + "_side.mp4")
    frames_dir = None
    if any(k in saves for k in ("png16", "npy", "ply")):
        frames_dir = base.with_name(base.name + "_frames")
        outs["index"] = frames_dir / "index.json"
    return outs, frames_dir


def _existing_status(outs: dict[str, Path], args: argparse.Namespace) -> tuple[str, str]:
    """``("todo"|"skip"|"conflict", reason)`` for a planned set of outputs."""
    existing = [p for p in outs.values() if p.exists()]
    if not existing or args.overwrite:
        return "todo", ""
    if args.skip_existing:
        return ("skip", "all outputs exist") if len(existing) == len(outs) else ("todo", "")
    return (
        "conflict",
        f"output exists: {existing[0]} (use --overwrite to replace or --skip-existing to resume)",
    )


def _find_reference(ref_dir: Path, rel: Any) -> Path:
    from anydepth.data.io import DEPTH_EXTENSIONS

    base = ref_dir / Path(str(rel))
    for ext in DEPTH_EXTENSIONS:
        cand = base.with_name(base.name + ext)
        if cand.is_file():
            return cand
    raise FileNotFoundError(
        f"no reference depth for this input (looked for {base}{{{','.join(DEPTH_EXTENSIONS)}}})"
    )


def _frame_list(frames: list[int]) -> str:
    """``frame 0`` or ``frames 0, 240``."""
    return f"frames {', '.join(str(i) for i in frames)}" if len(frames) > 1 else f"frame {frames[0]}"


def _video_anchor_files(align_to: Path, rel: Any) -> dict[int, Path]:
    """Reference depth files of one video, by output frame index (``--align-to``).

    ``align_to`` a file: it anchors frame 0. A directory: ``<align_to>/<rel>.<ext>`` anchors frame 0, else the
    directory ``<align_to>/<rel>/`` holds one file per anchored frame, named by the frame's index in the output
    names (``000240.png`` or ``240.npy``; the source frame number when ``--frame-stride`` is 1).
    """
    from anydepth.data.io import DEPTH_EXTENSIONS

    if align_to.is_file():
        return {0: align_to}
    frames_dir = align_to / Path(str(rel))
    try:
        return {0: _find_reference(align_to, rel)}
    except FileNotFoundError:
        if not frames_dir.is_dir():
            raise FileNotFoundError(
                f"no reference depth for this video: looked for {frames_dir}{{{','.join(DEPTH_EXTENSIONS)}}} "
                f"(frame 0) and for a directory {frames_dir}/ of per-frame references (<frame>.png)"
            ) from None
    found: dict[int, Path] = {}
    for f in sorted(frames_dir.iterdir()):
        if f.suffix.lower() not in DEPTH_EXTENSIONS or not f.is_file():
            continue
        if not f.stem.isdigit():
            raise ValueError(f"{f}: a per-frame reference must be named by its frame index (e.g. 000240.png)")
        i = int(f.stem)
        if i in found:
            raise ValueError(f"{f} and {found[i]} both name frame {i}")
        found[i] = f
    if not found:
        raise FileNotFoundError(
            f"{frames_dir}/ has no reference depth files ({', '.join(DEPTH_EXTENSIONS)}) named by frame index"
        )
    return found


def _write_ply_for(
    path: Path,
    pred: Any,
    rgb: Any,
    args: argparse.Namespace,
    source: str,
    overwrite: bool,
) -> dict[str, Any]:
    from anydepth import __version__
    from anydepth.data.pointcloud import auto_stride, prediction_cloud, write_ply

    max_depth = args.max_depth
    info = pred.meta.get("depth", {})
    if max_depth is None and pred.metric and "reference_max_m" in info:
        max_depth = 2.0 * float(info["reference_max_m"])
    h, w = pred.depth.shape
    cloud = prediction_cloud(
        pred,
        rgb,
        stride=args.ply_stride if args.ply_stride > 0 else auto_stride(h, w, PLY_MAX_POINTS),
        header=[f"generated by anydepth {__version__} infer", f"source {source}"],
        max_depth=max_depth,
        edge_threshold=args.edge_threshold,
        unaligned_hint="; use --align-to for metric depth",
    )
    write_ply(path, cloud.points, cloud.colors, comments=cloud.comments, overwrite=overwrite)
    return {
        "points": int(len(cloud.points)),
        "stride": cloud.stride,
        "max_depth": max_depth,
        "metric": bool(pred.metric),
    }


def _side_by_side(rgb: Any, color: Any) -> Any:
    import numpy as np

    return np.concatenate([np.asarray(rgb, dtype=np.uint8), color], axis=1)


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)


# ----------------------------------------------------------------------------------------------------------------
# the command
# ----------------------------------------------------------------------------------------------------------------


class _Run:
    """State of one ``infer`` run: settings, records per input, counters."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out_dir = Path(args.output)
        self.summary_dir = self.out_dir  # OUTPUT/shards/K-of-N for a shard (_shard_items)
        self.summary_path: Path | None = None
        self.saves = _parse_save(args.save)
        self.records: list[dict[str, Any]] = []
        self.failures: list[tuple[str, str]] = []
        self.frames_done = 0
        self.images_done = 0
        self.nonfinite = 0  # predictions written with NaN/inf values (--allow-nonfinite)
        self.interrupted = False  # stopped by Ctrl-C
        self.planned: dict[str, list[Path]] = {}  # input -> its output files, for the partial list on Ctrl-C
        self.forward_s = 0.0

    def fail(self, where: str, reason: str, record: dict[str, Any] | None = None) -> None:
        self.failures.append((where, reason))
        log.error("%s: %s", where, reason)
        rec = record if record is not None else {"input": where}
        rec.update(status="failed", reason=reason)
        if record is None:
            self.records.append(rec)

    def write_if_needed(self, path: Path, writer: Any, written: list[str]) -> None:
        """Call ``writer(overwrite)`` unless the file exists and we resume."""
        if path.exists() and self.args.skip_existing:
            return
        writer(bool(self.args.overwrite))
        written.append(str(path))


@dataclass
class _Plan:
    """What the setup phase of ``infer`` resolved: inputs, alignment, the runner and the shared settings."""

    specs: list[str]
    images: list[Any]
    videos: list[Any]
    resolution: Any
    near_far: tuple[float, float]
    k_dict: dict[str, float] | None
    align_path: Path | None
    runner: Any
    model_info: dict[str, Any]
    model_load_s: float
    common: dict[str, Any] = field(default_factory=dict)

    @property
    def metric(self) -> bool:
        """Images are aligned to metric reference depth."""
        return self.align_path is not None


def run(args: argparse.Namespace) -> int:
    """Setup -> image phase (one ``predict_iter`` stream) -> video phase (per video) -> summary; a shard keeps its
    items only; without a shard, over shard directories, the merge of their summaries."""
    from anydepth.shard import mark_complete, resolve_shard, shard_dirs

    t_start = time.perf_counter()
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    state = _Run(args)
    shard = resolve_shard(args.shard)
    if shard is None and shard_dirs(state.out_dir):
        return _merge_shards(state)
    plan = _setup(state)
    if shard is not None:
        _shard_items(state, plan, shard)
    try:
        _image_phase(state, plan)
        _video_phase(state, plan)
    except KeyboardInterrupt:  # Ctrl-C: a clean stop, the summary lists what was done and what is partial
        state.interrupted = True
    rc = _finish(state, plan, t_start, started)
    if state.interrupted:
        return 130  # an interrupted shard is not finished: no shard.json
    if shard is not None and state.summary_path is not None:
        mark_complete(state.summary_dir, shard, {"summary": state.summary_path.name})
        if not args.quiet:
            print(
                f"anydepth infer: shard {shard} done (summary in {state.summary_dir}); when every shard is done, "
                "merge by running the same command without --shard (and outside torchrun)"
            )
    return rc


def _shard_items(state: _Run, plan: _Plan, shard: Any) -> None:
    """Keep the items of ``shard``: units ``K, K+N, ...`` where a unit is a block of ``--batch-size`` images (so a
    shard forms the batches one run forms when consecutive images share a processing size) or one whole video
    (after the images); its summary goes to ``OUTPUT/shards/K-of-N``. Input errors are no items: every shard records them (the merge keeps one copy)."""
    from anydepth.shard import shard_dir

    bs = state.args.batch_size
    units = [plan.images[i : i + bs] for i in range(0, len(plan.images), bs)] + [[v] for v in plan.videos]
    mine = {id(it) for unit in shard.take(units) for it in unit}
    plan.images = [it for it in plan.images if id(it) in mine]
    plan.videos = [it for it in plan.videos if id(it) in mine]
    state.summary_dir = shard_dir(state.out_dir, shard)
    state.summary_dir.mkdir(parents=True, exist_ok=True)


#: Arguments that may differ between the shards of one run and its merge.
_PER_PROCESS_ARGS = frozenset({"shard", "overwrite", "skip_existing", "quiet", "device"})


def _merge_shards(state: _Run) -> int:
    """Merge the summaries of ``OUTPUT/shards/*`` into ``OUTPUT/summary.json``, records in the order of one run.

    The outputs are already in place (shards write them where one run would); times are combined: ``started``
    the earliest, ``finished`` the latest, ``timings`` summed over shards (process time).

    Raises:
        ValueError: a shard is missing, unfinished or was run with other arguments; an output a shard reported is
            missing; the shards' items are not those of the inputs.
    """
    from anydepth.data.inputs import expand_inputs
    from anydepth.shard import check_arguments, finished_shards, merge_rows, shard_info

    args = state.args
    # as the shards recorded them (JSON: tuples are lists)
    mine = json.loads(json.dumps({k: v for k, v in vars(args).items() if k != "func"}, default=_json_default))
    summaries = []
    for s, d in finished_shards(state.out_dir):
        path = d / str(shard_info(d).get("summary", "summary.json"))
        summary = json.loads(path.read_text(encoding="utf-8"))
        check_arguments(mine, summary.get("args", {}), ignore=_PER_PROCESS_ARGS, where=f"{d} (shard {s})")
        summaries.append(summary)
    items, _ = expand_inputs(list(args.inputs) + list(args.extra_inputs), exclude=[state.out_dir])
    order = [str(it.path) for it in items if it.kind == "image"] + [
        str(it.path) for it in items if it.kind == "video"
    ]
    wanted = set(order)
    records = [r for r in summaries[0]["inputs"] if r["input"] not in wanted]  # input errors, in every shard
    records += merge_rows(
        [[r for r in s["inputs"] if r["input"] in wanted] for s in summaries],
        key=lambda r: r["input"],
        order=order,
    )
    for r in records:
        if r.get("status") in ("ok", "skipped"):
            for p in r.get("outputs", []):
                if not Path(p).exists():
                    raise ValueError(f"merging shards: {p} (an output of {r['input']}) is missing")
    failures = [
        {"input": r["input"], "reason": r.get("reason", "")} for r in records if r.get("status") == "failed"
    ]
    timings = {
        k: round(sum(float(s["timings"][k]) for s in summaries), 4)
        for k in ("total_s", "model_load_s", "forward_s")
    }
    done = {k: sum(int(s["timings"][k]) for s in summaries) for k in ("images", "video_frames")}
    busy = max(timings["total_s"] - timings["model_load_s"], 1e-9)
    timings.update(
        done, items_per_s=round((done["images"] + done["video_frames"]) / busy, 3), shards=len(summaries)
    )
    n_ok = sum(r.get("status") == "ok" for r in records)
    n_skip = sum(r.get("status") == "skipped" for r in records)
    summary = {
        **summaries[0],
        "args": mine,
        "started": min(s["started"] for s in summaries),
        "finished": max(s["finished"] for s in summaries),
        "counts": {"ok": n_ok, "skipped": n_skip, "failed": len(failures)},
        "nonfinite_written": sum(int(s.get("nonfinite_written", 0)) for s in summaries),
        "interrupted": [r for s in summaries for r in s.get("interrupted", [])],  # empty: shards finished
        "timings": timings,
        "inputs": records,
        "failures": failures,
    }
    _write_summary(state, summary)
    if not args.quiet or failures:
        print(
            f"anydepth infer: merged {len(summaries)} shards: {n_ok} done, {n_skip} skipped, {len(failures)} failed "
            f"-> {summary['summary_path']}",
            file=sys.stderr if failures else sys.stdout,
        )
    return 1 if failures else 0


def _validate(args: argparse.Namespace) -> None:
    from anydepth.ops.colormap import colormap_lut

    colormap_lut(args.colormap)  # validate early (KeyError lists the choices)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.frame_stride < 1:
        raise ValueError(f"--frame-stride must be >= 1, got {args.frame_stride}")
    if not 0.0 <= args.video_ema < 1.0:
        raise ValueError(f"--video-ema must be in [0, 1), got {args.video_ema}")
    if not 0.0 <= args.video_smooth < 1.0:
        raise ValueError(f"--video-smooth must be in [0, 1), got {args.video_smooth}")
    if args.video_smooth > 0 and args.video_align != "temporal":
        raise ValueError(
            "--video-smooth works on aligned frames; it needs --video-align temporal (the default)"
        )
    near, far = args.nominal_range
    if not 0 < near < far:
        raise ValueError(f"--nominal-range needs 0 < NEAR < FAR, got {near} {far}")


def _setup(state: _Run) -> _Plan:
    """Phase 1: validate the arguments, expand the inputs, check ``--align-to``, build the runner."""
    from anydepth.data.inputs import expand_inputs
    from anydepth.inference import Resolution

    args = state.args
    _validate(args)
    resolution = Resolution.parse(args.size)
    near, far = args.nominal_range
    k_dict = _load_intrinsics_arg(args.intrinsics)
    specs = list(args.inputs) + list(args.extra_inputs)
    if not specs:
        raise ValueError("no inputs: give image/video files, directories, globs or list files")

    items, input_errors = expand_inputs(specs, exclude=[state.out_dir])
    for e in input_errors:
        state.fail(e.where, e.reason)
    align_path = Path(args.align_to) if args.align_to else None
    if align_path is not None:
        if not align_path.exists():
            raise FileNotFoundError(f"--align-to: no such file or directory: {align_path}")
        if align_path.is_file() and len(items) != 1:
            raise ValueError(
                f"--align-to {align_path} is a single file: it needs exactly one image or video input (got "
                f"{len(items)} inputs); pass a directory of reference depth maps named like the inputs instead"
            )

    t0 = time.perf_counter()
    runner, model_info = _make_runner(args)
    model_load_s = time.perf_counter() - t0
    if "ply" in state.saves and align_path is None:
        log.warning(
            "point clouds will NOT be metric: the prediction is affine-invariant disparity, mapped to the nominal "
            "depth range [%g, %g] (arbitrary units); pass --align-to with metric depth for metric clouds",
            near,
            far,
        )

    images = [it for it in items if it.kind == "image"]
    videos = [it for it in items if it.kind == "video"]
    if align_path is not None and videos and args.video_align != "temporal":
        log.warning(
            "--align-to anchors videos only with --video-align temporal; %d video(s) get nominal depth",
            len(videos),
        )
    common = dict(
        resolution=resolution,
        batch_size=args.batch_size,
        flip_tta=args.tta,
        fov_deg=args.fov,
        default_fov_deg=args.default_fov,
        nominal_range=(near, far),
    )
    return _Plan(
        specs, images, videos, resolution, (near, far), k_dict, align_path, runner, model_info, model_load_s,
        common,
    )  # fmt: skip


def _image_phase(state: _Run, plan: _Plan) -> None:
    """Phase 2: every image through one ``predict_iter`` stream (batched), outputs written per prediction."""
    from tqdm import tqdm

    from anydepth.data.inputs import read_exif_focal_35mm
    from anydepth.data.io import read_depth, read_image
    from anydepth.inference import PredictItem, predict_iter
    from anydepth.ops.geometry import intrinsics_from_dict

    args, saves, images, metric = state.args, state.saves, plan.images, plan.metric
    k_dict, align_path, runner, common = plan.k_dict, plan.align_path, plan.runner, plan.common
    bar = tqdm(
        total=len(images), unit="img", desc="images", disable=args.quiet or not images, file=sys.stderr
    )

    def image_items() -> Any:
        for it in images:
            rec: dict[str, Any] = {"input": str(it.path), "kind": "image"}
            state.records.append(rec)
            outs = _outputs_for_image(state.out_dir, it.rel, saves, metric)
            state.planned[rec["input"]] = list(outs.values())
            status, reason = _existing_status(outs, args)
            if status == "skip":
                rec.update(status="skipped", reason=reason, outputs=[str(p) for p in outs.values()])
                bar.update(1)
                continue
            if status == "conflict":
                state.fail(str(it.path), reason, rec)
                bar.update(1)
                continue
            try:
                rgb = read_image(it.path)
                h, w = rgb.shape[:2]
                k = intrinsics_from_dict(k_dict, h, w) if k_dict is not None else None
                ref = None
                if align_path is not None:
                    ref_file = align_path if align_path.is_file() else _find_reference(align_path, it.rel)
                    ref = read_depth(ref_file, scale=args.align_scale)
                    rec["reference"] = str(ref_file)
                f35 = read_exif_focal_35mm(it.path)
            except (OSError, ValueError, KeyError) as e:
                state.fail(str(it.path), str(e), rec)
                bar.update(1)
                continue
            yield PredictItem(
                rgb, intrinsics=k, focal_35mm=f35, meta={"rec": rec, "outs": outs, "rgb": rgb, "ref": ref}
            )

    try:
        for pred in predict_iter(runner, image_items(), compute_depth=True, **common):  # type: ignore[arg-type]
            rec = pred.meta.pop("rec")
            outs = pred.meta.pop("outs")
            rgb = pred.meta.pop("rgb")
            ref = pred.meta.pop("ref")
            state.forward_s += float(pred.meta.get("forward_s", 0.0))
            try:
                _write_image_outputs(state, pred, rgb, ref, outs, rec)
                state.images_done += 1
            except (OSError, ValueError, KeyError) as e:
                state.fail(rec["input"], str(e), rec)
            bar.update(1)
    except RuntimeError as e:  # the forward pass itself failed (e.g. out of memory): stop the image phase
        log.error("inference failed, remaining images are not processed: %s", e)
        for rec in state.records:
            if rec.get("kind") == "image" and "status" not in rec:
                state.fail(rec["input"], f"inference failed: {e}", rec)
        for it in images[len([r for r in state.records if r.get("kind") == "image"]) :]:
            state.fail(str(it.path), "not processed: inference failed on an earlier batch")
    bar.close()


def _video_phase(state: _Run, plan: _Plan) -> None:
    """Phase 3: each video frame by frame (``_run_video``), one output set per video."""
    from anydepth import __version__

    args, saves, runner, k_dict, common = state.args, state.saves, plan.runner, plan.k_dict, plan.common
    for it in plan.videos:
        rec: dict[str, Any] = {"input": str(it.path), "kind": "video"}
        state.records.append(rec)
        outs, frames_dir = _outputs_for_video(state.out_dir, it.rel, saves)
        state.planned[rec["input"]] = [*outs.values(), *([frames_dir] if frames_dir is not None else [])]
        status, reason = _existing_status(outs, args)
        if status == "skip":
            rec.update(status="skipped", reason=reason, outputs=[str(p) for p in outs.values()])
            continue
        if status == "conflict":
            state.fail(str(it.path), reason, rec)
            continue
        if (
            frames_dir is not None
            and frames_dir.is_dir()
            and any(frames_dir.iterdir())
            and not (args.overwrite or args.skip_existing)
        ):
            state.fail(str(it.path), f"output exists: {frames_dir} (use --overwrite or --skip-existing)", rec)
            continue
        try:
            _run_video(state, runner, it, outs, frames_dir, rec, k_dict, common, __version__)
        except (OSError, ValueError, KeyError, ImportError) as e:
            state.fail(str(it.path), str(e), rec)


def _finish(state: _Run, plan: _Plan, t_start: float, started: str) -> int:
    """Phase 4: the run summary (``summary.json``), the failure list and the exit status."""
    from anydepth import __version__
    from anydepth.inference import describe_runner

    args = state.args
    near, far = plan.near_far
    model_load_s = plan.model_load_s
    total_s = time.perf_counter() - t_start
    interrupted = _interrupted_inputs(state, plan) if state.interrupted else []
    n_ok = sum(r.get("status") == "ok" for r in state.records)
    n_skip = sum(r.get("status") == "skipped" for r in state.records)
    summary = {
        "anydepth_version": __version__,
        "command": "infer",
        "args": {k: v for k, v in vars(args).items() if k != "func"},
        "started": started,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": {**plan.model_info, **describe_runner(plan.runner)},
        "settings": {
            "inputs": plan.specs,
            "output": str(state.out_dir),
            "resolution": plan.resolution.describe(),
            "batch_size": args.batch_size,
            "tta": bool(args.tta),
            "save": state.saves,
            "colormap": args.colormap,
            "intrinsics": plan.k_dict,
            "fov": args.fov,
            "default_fov": args.default_fov,
            "align_to": args.align_to,
            "align_scale": args.align_scale,
            "nominal_range": [near, far],
            "max_depth": args.max_depth,
            "edge_threshold": args.edge_threshold,
            "ply_stride": args.ply_stride,
            "video_ema": args.video_ema,
            "video_smooth": args.video_smooth,
            "video_align": args.video_align,
            "frame_stride": args.frame_stride,
            "max_frames": args.max_frames,
            "overwrite": bool(args.overwrite),
            "skip_existing": bool(args.skip_existing),
        },
        "counts": {"ok": n_ok, "skipped": n_skip, "failed": len(state.failures)},
        "nonfinite_written": state.nonfinite,
        "interrupted": interrupted,
        "timings": {
            "total_s": round(total_s, 4),
            "model_load_s": round(model_load_s, 4),
            "forward_s": round(state.forward_s, 4),
            "images": state.images_done,
            "video_frames": state.frames_done,
            "items_per_s": round(
                (state.images_done + state.frames_done) / max(total_s - model_load_s, 1e-9), 3
            ),
        },
        "inputs": state.records,
        "failures": [{"input": w, "reason": r} for w, r in state.failures],
    }
    _write_summary(state, summary)

    if state.failures:
        print(
            f"anydepth infer: {len(state.failures)} input(s) failed (see {state.summary_dir}/summary*.json):",
            file=sys.stderr,
        )
        for where, reason in state.failures:
            print(f"  {where}: {reason}", file=sys.stderr)
    if state.interrupted:
        partial = [r for r in interrupted if r["partial"]]
        print(
            f"anydepth infer: interrupted: {n_ok} done, {len(partial)} partial, "
            f"{len(interrupted) - len(partial)} not started (listed in {summary.get('summary_path')}); rerun "
            "with --skip-existing to continue",
            file=sys.stderr,
        )
        for r in partial:
            print(f"  partial: {r['input']}: {len(r['partial'])} of {r['planned']} outputs", file=sys.stderr)
    elif not args.quiet:
        print(
            f"anydepth infer: {n_ok} done, {n_skip} skipped, {len(state.failures)} failed in {total_s:.1f} s "
            f"-> {state.out_dir}"
        )
    return 1 if state.failures else 0


def _interrupted_inputs(state: _Run, plan: _Plan) -> list[dict[str, Any]]:
    """After Ctrl-C: every input without a result, with the output files it already has (``partial``); those
    records get status ``interrupted``."""
    seen = {r["input"] for r in state.records}
    state.records += [
        {"input": str(it.path)} for it in [*plan.images, *plan.videos] if str(it.path) not in seen
    ]
    out = []
    for rec in state.records:
        if "status" in rec:
            continue
        planned = state.planned.get(rec["input"], [])
        partial = [str(p) for p in planned if p.exists()]
        rec.update(status="interrupted", partial=partial)
        out.append({"input": rec["input"], "partial": partial, "planned": len(planned)})
    return out


def _write_summary(state: _Run, summary: dict[str, Any]) -> None:
    from anydepth.atomic import write_json

    path = state.summary_dir / "summary.json"
    if path.exists() and not state.args.overwrite:
        # later runs get summary-<time>-<n>.json; names sort in run order (same-second runs included)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        i = 1
        path = state.summary_dir / f"summary-{stamp}-{i:03d}.json"
        while path.exists():
            i += 1
            path = state.summary_dir / f"summary-{stamp}-{i:03d}.json"
    write_json(path, summary, overwrite=bool(state.args.overwrite), nonfinite="null", default=_json_default)
    summary["summary_path"] = str(path)
    state.summary_path = path


def _check_finite(state: _Run, value: Any, rec: dict[str, Any], where: str = "") -> None:
    """A prediction with NaN/inf values fails its input (nothing is written), or, with ``--allow-nonfinite``, is
    written with the count recorded (``nonfinite_pixels``) and a warning."""
    import numpy as np

    bad = int(value.size - np.count_nonzero(np.isfinite(value)))
    if not bad:
        return
    msg = f"{where}non-finite prediction: {bad} of {value.size} values are NaN/inf (a broken model or checkpoint?)"
    if not state.args.allow_nonfinite:
        raise ValueError(msg + "; nothing written (--allow-nonfinite writes it anyway)")
    rec["nonfinite_pixels"] = bad
    state.nonfinite += 1
    log.warning("%s: %s (written: --allow-nonfinite)", rec.get("input", ""), msg)


def _write_image_outputs(
    state: _Run, pred: Any, rgb: Any, ref: Any, outs: dict[str, Path], rec: dict[str, Any]
) -> None:
    import numpy as np

    from anydepth.data.io import write_image, write_npy, write_png16
    from anydepth.inference import align_prediction, nearness
    from anydepth.ops.colormap import apply_colormap, robust_range, to_uint16

    args = state.args
    _check_finite(state, pred.value, rec)
    if ref is not None:
        pred.depth, info = align_prediction(pred.value, pred.space, ref)
        info["reference"] = rec.get("reference")
        pred.meta["depth"] = info
        pred.metric = True
    written: list[str] = []
    value = pred.value
    if "png16" in outs:
        lo, hi = robust_range(value, 0.0, 100.0)
        q = to_uint16(value, lo, hi)
        state.write_if_needed(outs["png16"], lambda ow: write_png16(outs["png16"], q, overwrite=ow), written)
        rec["png16_range"] = [lo, hi]
    if "npy" in outs:
        state.write_if_needed(outs["npy"], lambda ow: write_npy(outs["npy"], value.astype(np.float32), overwrite=ow),
                              written)  # fmt: skip
    if "npy_depth" in outs:
        d = np.asarray(pred.depth, dtype=np.float32)
        state.write_if_needed(
            outs["npy_depth"], lambda ow: write_npy(outs["npy_depth"], d, overwrite=ow), written
        )
    if "color" in outs or "side" in outs:
        near = nearness(value, pred.space)
        lo, hi = robust_range(near, 1.0, 99.0)
        color = apply_colormap(near, args.colormap, vmin=lo, vmax=hi)
        rec["color_range"] = [lo, hi]
        if "color" in outs:
            state.write_if_needed(
                outs["color"], lambda ow: write_image(outs["color"], color, overwrite=ow), written
            )
        if "side" in outs:
            side = _side_by_side(rgb, color)
            state.write_if_needed(
                outs["side"], lambda ow: write_image(outs["side"], side, overwrite=ow), written
            )
    if "ply" in outs:
        ply_info: dict[str, Any] = {}

        def _ply(ow: bool) -> None:
            ply_info.update(_write_ply_for(outs["ply"], pred, rgb, args, rec["input"], ow))

        state.write_if_needed(outs["ply"], _ply, written)
        if ply_info:
            rec["ply"] = ply_info
    k = pred.intrinsics
    rec.update(
        status="ok",
        outputs=[str(p) for p in outs.values()],
        written=written,
        space=pred.space.value,
        metric=bool(pred.metric),
        input_hw=pred.meta.get("input_hw"),
        proc_hw=pred.meta.get("proc_hw"),
        intrinsics=k.to_dict() if k is not None else None,
        intrinsics_source=pred.meta.get("intrinsics_source"),
        focal_35mm=pred.meta.get("focal_35mm"),
        depth=pred.meta.get("depth"),
        forward_s=round(float(pred.meta.get("forward_s", 0.0)), 5),
    )


def _run_video(
    state: _Run,
    runner: Any,
    it: Any,
    outs: dict[str, Path],
    frames_dir: Path | None,
    rec: dict[str, Any],
    k_dict: dict[str, float] | None,
    common: dict[str, Any],
    version: str,
) -> None:
    import contextlib
    from fractions import Fraction

    import numpy as np
    from tqdm import tqdm

    from anydepth.atomic import write_json
    from anydepth.data.io import read_depth, write_npy, write_png16
    from anydepth.data.video import VideoWriter, iter_frames, probe_video
    from anydepth.inference import PredictItem, RangeTracker, nearness, predict_iter
    from anydepth.ops.colormap import apply_colormap, to_uint16
    from anydepth.ops.geometry import intrinsics_from_dict
    from anydepth.ops.temporal import TemporalAligner

    args = state.args
    saves = state.saves
    info = probe_video(it.path)
    fps = info.fps / args.frame_stride
    h, w = info.display_size
    k = intrinsics_from_dict(k_dict, h, w) if k_dict is not None else None
    overwrite = bool(args.overwrite)
    expected = info.frames // args.frame_stride if info.frames else None
    if expected is not None and args.max_frames is not None:
        expected = min(expected, args.max_frames)
    color_tracker = RangeTracker(args.video_ema)
    value_tracker = RangeTracker(args.video_ema)
    aligner = (
        TemporalAligner(runner.output_space, smooth=args.video_smooth)
        if args.video_align == "temporal"
        else None
    )
    anchors: dict[int, np.ndarray] = {}  # output frame index -> metric depth (all read before any output)
    if aligner is not None and args.align_to:
        files = _video_anchor_files(Path(args.align_to), it.rel)
        anchors = {i: read_depth(f, scale=args.align_scale) for i, f in files.items()}
        rec["reference"] = str(files[0]) if list(files) == [0] else {str(i): str(f) for i, f in files.items()}
    frame_records: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    bar = tqdm(total=expected, unit="frame", desc=it.path.name, disable=args.quiet, file=sys.stderr)
    with contextlib.ExitStack() as stack:
        writers = {
            kind: stack.enter_context(VideoWriter(outs[kind], Fraction(fps), overwrite=overwrite))
            for kind in ("color", "side")
            if kind in outs
        }
        frames = iter_frames(it.path, stride=args.frame_stride, max_frames=args.max_frames)
        items = (PredictItem(f, intrinsics=k, meta={"frame": i, "rgb": f}) for i, f in enumerate(frames))
        for pred in predict_iter(runner, items, compute_depth="ply" in saves, **common):
            i = pred.meta.pop("frame")
            rgb = pred.meta.pop("rgb")
            state.forward_s += float(pred.meta.get("forward_s", 0.0))
            frec: dict[str, Any] = {"frame": i}
            _check_finite(state, pred.value, frec, f"frame {i}: ")
            if aligner is not None:
                al = aligner.update(pred.value, anchor_depth=anchors.get(i))
                pred.value = al.value
                frec.update(
                    scale=al.scale,
                    shift=al.shift,
                    inliers=round(al.inliers, 4),
                    restarted=al.restarted,
                    metric=al.metric,
                    anchor=i in anchors,
                )
                if al.metric and pred.space.is_disparity:
                    with np.errstate(divide="ignore"):
                        pred.depth = (1.0 / np.maximum(al.value, 1e-3)).astype(np.float32)  # at most 1000 m
                    pred.metric = True
            near = nearness(pred.value, pred.space)
            c_lo, c_hi = color_tracker.update(near)
            v_lo, v_hi = (c_lo, c_hi) if near is pred.value else value_tracker.update(pred.value)
            frec["color_range"] = [c_lo, c_hi]
            if writers:
                color = apply_colormap(near, args.colormap, vmin=c_lo, vmax=c_hi)
                if "color" in writers:
                    writers["color"].write(color)
                if "side" in writers:
                    writers["side"].write(_side_by_side(rgb, color))
            if frames_dir is not None:
                written: list[str] = []
                stem = frames_dir / f"{i:06d}"
                if "png16" in saves:
                    p16 = stem.with_name(stem.name + "_pred16.png")
                    q = to_uint16(pred.value, v_lo, v_hi)
                    state.write_if_needed(
                        p16, lambda ow, p=p16, q=q: write_png16(p, q, overwrite=ow), written
                    )
                    frec["png16_range"] = [v_lo, v_hi]
                if "npy" in saves:
                    pn = stem.with_name(stem.name + "_pred.npy")
                    v = pred.value.astype(np.float32)
                    state.write_if_needed(pn, lambda ow, p=pn, v=v: write_npy(p, v, overwrite=ow), written)
                if "ply" in saves:
                    pp = stem.with_name(stem.name + ".ply")
                    src = f"{it.path} frame {i}"
                    state.write_if_needed(
                        pp,
                        lambda ow, p=pp, pr=pred, r=rgb, s=src: _write_ply_for(p, pr, r, args, s, ow),
                        written,
                    )
            frame_records.append(frec)
            state.frames_done += 1
            bar.update(1)
    bar.close()
    if not frame_records:
        raise ValueError("the video has no decodable frames")
    used = sorted(i for i in anchors if i < len(frame_records))
    if len(used) < len(anchors):
        unused = sorted(set(anchors) - set(used))
        rec["warning"] = (
            f"reference depth for frame(s) {unused} not used: the video has {len(frame_records)} frames"
        )
        log.warning("%s: %s", it.path, rec["warning"])
    if "index" in outs:
        index = {
            "source": str(it.path),
            "fps": float(fps),
            "space": runner.output_space.value,
            "png16": "value = lo + png / 65535 * (hi - lo) with png16_range = [lo, hi] per frame",
            "values": "temporally aligned (scale, shift per frame)" if aligner is not None else "per frame",
            "frames": frame_records,
        }
        write_json(
            outs["index"], index, overwrite=overwrite or args.skip_existing, nonfinite="null", indent=1,
            default=_json_default,
        )  # fmt: skip
    elapsed = time.perf_counter() - t0
    rec.update(
        status="ok",
        outputs=[str(p) for p in outs.values()],
        frames=len(frame_records),
        fps_source=float(info.fps),
        fps_output=float(fps),
        frame_hw=[h, w],
        rotation=info.rotation,
        normalisation=(
            "temporal alignment (ops.temporal)" + (f", metric anchor on {_frame_list(used)}" if used else "")
            if aligner is not None
            else "per frame"
        )
        + f"; colour range: EMA of per-frame 1st/99th percentiles, momentum {args.video_ema}",
        time_s=round(elapsed, 3),
        frames_per_s=round(len(frame_records) / max(elapsed, 1e-9), 3),
        version=version,
    )
