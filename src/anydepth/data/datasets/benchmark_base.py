"""Shared machinery of the zero-shot *evaluation* set readers (NYUv2, KITTI, ETH3D, ScanNet, DIODE).

The readers consume the data exactly as Marigold's evaluation preparation ships it: one archive per benchmark
(``nyu_labeled_extracted.tar``, ``kitti_eigen_split_test.tar``, ``eth3d.tar``, ``scannet_val_sampled_800_1.tar``,
``diode_val.tar``), either extracted into a directory or read directly from the (uncompressed) tar, plus
Marigold's split list (``data_split/<dataset>/...txt``), whose paths are relative to the archive root.

``root`` may be:

* the extracted directory (the list's paths exist below it);
* the ``.tar`` file itself (members are read on demand; Marigold's tars name members ``./<path>``);
* a directory that holds the tar but no extracted sub-directories (Marigold's ``BASE_DATA_DIR/<dataset>/``).

The split list is, in order of preference: ``split_file`` if given; a file named like Marigold's list found in
``root`` (or next to the tar); otherwise the samples are discovered by scanning the layout (``scan``), sorted by
path. The source of the list is recorded in ``split_source`` so results say which samples were scored.

Images are decoded with Pillow *without* applying EXIF orientation: the ground truth is registered to the stored
pixel grid (Marigold reads ``np.asarray(Image.open(...))`` the same way).
"""

from __future__ import annotations

import hashlib
import io as _stdio
import logging
import os
import re
import tarfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

import numpy as np

from anydepth.data.datasets.base import DepthDataset, read_pair_list

__all__ = [
    "BenchmarkDataset",
    "DataSource",
    "DirSource",
    "TarSource",
    "open_source",
    "decode_rgb",
    "decode_png16",
]

logger = logging.getLogger(__name__)


class DataSource:
    """Read-only access to files by their relative POSIX path (a directory or a tar archive)."""

    location: Path

    def read_bytes(self, rel: str) -> bytes:
        """The bytes of ``rel``. Raises ``FileNotFoundError`` naming the full location."""
        raise NotImplementedError

    def exists(self, rel: str) -> bool:
        raise NotImplementedError

    def list_files(self) -> list[str]:
        """All file paths (relative, POSIX, no ``./`` prefix)."""
        raise NotImplementedError

    def describe(self, rel: str) -> str:
        """Human-readable location of ``rel`` for error messages."""
        raise NotImplementedError

    @property
    def kind(self) -> str:
        raise NotImplementedError


class DirSource(DataSource):
    """Files below a directory."""

    def __init__(self, root: Path) -> None:
        self.location = Path(root)

    @property
    def kind(self) -> str:
        return "dir"

    def describe(self, rel: str) -> str:
        return str(self.location / rel)

    def exists(self, rel: str) -> bool:
        return (self.location / rel).is_file()

    def read_bytes(self, rel: str) -> bytes:
        p = self.location / rel
        if not p.is_file():
            raise FileNotFoundError(f"file not found: {p}")
        return p.read_bytes()

    def list_files(self) -> list[str]:
        out: list[str] = []
        for dirpath, _dirs, files in os.walk(self.location):
            rel_dir = Path(dirpath).relative_to(self.location)
            out += [(rel_dir / f).as_posix() for f in files]
        return out


class TarSource(DataSource):
    """Members of an (ideally uncompressed) tar archive, indexed once on first use."""

    def __init__(self, path: Path) -> None:
        self.location = Path(path)
        self._tar: tarfile.TarFile | None = None
        self._index: dict[str, tarfile.TarInfo] | None = None

    @property
    def kind(self) -> str:
        return "tar"

    def describe(self, rel: str) -> str:
        return f"{self.location}:{rel}"

    def _members(self) -> dict[str, tarfile.TarInfo]:
        if self._index is None:
            try:
                self._tar = tarfile.open(self.location, "r:*")
                self._index = {
                    m.name[2:] if m.name.startswith("./") else m.name: m
                    for m in self._tar.getmembers()
                    if m.isfile()
                }
            except (tarfile.TarError, OSError) as e:
                raise ValueError(f"cannot read tar archive {self.location}: {e}") from e
        return self._index

    def exists(self, rel: str) -> bool:
        return rel in self._members()

    def read_bytes(self, rel: str) -> bytes:
        info = self._members().get(rel)
        if info is None:
            raise FileNotFoundError(f"file not found: {self.describe(rel)}")
        assert self._tar is not None
        f = self._tar.extractfile(info)
        if f is None:  # pragma: no cover - only for non-regular members, filtered above
            raise FileNotFoundError(f"not a regular file: {self.describe(rel)}")
        return f.read()

    def list_files(self) -> list[str]:
        return list(self._members())

    def __getstate__(self) -> dict[str, Any]:  # picklable for DataLoader workers: reopen lazily
        return {"location": self.location, "_tar": None, "_index": None}


