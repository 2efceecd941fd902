"""Expanding user input specifications (files, directories, globs, list files, videos) into work items.

Rules (documented for users in ``docs/inference.md``):

* an existing **directory** is searched recursively for images and videos (hidden files and folders skipped,
  natural sort order); each item's output path mirrors its path below that directory;
* a **glob** pattern (``*``, ``?``, ``[...]``; ``**`` recurses) expands to the matching files; output paths
  mirror their paths below the pattern's fixed leading directory;
* a **text list** file (``.txt``/``.lst``) holds one input per line (files, directories or globs; relative
  paths are relative to the list file; blank lines and ``#`` comments ignored); relative entries keep their
  relative path for the output, absolute ones keep their file name;
* any other existing **file** is an image, or a video when its extension is a video extension; its output
  uses its file name.

Problems (missing paths, globs without matches, two inputs mapping to the same output) become ``InputError``
records rather than exceptions, so a batch job can report them and go on.
"""

from __future__ import annotations

import glob
import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Literal

from anydepth.data.video import VIDEO_EXTENSIONS

__all__ = [
    "InputItem",
    "InputError",
    "LIST_EXTENSIONS",
    "image_extensions",
    "expand_inputs",
    "read_exif_focal_35mm",
]

log = logging.getLogger(__name__)

LIST_EXTENSIONS = frozenset({".txt", ".lst"})
# Pillow registers these but cannot decode them into pixels (stubs / write-only) or they are not photos.
_NOT_IMAGES = frozenset(
    {".h5", ".hdf", ".bufr", ".grib", ".pdf", ".eps", ".ps", ".wmf", ".emf", ".mpg", ".mpeg"}
)


@dataclass(frozen=True)
class InputItem:
    """One input to process.

    Attributes:
        path: the source file.
        rel: output path stem relative to the output directory, e.g. ``sub/dir/img`` (POSIX, no extension).
        kind: ``"image"`` or ``"video"``.
        spec: the user-given specification it came from.
    """

    path: Path
    rel: PurePosixPath
    kind: Literal["image", "video"]
    spec: str


@dataclass(frozen=True)
class InputError:
    """An input that cannot be processed: ``where`` (path or spec) and ``reason``."""

    where: str
    reason: str


@lru_cache(maxsize=1)
def image_extensions() -> frozenset[str]:
    """Lower-case file extensions Pillow can open as images (``.jpg``, ``.png``, ``.tif``, ``.webp``...)."""
    from PIL import Image

    Image.init()
    readable = set(Image.OPEN)
    exts = {e.lower() for e, fmt in Image.registered_extensions().items() if fmt in readable}
    return frozenset(exts - _NOT_IMAGES - VIDEO_EXTENSIONS)


def _natural_key(s: str) -> list[object]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", s)]


def _kind(path: Path) -> Literal["image", "video"] | None:
    ext = path.suffix.lower()
    if ext in VIDEO_EXTENSIONS:
        return "video"
    if ext in image_extensions():
        return "image"
    return None


def _rel_stem(rel: PurePosixPath) -> PurePosixPath:
    return rel.with_suffix("") if rel.suffix else rel


def _is_excluded(path: Path, exclude: Sequence[Path]) -> bool:
    rp = path.resolve()
    return any(rp == e or e in rp.parents for e in exclude)


