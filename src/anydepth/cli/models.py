"""``anydepth models``: list the registered model presets with their parameter counts."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list model presets", description="List model presets.")
    p.add_argument("pattern", nargs="?", default=None, help="glob pattern on preset names, e.g. 'sdt_*'")
    p.add_argument(
        "--params", action="store_true", help="build each preset (random init) and count parameters"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import anydepth

    names = anydepth.list_models(args.pattern)
    if not names:
        print(f"no preset matches {args.pattern!r}")
        return 1
    if not args.params:
        for n in names:
            print(n)
        return 0
    from anydepth.models.factory import count_parameters

    print(f"{'preset':<28} {'encoder':>14} {'decoder':>14} {'total':>14}")
    for n in names:
        c = count_parameters(n)
        print(f"{n:<28} {c['encoder']:>14,} {c['decoder']:>14,} {c['total']:>14,}")
    return 0
