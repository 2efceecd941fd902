"""Atomic file writing (base layer: stdlib only), shared by every module that writes files."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path"]


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
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