def open_source(root: str | os.PathLike[str], archive_name: str | None = None) -> DataSource:
    """Pick how to read a benchmark at ``root`` (see the module docstring).

    Raises:
        FileNotFoundError: ``root`` does not exist.
    """
    r = Path(root)
    if r.is_file():
        return TarSource(r)
    if not r.is_dir():
        raise FileNotFoundError(f"benchmark data not found: {r} (expected a directory or a .tar archive)")
    if archive_name and (r / archive_name).is_file():
        has_subdirs = any(c.is_dir() for c in r.iterdir())
        if not has_subdirs:
            return TarSource(r / archive_name)
    return DirSource(r)


def decode_rgb(data: bytes, where: str) -> np.ndarray:
    """Decode image bytes to uint8 RGB ``[H,W,3]`` (no EXIF rotation). Raises ``ValueError`` naming ``where``."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(_stdio.BytesIO(data)) as im:
            im.load()
            rgb = im if im.mode == "RGB" else im.convert("RGB")
            return np.array(rgb, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"cannot decode image {where}: {e}") from e


def decode_png16(data: bytes, where: str) -> np.ndarray:
    """Decode a single-channel 8/16-bit PNG to a uint16 ``[H,W]`` array of raw values."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(_stdio.BytesIO(data)) as im:
            im.load()
            if im.mode not in ("I;16", "I;16B", "I;16L", "I", "L"):
                raise ValueError(f"expected a single-channel 16-bit PNG, got mode {im.mode!r}")
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"cannot decode depth PNG {where}: {e}") from e
    if arr.ndim != 2:
        raise ValueError(f"{where}: expected a single-channel image, got shape {arr.shape}")
    return arr.astype(np.uint16)


