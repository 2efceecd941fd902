"""Atomic file writing and strict JSON (base layer: stdlib only), shared by every module that writes files.

Every JSON file the project writes goes through ``json_text`` / ``write_json``: strict JSON (RFC 8259), never the
bare ``NaN`` / ``Infinity`` tokens Python's ``json`` emits by default. A non-finite number is either an error
naming its key path (``nonfinite="error"``, for configs and metadata) or written as ``null`` (``nonfinite="null"``,
for reports whose statistics may be undefined, e.g. the mean of nothing).
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

__all__ = ["atomic_path", "json_text", "write_json", "NonFinite"]

#: what ``json_text`` does with NaN / inf: raise ``ValueError`` naming the key path, or write ``null``
NonFinite = Literal["error", "null"]


_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; when the block succeeds it is renamed onto ``path``.

    An interrupted or failing write never leaves a partial file at ``path``.

    Args:
        path: final destination. Parent directories are created.
        overwrite: if False (default) and ``path`` exists, raise ``FileExistsError`` (user data is never replaced
            unless asked).

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        OSError: writing failed; a full disk (or quota) gives ``disk full writing <path>``.
    """
    dst = Path(path)
    if dst.exists() and not overwrite:
        raise FileExistsError(f"{dst} already exists (refusing to overwrite; use the overwrite option)")
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp" + dst.suffix, dir=dst.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600 files; give the result the permissions a plain open() would (0666 & ~umask)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, dst)
    except OSError as e:
        if e.errno in _DISK_FULL:  # "No space left on device" names no file: name the one being written
            raise OSError(e.errno, f"disk full writing {dst}") from None
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _nonfinite_path(obj: Any, path: str = "$") -> str | None:
    """The key path (``$.a[2].b``) of the first non-finite float in ``obj``, None if there is none."""
    if isinstance(obj, float):
        return None if math.isfinite(obj) else path
    if isinstance(obj, dict):
        for k, v in obj.items():
            if (found := _nonfinite_path(v, f"{path}.{k}")) is not None:
                return found
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            if (found := _nonfinite_path(v, f"{path}[{i}]")) is not None:
                return found
    return None


def _nulled(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _nulled(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_nulled(v) for v in obj]
    return obj


def json_text(
    obj: Any,
    *,
    nonfinite: NonFinite = "error",
    indent: int | None = None,
    sort_keys: bool = False,
    default: Callable[[Any], Any] | None = None,
) -> str:
    """``obj`` as strict JSON text (no ``NaN`` / ``Infinity`` tokens; see the module docstring).

    Args:
        obj: plain data (dicts, lists, str, int, float, bool, None); other objects go through ``default``.
        nonfinite: ``"error"`` or ``"null"`` (what a NaN/inf float becomes).
        indent, sort_keys, default: as for ``json.dumps``.

    Raises:
        ValueError: a non-finite number with ``nonfinite="error"`` (names its key path), or an object JSON cannot
            represent.
    """
    if nonfinite == "null":
        obj = _nulled(obj)
    elif nonfinite != "error":
        raise ValueError(f"nonfinite must be 'error' or 'null', got {nonfinite!r}")
    try:
        return json.dumps(obj, indent=indent, sort_keys=sort_keys, default=default, allow_nan=False)
    except ValueError:
        where = _nonfinite_path(obj)
        raise ValueError(
            f"non-finite number at {where or 'a value converted by default='}: JSON has no NaN/inf"
        ) from None
    except TypeError as e:
        raise ValueError(f"cannot write as JSON: {e}") from None


def write_json(
    path: str | os.PathLike[str],
    obj: Any,
    *,
    overwrite: bool = False,
    nonfinite: NonFinite = "error",
    indent: int | None = 2,
    sort_keys: bool = False,
    default: Callable[[Any], Any] | None = None,
) -> Path:
    """Write ``obj`` as strict JSON (``json_text``, plus a final newline) to ``path`` atomically.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        ValueError: as ``json_text`` (nothing is written then).
    """
    text = json_text(obj, nonfinite=nonfinite, indent=indent, sort_keys=sort_keys, default=default) + "\n"
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
