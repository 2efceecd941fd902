"""``anydepth figure``: N models x M images -> comparison figure, point-cloud renders, PLY files, quality table.

Models are given with ``--model [LABEL=]SPEC`` (repeatable), where SPEC is a checkpoint file or a preset name
(presets have a random decoder: useful as the untrained baseline). Images come from ``--benchmark NAME --data-root
DIR`` (benchmark samples with ground truth), ``--rgbd DIR`` (frames with ground truth in the fixture format:
``manifest.json``) and/or ``--images`` (files, folders, globs; no ground truth). See ``anydepth.vis.figure`` for what is drawn and measured.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "figure",
        help="visual comparison of models: figure grid, point-cloud renders, PLY, point-cloud quality",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)
    p.set_defaults(func=run)


def add_arguments(p: Any, *, output_required: bool = True) -> None:
    """The figure options on parser or group ``p`` (shared with ``anydepth compare --visual``)."""
    p.add_argument("--model", dest="models", action="append", default=[], metavar="[LABEL=]SPEC",
                   help="checkpoint file or preset name, optionally labelled (repeatable, in column order)")  # fmt: skip
    p.add_argument(
        "--rgbd", metavar="DIR", help="RGB-D frames with ground truth (directory with manifest.json)"
    )
    p.add_argument("--images", nargs="+", default=[], metavar="PATH", help="images, folders or globs (no GT)")
    p.add_argument(
        "--benchmark", metavar="NAME", help="benchmark samples (nyuv2, kitti, ...; needs --data-root)"
    )
    p.add_argument("--data-root", metavar="DIR", help="the benchmark's data (directory or tar)")
    p.add_argument(
        "--indices", type=int, nargs="+", metavar="I", help="benchmark sample indices (default 0-3)"
    )
    p.add_argument("--max-images", type=int, metavar="N", help="use at most N images")
    p.add_argument("-o", "--output", required=output_required, metavar="DIR", help="output directory")
    p.add_argument("--size", default="384", metavar="SPEC", help="processing size (default short side 384)")
    from anydepth.cli.runner import add_runtime_args

    add_runtime_args(p)
    p.add_argument("--encoder-weights", metavar="FILE", help="encoder weights for decoder-only checkpoints")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")


def _parse_model(spec: str) -> tuple[str, str]:
    label, sep, target = spec.partition("=")
    if not sep:
        target = spec
        label = Path(spec).stem if Path(spec).suffix else spec
    if not label or not target:
        raise ValueError(f"--model {spec!r}: expected [LABEL=]CHECKPOINT_OR_PRESET")
    return label, target


def build_runners(args: argparse.Namespace) -> dict[str, Any]:
    """``{label: runner}`` for the ``--model`` specs (checkpoint files or preset names), each built by
    ``cli.runner.build_runner`` with the command's ``--device`` / ``--dtype`` / ``--fast``."""
    import anydepth
    from anydepth.cli.runner import build_runner

    runners: dict[str, Any] = {}
    for spec in args.models:
        label, target = _parse_model(spec)
        if label in runners:
            raise ValueError(f"--model: label {label!r} given twice (use LABEL=SPEC)")
        if Path(target).is_file():
            source = {"checkpoint": target, "model": None}
        elif target in anydepth.list_models():
            source = {"checkpoint": None, "model": target}
        else:
            raise ValueError(f"--model {spec!r}: {target!r} is neither a checkpoint file nor a preset name")
        ns = argparse.Namespace(**{**vars(args), **source})
        runners[label] = build_runner(ns).runner
    return runners


def run(args: argparse.Namespace) -> int:
    from anydepth.vis.figure import (
        compare_models,
        load_benchmark_samples,
        load_image_samples,
        load_rgbd_samples,
        write_comparison,
    )

    if not args.models:
        raise ValueError("give at least one --model (checkpoint file or preset name)")
    if not args.output:
        raise ValueError("give -o/--output DIR")
    if not args.rgbd and not args.images and not args.benchmark:
        raise ValueError("give --rgbd DIR, --benchmark NAME --data-root DIR and/or --images PATH ...")
    if bool(args.benchmark) != bool(args.data_root):
        raise ValueError("--benchmark NAME and --data-root DIR go together")
    samples = []
    if args.benchmark:
        samples += load_benchmark_samples(args.benchmark, args.data_root, indices=args.indices)
    if args.rgbd:
        samples += load_rgbd_samples(args.rgbd)
    if args.images:
        samples += load_image_samples(args.images)
    if args.max_images is not None:
        samples = samples[: args.max_images]
    runners = build_runners(args)
    comp = compare_models(runners, samples, resolution=args.size, progress=log.info)
    summary = write_comparison(comp, args.output, overwrite=args.overwrite)
    for row in summary.get("quality", []):
        log.info("%s", row)
    print(f"wrote {args.output}/figure.png, pointclouds.png, {len(summary['ply'])} PLY files")
    return 0
