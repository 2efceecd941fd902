"""``anydepth compare``: print several ``anydepth eval`` results side by side (paper-style markdown table), or
with ``--visual`` compare models visually (``anydepth figure``: figure grid, point clouds, quality table).

Example::

    anydepth compare runs/eval_vits runs/eval_vitb/metrics.json --metrics abs_rel,delta1
    anydepth compare --visual --model a=ckpt_a.safetensors --model b=sdt_test --rgbd DIR -o runs/fig
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _csv(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="compare evaluation results side by side",
        description="Print several metrics.json files (or the directories holding them) as one markdown table: "
        "one row per result, one column per benchmark, AbsRel and delta metrics x100.",
    )
    p.add_argument(
        "results", nargs="*", type=Path, metavar="RESULT", help="metrics.json files or their folders"
    )
    p.add_argument(
        "--metrics",
        type=_csv,
        default=["abs_rel", "delta1"],
        help="comma-separated metrics per cell (default abs_rel,delta1); e.g. abs_rel,delta1,rmse,silog",
    )
    p.add_argument(
        "--benchmarks", type=_csv, default=None, help="comma-separated columns (default: all present)"
    )
    p.add_argument(
        "--labels", type=_csv, default=None, help="comma-separated row labels (default: each label)"
    )
    p.add_argument("--digits", type=int, default=1, help="decimals (default 1, as in the paper)")
    from anydepth.cli.figure import add_arguments

    p.add_argument(
        "--visual",
        action="store_true",
        help="compare models visually instead (anydepth figure; options below, no RESULT)",
    )
    add_arguments(p.add_argument_group("visual comparison (--visual)"), output_required=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.visual:
        if args.results:
            raise ValueError(
                "--visual compares models (--model ...), not metrics files: drop the RESULT arguments"
            )
        from anydepth.cli import figure

        return figure.run(args)
    if not args.results:
        raise ValueError("give metrics.json files or folders (or --visual with --model ...)")
    from anydepth.eval.report import compare_table, load_result

    docs = [load_result(r) for r in args.results]
    print(
        compare_table(
            docs, labels=args.labels, benchmarks=args.benchmarks, metrics=args.metrics, digits=args.digits
        ),
        end="",
    )
    return 0
