"""Shared machinery of the training-set readers: validated options, sky policies and list-path rebasing.

``ListDepthDataset`` extends ``DepthDataset`` with what every training reader needs:

* **Options.** ``Cls(root, *, split_file=None, pairs=None, **options)``. Each class declares its options and their
  defaults in ``OPTIONS``; an unknown option raises ``ValueError`` naming the valid ones. Every reader accepts
  ``min_depth``, ``max_depth`` (the far plane, 100 m by default as in the paper) and ``path_prefix``; readers
  whose format marks sky also accept ``sky_policy``.
* **Sky policy.** ``decode`` returns ``(depth, invalid, sky)``. ``load_depth`` applies the open valid interval
  ``(min_depth, max_depth)`` and then the policy: ``invalid`` (sky masked out), ``far_plane`` (sky set to
  ``max_depth`` and valid) or ``max_nonsky`` (sky set to the largest valid non-sky depth of the image and valid;
  invalid if the image has no valid pixel).
* **List paths.** Split lists may hold paths relative to ``root`` (the normal case) or absolute paths written on
  another machine, as the paper's released lists do (``/root/autodl-tmp/datasets/vkitti2/Scene20/...``). An
  absolute path that does not exist is rebased onto ``root``: an explicit ``path_prefix`` is stripped if given;
  otherwise the reader finds the fewest leading components to drop so that the rest exists under ``root`` and
  remembers that prefix for the following entries (one directory probe per distinct prefix).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

import numpy as np

from anydepth.data.datasets.base import DepthDataset

__all__ = ["ListDepthDataset", "SKY_POLICIES", "rebase_path"]

logger = logging.getLogger(__name__)

#: Valid values of the ``sky_policy`` option.
SKY_POLICIES: tuple[str, ...] = ("invalid", "far_plane", "max_nonsky")

#: Options every ``ListDepthDataset`` accepts, with their defaults.
COMMON_OPTIONS: dict[str, Any] = {"min_depth": 0.0, "max_depth": 100.0, "path_prefix": None}


def rebase_path(path: str, root: Path, prefix: str) -> Path | None:
    """``root / (path minus prefix)`` if ``path`` starts with ``prefix`` (compared on whole components)."""
    pp, pre = PurePosixPath(path.replace("\\", "/")), PurePosixPath(prefix.replace("\\", "/"))
    if pp.parts[: len(pre.parts)] != pre.parts:
        return None
    rest = pp.parts[len(pre.parts) :]
    return root.joinpath(*rest) if rest else None


class ListDepthDataset(DepthDataset):
    """A ``DepthDataset`` read from a split list, with validated options and a sky policy.

    Subclasses set ``name``, ``depth_space``, ``depth_unit``, ``OPTIONS`` (extra options with defaults), and
    implement ``decode(path, i) -> (depth float32 [H,W], invalid bool [H,W], sky bool [H,W] | None)`` and
    optionally ``intrinsics``. Class attribute ``has_sky`` enables the ``sky_policy`` option.

    Args:
        root: dataset root; relative list paths are joined to it.
        split_file: list file, one ``rgb_path depth_path`` pair per line.
        pairs: explicit ``[(rgb_path, depth_path), ...]`` instead of a list file.
        **options: the class's options (see ``options()``); unknown names raise ``ValueError``.
    """

    OPTIONS: ClassVar[dict[str, Any]] = {}
    has_sky: ClassVar[bool] = False
    default_max_depth: ClassVar[float] = 100.0
    default_sky_policy: ClassVar[str] = "invalid"

    @classmethod
    def options(cls) -> dict[str, Any]:
        """All options of this reader with their defaults."""
        opts = dict(COMMON_OPTIONS)
        opts["max_depth"] = cls.default_max_depth
        if cls.has_sky:
            opts["sky_policy"] = cls.default_sky_policy
        opts.update(cls.OPTIONS)
        return opts

    def __init__(
        self,
        root: str | os.PathLike[str] | None,
        *,
        split_file: str | os.PathLike[str] | None = None,
        pairs: Sequence[tuple[str, str]] | None = None,
        **options: Any,
    ) -> None:
        if root is None:
            raise ValueError(f"{self.name}: a dataset root directory is required")
        super().__init__(root, pairs=pairs, split_file=split_file)
        valid = self.options()
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise ValueError(
                f"{self.name}: unknown option(s) {unknown}; valid options: {', '.join(sorted(valid))}"
            )
        self.opts: dict[str, Any] = {**valid, **options}
        # Per-instance overrides of the class defaults (options).
        self.min_depth = float(self.opts["min_depth"])  # type: ignore[misc]
        self.max_depth = float(self.opts["max_depth"]) if self.opts["max_depth"] is not None else math.inf  # type: ignore[misc]
        if not (self.min_depth >= 0 and self.max_depth > self.min_depth):
            raise ValueError(
                f"{self.name}: need 0 <= min_depth < max_depth, got min_depth={self.min_depth}, "
                f"max_depth={self.max_depth}"
            )
        if self.has_sky:
            policy = self.opts["sky_policy"]
            if policy not in SKY_POLICIES:
                raise ValueError(f"{self.name}: sky_policy must be one of {SKY_POLICIES}, got {policy!r}")
            if policy == "far_plane" and not math.isfinite(self.max_depth):
                raise ValueError(f"{self.name}: sky_policy='far_plane' needs a finite max_depth")
            self.sky_policy = policy  # type: ignore[misc]
        self._prefixes: list[str] = []
        if self.opts["path_prefix"]:
            self._prefixes.append(str(self.opts["path_prefix"]))
        self.validate_options()

    def validate_options(self) -> None:
        """Hook for subclasses to check their own options (raise ``ValueError``)."""

    # -- paths -------------------------------------------------------------------------------------------
    def resolve(self, rel: str) -> Path:
        """Absolute path of a list entry (relative to ``root``, or an absolute path rebased onto ``root``)."""
        p = Path(rel)
        if not p.is_absolute():
            return self.root / p
        for pre in self._prefixes:
            r = rebase_path(rel, self.root, pre)
            if r is not None:
                return r
        if p.exists():
            return p
        parts = PurePosixPath(rel.replace("\\", "/")).parts
        for k in range(1, len(parts)):
            cand = self.root.joinpath(*parts[k:])
            if cand.exists():
                prefix = str(PurePosixPath(*parts[:k]))
                logger.info("%s: rebasing list paths: %s -> %s", self.name, prefix, self.root)
                self._prefixes.append(prefix)
                return cand
        raise FileNotFoundError(
            f"{self.name}: {rel} does not exist and no suffix of it exists under root {self.root}; "
            "check the root, or pass path_prefix=<the part of the list paths to replace by root>"
        )

    def paths(self, i: int) -> tuple[Path, Path]:
        a, b = self.pair(i)
        return self.resolve(a), self.resolve(b)

    # -- decoding ----------------------------------------------------------------------------------------
    def decode(self, path: Path, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Read the depth file: ``(depth float32 [H,W], invalid bool [H,W], sky bool [H,W] or None)``."""
        raise NotImplementedError

    def decode_depth(self, path: Path, i: int) -> tuple[np.ndarray, np.ndarray]:
        depth, invalid, sky = self.decode(path, i)
        if sky is not None:
            invalid = invalid | sky
        return depth, invalid

    def load_depth(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Depth ``float32 [H,W]`` in ``depth_unit`` (0 where invalid) and valid mask ``bool [H,W]``.

        Valid = finite, inside the open interval ``(min_depth, max_depth)``, not flagged by the format, not
        sky; then sky pixels are filled according to ``sky_policy``.
        """
        _, dpath = self.paths(i)
        depth, invalid, sky = self.decode(dpath, i)
        depth = np.asarray(depth, dtype=np.float32)
        with np.errstate(invalid="ignore"):
            valid = np.isfinite(depth) & (depth > self.min_depth) & (depth < self.max_depth) & ~invalid
        if sky is not None:
            valid &= ~sky
        out = np.where(valid, depth, np.float32(0.0)).astype(np.float32)
        if sky is not None and sky.any() and self.has_sky and self.sky_policy != "invalid":
            if self.sky_policy == "far_plane":
                fill = self.max_depth
            else:  # max_nonsky
                fill = float(out[valid].max()) if valid.any() else math.nan
            if math.isfinite(fill):
                out[sky] = fill
                valid = valid | sky
        return out, valid

    def extra(self, i: int) -> dict[str, Any]:
        row = self.rows[i]
        return {"columns": row[2:]} if len(row) > 2 else {}