def _scan_dir(root: Path, exclude: Sequence[Path]) -> list[tuple[Path, PurePosixPath]]:
    out: list[tuple[Path, PurePosixPath]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        d = Path(dirpath)
        dirnames[:] = sorted(
            (n for n in dirnames if not n.startswith(".") and not _is_excluded(d / n, exclude)),
            key=_natural_key,
        )
        for name in sorted(filenames, key=_natural_key):
            p = d / name
            if name.startswith(".") or _kind(p) is None:
                continue
            out.append((p, PurePosixPath(p.relative_to(root).as_posix())))
    return out


def _glob_base(pattern: str) -> Path:
    parts = Path(pattern).parts
    fixed: list[str] = []
    for part in parts:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def _expand_one(
    spec: str, *, base: Path | None, exclude: Sequence[Path], depth: int
) -> tuple[list[tuple[Path, PurePosixPath, Literal["image", "video"]]], list[InputError]]:
    items: list[tuple[Path, PurePosixPath, Literal["image", "video"]]] = []
    errors: list[InputError] = []
    p = Path(spec).expanduser()
    full = p if (p.is_absolute() or base is None) else base / p
    # A relative entry of a list file keeps its relative path; anything else keeps its name.
    keep_rel = base is not None and not p.is_absolute() and ".." not in p.parts
    if full.is_dir():
        found = _scan_dir(full, exclude)
        if not found:
            errors.append(InputError(spec, "directory contains no image or video files"))
        prefix = PurePosixPath(p.as_posix()) if keep_rel else PurePosixPath()
        for f, rel in found:
            items.append((f, prefix / rel, _kind(f) or "image"))
    elif full.is_file():
        ext = full.suffix.lower()
        if ext in LIST_EXTENSIONS:
            if depth > 4:
                errors.append(InputError(spec, "list files nested too deeply (more than 4 levels)"))
                return items, errors
            try:
                lines = full.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as e:
                errors.append(InputError(spec, f"cannot read list file: {e}"))
                return items, errors
            for line in lines:
                entry = line.strip()
                if not entry or entry.startswith("#"):
                    continue
                sub_items, sub_errors = _expand_one(entry, base=full.parent, exclude=exclude, depth=depth + 1)
                items += sub_items
                errors += sub_errors
        else:
            rel = PurePosixPath(p.as_posix()) if keep_rel else PurePosixPath(full.name)
            items.append((full, rel, "video" if ext in VIDEO_EXTENSIONS else "image"))
    elif glob.has_magic(spec):
        pattern = str(full)
        gbase = _glob_base(pattern)
        matches = sorted(glob.glob(pattern, recursive=True), key=_natural_key)
        files = [Path(m) for m in matches if Path(m).is_file() and _kind(Path(m)) is not None]
        files = [f for f in files if not _is_excluded(f, exclude)]
        if not files:
            errors.append(InputError(spec, "glob pattern matches no image or video files"))
        prefix = PurePosixPath(_glob_base(spec).as_posix()) if keep_rel else PurePosixPath()
        for f in files:
            items.append((f, prefix / PurePosixPath(f.relative_to(gbase).as_posix()), _kind(f) or "image"))
    else:
        errors.append(InputError(str(full), "no such file or directory"))
    return items, errors


def expand_inputs(
    specs: Iterable[str | os.PathLike[str]], *, exclude: Iterable[str | os.PathLike[str]] = ()
) -> tuple[list[InputItem], list[InputError]]:
    """Expand input specifications into a deterministic list of work items.

    Args:
        specs: files, directories, glob patterns or ``.txt``/``.lst`` list files.
        exclude: directories never to descend into (e.g. the output directory when it lies inside an input
            directory, so a resumed run does not treat its own outputs as inputs).

    Returns:
        ``(items, errors)``: items in order (duplicates of the same file dropped) and problems found.
        Two different files that would write to the same output stem (``a/x.png`` and ``a/x.jpg``) give an
        ``InputError`` for the second one.
    """
    excl = [Path(e).resolve() for e in exclude]
    items: list[InputItem] = []
    errors: list[InputError] = []
    seen_paths: set[Path] = set()
    seen_rel: dict[PurePosixPath, Path] = {}
    for raw in specs:
        spec = os.fspath(raw)
        found, errs = _expand_one(spec, base=None, exclude=excl, depth=0)
        errors += errs
        for path, rel, kind in found:
            key = path.resolve()
            if key in seen_paths:
                continue
            seen_paths.add(key)
            stem = _rel_stem(rel)
            if stem in seen_rel:
                errors.append(
                    InputError(
                        str(path),
                        f"output name {stem} is already used by {seen_rel[stem]}; rename one of them or "
                        "process them in separate runs",
                    )
                )
                continue
            seen_rel[stem] = path
            items.append(InputItem(path=path, rel=stem, kind=kind, spec=spec))
    log.debug(
        "expanded %d input spec(s) into %d item(s), %d error(s)", len(seen_paths), len(items), len(errors)
    )
    return items, errors


def read_exif_focal_35mm(path: str | os.PathLike[str]) -> float | None:
    """The EXIF ``FocalLengthIn35mmFilm`` tag (mm) of an image, or None when absent, zero or unreadable."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            exif = im.getexif()
            value = exif.get_ifd(0x8769).get(0xA405) or exif.get(0xA405)
    except (OSError, ValueError, SyntaxError):
        return None
    try:
        f = float(value) if value is not None else 0.0
    except (TypeError, ValueError):
        return None
    return f if f > 0 else None
