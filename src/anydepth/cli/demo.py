"""``anydepth demo``: render procedural RGB-D data, train a small model on CPU, evaluate it, write a report.

Example (what ``make demo`` runs)::

    anydepth demo --output runs/demo
"""

from __future__ import annotations

import argparse

#: Where ``make demo`` (run from the repository root) finds the real RGB-D frames.
DEFAULT_FIXTURES = "../shared/fixtures/rgbd"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="train and evaluate a small model on procedural data (CPU, no downloads)",
        description="End-to-end demo: generate the procedural dataset, train a small SDT model on CPU for a time "
        "budget, evaluate it (untrained vs trained) on held-out procedural scenes and on real RGB-D frames, and "
        "write report.md with figures and a point cloud.",
    )
    p.add_argument("--output", "-o", default="runs/demo", help="output directory (default runs/demo)")
    p.add_argument(
        "--encoder",
        choices=("efficientnet", "dinov3_tiny"),
        default="efficientnet",
        help="frozen encoder: pre-trained EfficientNet-Lite0 (default) or the random tiny DINOv3",
    )
    p.add_argument("--minutes", type=float, default=4.0, help="training time budget in minutes (default 4)")
    p.add_argument(
        "--max-steps", type=int, default=0, help="cap on training steps (0 = from the time budget)"
    )
    p.add_argument("--train-scenes", type=int, default=512, help="procedural training scenes (default 512)")
    p.add_argument("--val-scenes", type=int, default=48, help="held-out procedural scenes (default 48)")
    p.add_argument("--size", type=int, default=96, help="training resolution, multiple of 16 (default 96)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--fixtures",
        default=DEFAULT_FIXTURES,
        metavar="DIR",
        help="directory of real RGB-D frames with manifest.json ('' to skip; default "
        f"{DEFAULT_FIXTURES}, relative to the working directory: the shared fixtures next to a checkout)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging
    from pathlib import Path

    from anydepth.cli.demo_app import DemoOptions, run_demo

    if args.size % 16 or args.size < 32:
        raise ValueError(f"--size must be a multiple of 16 and >= 32, got {args.size}")
    logging.getLogger("anydepth").setLevel(min(logging.getLogger().level, logging.INFO))
    opts = DemoOptions(
        output=Path(args.output),
        encoder=args.encoder,
        train_scenes=args.train_scenes,
        val_scenes=args.val_scenes,
        size=args.size,
        train_seconds=60.0 * args.minutes,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        fixtures=args.fixtures,
        progress=not args.no_progress,
    )
    res = run_demo(opts)
    s0, s1 = res.synthetic_untrained, res.synthetic_trained
    print(f"demo: trained {res.steps} steps in {res.train_seconds:.0f} s (total {res.total_seconds:.0f} s)")
    print(
        f"held-out procedural scenes: AbsRel {100 * s0['abs_rel']:.1f} -> {100 * s1['abs_rel']:.1f}, "
        f"delta1 {100 * s0['delta1']:.1f} -> {100 * s1['delta1']:.1f} (untrained -> trained)"
    )
    if "all" in res.real_trained:
        r0, r1 = res.real_untrained["all"], res.real_trained["all"]
        print(
            f"real frames ({r1['images']}): AbsRel {100 * r0['abs_rel']:.1f} -> {100 * r1['abs_rel']:.1f}, "
            f"delta1 {100 * r0['delta1']:.1f} -> {100 * r1['delta1']:.1f}"
        )
    for n in res.notes:
        print(f"note: {n}")
    print(f"report: {Path(args.output) / 'report.md'}")
    return 0
