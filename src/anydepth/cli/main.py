"""``anydepth`` entry point: argparse subcommands, each in its own module with ``add_parser`` and ``run``.

Every command module is imported lazily-light: it defines ``add_parser(subparsers)`` and ``run(args) -> int``
and imports heavy modules (torch, onnx, ...) inside ``run`` so ``anydepth --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

# (command name, module). Add a line here when adding ``anydepth/cli/<name>.py``.
_COMMANDS: tuple[tuple[str, str], ...] = (
    ("models", "anydepth.cli.models"),
    ("convert", "anydepth.cli.convert"),
    ("infer", "anydepth.cli.infer"),
    ("live", "anydepth.cli.live"),
    ("filter", "anydepth.cli.filter"),
    ("eval", "anydepth.cli.evaluate"),
    ("compare", "anydepth.cli.compare"),
    ("figure", "anydepth.cli.figure"),
    ("train", "anydepth.cli.train"),
    ("serve", "anydepth.cli.serve"),
    ("demo", "anydepth.cli.demo"),
    ("bench", "anydepth.cli.bench"),
    ("export", "anydepth.cli.export"),
    ("download", "anydepth.cli.download"),
    ("push", "anydepth.cli.push"),
)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subparser per command."""
    from anydepth import __version__

    parser = argparse.ArgumentParser(
        prog="anydepth",
        description="AnyDepth: monocular depth with a frozen DINO encoder and the SDT decoder.",
    )
    parser.add_argument("--version", action="version", version=f"anydepth {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for _name, module in _COMMANDS:
        importlib.import_module(module).add_parser(sub)
    return parser


def _apply_pixel_limit() -> None:
    """Let Pillow decode what ``ANYDEPTH_MAX_IMAGE_PIXELS`` allows (the CLI owns the process's global state)."""
    import os

    from anydepth.data.io import MAX_PIXELS_ENV, max_image_pixels

    if os.environ.get(MAX_PIXELS_ENV, "").strip():
        from PIL import Image

        limit = max_image_pixels()  # validates the variable
        Image.MAX_IMAGE_PIXELS = None if limit is None else max(limit, Image.MAX_IMAGE_PIXELS or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv`` (defaults to ``sys.argv[1:]``); returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    level = logging.WARNING if args.verbose == 0 else logging.INFO if args.verbose == 1 else logging.DEBUG
    if getattr(args, "quiet", False):
        level = logging.ERROR
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        _apply_pixel_limit()
        return int(args.func(args) or 0)
    except (ValueError, KeyError, FileNotFoundError, NotADirectoryError, FileExistsError, ImportError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"anydepth {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
