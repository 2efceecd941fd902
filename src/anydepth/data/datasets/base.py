"""``DepthDataset``: the base class of every RGB-D dataset reader (training and evaluation sets).

A dataset is an ordered list of ``(rgb_path, depth_path)`` pairs relative to a root directory (the same format as
the paper's released split lists: one ``rgb_path depth_path`` pair per line), plus a depth decoder that declares
its unit, valid range and invalid/sky handling. Subclasses set the class attributes and implement
``decode_depth``; everything else (list parsing, sample assembly) is shared.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from anydepth.data import io
from anydepth.types import DepthSpace, Intrinsics, Sample

__all__ = ["DepthDataset", "read_pair_list"]


def read_pair_list(path: str | os.PathLike[str], *, min_columns: int = 2) -> list[list[str]]:
    """Parse a split list: one sample per line, whitespace-separated columns, ``#`` comments and blanks skipped.

    Raises:
        FileNotFoundError: the list does not exist.
        ValueError: a line has fewer than ``min_columns`` columns (names the file and line number).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"split list not found: {p}")
    rows: list[list[str]] = []
    with open(p, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            s = line.strip()
            if not s or s.startswith("#"):
                continue
            cols = s.split()
            if len(cols) < min_columns:
                raise ValueError(
                    f"{p}:{lineno}: expected at least {min_columns} columns, got {len(cols)}: {s!r}"
                )
            rows.append(cols)
    return rows


class DepthDataset(torch.utils.data.Dataset):
    """Base class of RGB-D dataset readers.

    Class attributes (declared by every subclass):
        name: registry name.
        depth_space: what the decoded depth means (``DEPTH_METRIC`` for metric sets; BlendedMVS is affine).
        depth_unit: human-readable unit of the decoded depth (``"m"``).
        min_depth, max_depth: open valid interval of decoded depth; pixels outside are invalid.
        sky_policy: what happens to sky pixels: ``"invalid"`` (masked out), ``"far_plane"`` or ``"max_nonsky"``.

    Args:
        root: dataset root directory; list paths are relative to it.
        pairs: explicit ``[(rgb_rel, depth_rel), ...]``; or
        split_file: a list file with one ``rgb_path depth_path`` pair per line (extra columns kept in ``rows``).
    """

    name: ClassVar[str] = "base"
    depth_space: ClassVar[DepthSpace] = DepthSpace.DEPTH_METRIC
    depth_unit: ClassVar[str] = "m"
    min_depth: ClassVar[float] = 0.0
    max_depth: ClassVar[float] = float("inf")
    sky_policy: ClassVar[str] = "invalid"

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        pairs: Sequence[tuple[str, str]] | None = None,
        split_file: str | os.PathLike[str] | None = None,
    ) -> None:
        self.root = Path(root)
        if pairs is None and split_file is None:
            raise ValueError(f"{type(self).__name__}: give either pairs or split_file")
        if pairs is not None and split_file is not None:
            raise ValueError(f"{type(self).__name__}: give pairs or split_file, not both")
        if split_file is not None:
            self.rows = read_pair_list(split_file)
        else:
            self.rows = [list(p) for p in pairs or []]
        self.split_file = Path(split_file) if split_file is not None else None

    # -- index -------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.rows)

    def pair(self, i: int) -> tuple[str, str]:
        """Relative ``(rgb_path, depth_path)`` of sample ``i`` as written in the list."""
        r = self.rows[i]
        return r[0], r[1]

    def paths(self, i: int) -> tuple[Path, Path]:
        """Absolute ``(rgb_path, depth_path)`` of sample ``i``."""
        a, b = self.pair(i)
        return self.root / a, self.root / b

    # -- decoding ----------------------------------------------------------------------------------------
    def decode_depth(self, path: Path, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Read the depth file of sample ``i``; return ``(depth float32 [H,W], extra_invalid bool [H,W])``.

        ``depth`` is in ``depth_unit``; ``extra_invalid`` marks pixels the format itself flags (sky codes, NaN,
        file masks). Range checks against ``min_depth``/``max_depth`` are applied by ``load_depth``.
        """
        raise NotImplementedError

    def intrinsics(self, i: int, hw: tuple[int, int]) -> Intrinsics | None:
        """Camera intrinsics of sample ``i`` for an image of size ``hw``, if the format provides them."""
        return None

    def load_depth(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Decoded depth ``float32 [H,W]`` (invalid pixels set to 0) and valid mask ``bool [H,W]``."""
        _, dpath = self.paths(i)
        depth, invalid = self.decode_depth(dpath, i)
        depth = np.asarray(depth, dtype=np.float32)
        with np.errstate(invalid="ignore"):
            valid = np.isfinite(depth) & (depth > self.min_depth) & (depth < self.max_depth) & ~invalid
        depth = np.where(valid, depth, np.float32(0.0)).astype(np.float32)
        return depth, valid

    def load_image(self, i: int) -> np.ndarray:
        """RGB of sample ``i`` as uint8 ``[H,W,3]``."""
        rgb, _ = self.paths(i)
        return io.read_image(rgb)

    def load(self, i: int) -> Sample:
        """Assemble sample ``i``: image ``[3,H,W]`` in [0,1], depth ``[1,H,W]``, valid ``[1,H,W]``."""
        img = self.load_image(i)
        depth, valid = self.load_depth(i)
        if img.shape[:2] != depth.shape:
            raise ValueError(
                f"{self.paths(i)[0]}: image size {img.shape[:2]} differs from depth size {depth.shape}"
            )
        return Sample(
            image=torch.from_numpy(img).permute(2, 0, 1).float().div_(255.0),
            depth=torch.from_numpy(depth)[None],
            valid=torch.from_numpy(valid)[None],
            depth_space=self.depth_space,
            source=self.name,
            name=self.pair(i)[0],
            intrinsics=self.intrinsics(i, depth.shape),
            extra=self.extra(i),
        )

    def extra(self, i: int) -> dict[str, Any]:
        """Per-sample metadata (e.g. extra list columns); empty by default."""
        return {}

    def __getitem__(self, i: int) -> Sample:
        return self.load(i)