def decode_npy(data: bytes, where: str) -> np.ndarray:
    """Load ``.npy`` bytes (never unpickles). Raises ``ValueError`` naming ``where``."""
    try:
        return np.load(_stdio.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"cannot read .npy {where}: {e}") from e


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class BenchmarkDataset(DepthDataset):
    """Base class of the evaluation-set readers (one subclass per benchmark dataset).

    Class attributes (set by subclasses):
        official_list: path of the split list in Marigold's repository (its basename is looked up in ``root``).
        archive_name: file name of Marigold's evaluation tar.
        expected_count: number of samples the official split scores (e.g. 654 for NYUv2).
        scan_pattern: regular expression on relative RGB paths used when no list is available.
        marigold_pred_prefix_mode: how Marigold names prediction files (``"id"`` or ``"rgb_id"``).

    Args:
        root: extracted directory, tar file, or directory holding the tar.
        split_file: Marigold-format list (columns: rgb, depth, and dataset-specific extras). None = discover.
        pairs: explicit rows instead of a list (each ``(rgb, depth, ...)``), mainly for tests.

    Attributes:
        source: the ``DataSource`` files are read from.
        split_source: ``"list:<path>"``, ``"pairs"`` or ``"scan:<location>"``.
        split_sha256: sha256 of the list file (None when scanned).
    """

    official_list: ClassVar[str] = ""
    archive_name: ClassVar[str] = ""
    expected_count: ClassVar[int] = 0
    scan_pattern: ClassVar[str] = ""
    marigold_pred_prefix_mode: ClassVar[str] = "id"
    min_list_columns: ClassVar[int] = 2

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        split_file: str | os.PathLike[str] | None = None,
        pairs: Sequence[Sequence[str]] | None = None,
    ) -> None:
        super().__init__(root, pairs=[])
        self.source = open_source(root, self.archive_name)
        self.root = Path(root)
        self.split_file: Path | None = None
        self.split_sha256: str | None = None
        if pairs is not None and split_file is not None:
            raise ValueError(f"{type(self).__name__}: give pairs or split_file, not both")
        if pairs is not None:
            rows = [list(p) for p in pairs]
            self.split_source = "pairs"
        else:
            list_path = Path(split_file) if split_file is not None else self._find_list()
            if list_path is not None:
                rows = read_pair_list(list_path, min_columns=self.min_list_columns)
                self.split_file = list_path
                self.split_source = f"list:{list_path}"
                self.split_sha256 = _sha256(list_path)
            else:
                rows = self.scan(self.source.list_files())
                self.split_source = f"scan:{self.source.location}"
                if not rows:
                    raise FileNotFoundError(
                        f"{self.name}: no samples found in {self.source.location} (expected Marigold's layout, "
                        f"e.g. from {self.archive_name}, or pass a split list)"
                    )
        self.rows = self.filter_rows(rows)

    @property
    def expected_num_samples(self) -> int:
        """Number of samples the official split scores (for the selected subset, where a reader has subsets)."""
        return self.expected_count

    # -- list discovery ----------------------------------------------------------------------------------
    def _find_list(self) -> Path | None:
        if not self.official_list:
            return None
        base = PurePosixPath(self.official_list).name
        loc = self.source.location
        candidates = [loc / base] if loc.is_dir() else [loc.parent / base]
        if self.root.is_dir():
            candidates.append(self.root / base)
        for c in candidates:
            if c.is_file():
                return c
        return None

    @classmethod
    def scan(cls, files: Sequence[str]) -> list[list[str]]:
        """Build rows from the relative file paths of the layout (sorted by RGB path)."""
        rx = re.compile(cls.scan_pattern)
        fileset = set(files)
        rows = []
        for f in sorted(files):
            m = rx.fullmatch(f)
            if m:
                row = cls.row_from_match(m, fileset)
                if row is not None:
                    rows.append(row)
        return rows

    @classmethod
    def row_from_match(cls, m: re.Match[str], files: set[str]) -> list[str] | None:
        """One row for a matching RGB path (subclasses); None to skip the image."""
        raise NotImplementedError

    def filter_rows(self, rows: list[list[str]]) -> list[list[str]]:
        """Drop rows that the protocol does not score (KITTI: GT ``None``)."""
        return rows

    # -- reading -----------------------------------------------------------------------------------------
    def paths(self, i: int) -> tuple[Path, Path]:
        """Locations of sample ``i`` (for a tar: ``archive.tar/<member>``; for messages only)."""
        a, b = self.pair(i)
        return self.source.location / a, self.source.location / b

    def describe(self, rel: str) -> str:
        """Readable location of a relative path in this dataset."""
        return self.source.describe(rel)

    def read(self, rel: str) -> bytes:
        """Bytes of a file of the dataset by its relative path."""
        return self.source.read_bytes(rel)

    def load_image(self, i: int) -> np.ndarray:
        """RGB of sample ``i`` as uint8 ``[H,W,3]`` (as stored; no EXIF rotation)."""
        rel = self.pair(i)[0]
        return decode_rgb(self.read(rel), self.describe(rel))

    def decode_depth(self, path: Path, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Decode the depth of sample ``i`` (``path`` is ignored: the row's relative path is read from the
        source). Subclasses implement ``decode_depth_bytes``."""
        rel = self.pair(i)[1]
        return self.decode_depth_bytes(self.read(rel), self.describe(rel), i)

    def decode_depth_bytes(self, data: bytes, where: str, i: int) -> tuple[np.ndarray, np.ndarray]:
        """``(depth float32 [H,W] metres, extra_invalid bool [H,W])`` from the depth file's bytes."""
        raise NotImplementedError

    def sample_name(self, i: int) -> str:
        """The sample's identifier: its RGB path relative to the dataset root."""
        return self.pair(i)[0]

    def extra(self, i: int) -> dict[str, Any]:
        return {"columns": self.rows[i][2:]} if len(self.rows[i]) > 2 else {}
