"""Binary little-endian PLY point clouds (xyz float32 + rgb uint8), written atomically, and a reader for tests.

Format written (``binary_little_endian 1.0``)::

    ply
    format binary_little_endian 1.0
    comment <one line per comment>
    element vertex N
    property float x
    property float y
    property float z
    property uchar red        (only with colours)
    property uchar green
    property uchar blue
    end_header
    <N records of 15 bytes (12 without colours)>

Coordinates are in the OpenCV camera frame (x right, y down, z forward) in the unit of the depth they came from;
``comment`` lines state that unit and whether it is metric.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from anydepth.atomic import atomic_path

__all__ = ["write_ply", "read_ply"]

PathLike = str | os.PathLike[str]

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip


def write_ply(
    path: PathLike,
    points: np.ndarray,
    colors: np.ndarray | None = None,
    *,
    comments: list[str] | tuple[str, ...] = (),
    overwrite: bool = False,
) -> Path:
    """Write a point cloud as a binary little-endian PLY file (atomically).

    Args:
        path: destination ``.ply`` file.
        points: ``[N, 3]`` float coordinates (stored as float32).
        colors: optional ``[N, 3]`` uint8 RGB.
        comments: header comment lines (no newlines).
        overwrite: replace an existing file (default: refuse with ``FileExistsError``).

    Returns:
        The path written.
    """
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"write_ply: points must be [N, 3], got shape {pts.shape}")
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    props = ["property float x", "property float y", "property float z"]
    if colors is not None:
        col = np.asarray(colors)
        if col.shape != pts.shape or col.dtype != np.uint8:
            raise ValueError(
                f"write_ply: colors must be uint8 [N, 3] like points, got {col.dtype} {col.shape}"
            )
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
        props += ["property uchar red", "property uchar green", "property uchar blue"]
    rec = np.empty(len(pts), dtype=np.dtype(fields))
    rec["x"], rec["y"], rec["z"] = pts[:, 0], pts[:, 1], pts[:, 2]
    if colors is not None:
        rec["red"], rec["green"], rec["blue"] = col[:, 0], col[:, 1], col[:, 2]
    for c in comments:
        if "\n" in c or "\r" in c:
            raise ValueError(f"write_ply: comment lines cannot contain newlines: {c!r}")
    header = ["ply", "format binary_little_endian 1.0"]
    header += [f"comment {c}" for c in comments]
    header += [f"element vertex {len(pts)}", *props, "end_header"]
    with atomic_path(path, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as f:
            f.write(("\n".join(header) + "\n").encode("ascii"))
            f.write(rec.tobytes())
    return Path(path)


def read_ply(path: PathLike) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """Read a PLY file with a single ``vertex`` element (binary little/big endian or ASCII).

    Returns:
        ``(points [N,3] float32, colors [N,3] uint8 or None, comments)``.

    Raises:
        FileNotFoundError: no such file. ValueError: not a PLY file, or a layout this reader does not handle.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"PLY file not found: {p}")
    data = p.read_bytes()
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise ValueError(f"{p}: not a PLY file (missing 'ply' magic or 'end_header')")
    nl = data.find(b"\n", end)
    header = data[:end].decode("ascii", errors="replace").splitlines()
    body = data[nl + 1 :]
    fmt, count, comments = "", -1, []
    props: list[tuple[str, str]] = []
    element = None
    for line in header[1:]:
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "format":
            fmt = parts[1]
        elif parts[0] == "comment":
            comments.append(line[len("comment ") :])
        elif parts[0] == "element":
            element = parts[1]
            if element != "vertex":
                raise ValueError(f"{p}: only a single 'vertex' element is supported, found {element!r}")
            count = int(parts[2])
        elif parts[0] == "property" and element == "vertex":
            if parts[1] == "list":
                raise ValueError(f"{p}: list properties are not supported")
            if parts[1] not in _PLY_TYPES:
                raise ValueError(f"{p}: unknown PLY property type {parts[1]!r}")
            props.append((parts[2], _PLY_TYPES[parts[1]]))
    if count < 0:
        raise ValueError(f"{p}: no vertex element")
    names = [n for n, _ in props]
    if not {"x", "y", "z"} <= set(names):
        raise ValueError(f"{p}: vertex element lacks x, y, z (has {names})")
    if fmt == "ascii":
        rows = body.decode("ascii").split("\n")[:count]
        table = np.array([r.split() for r in rows], dtype=np.float64).reshape(count, len(props))
        rec = {n: table[:, i] for i, n in enumerate(names)}
    elif fmt in ("binary_little_endian", "binary_big_endian"):
        order = "<" if fmt == "binary_little_endian" else ">"
        dt = np.dtype([(n, order + t) for n, t in props])
        if len(body) < count * dt.itemsize:
            raise ValueError(
                f"{p}: truncated ({len(body)} bytes for {count} vertices of {dt.itemsize} bytes)"
            )
        arr = np.frombuffer(body, dtype=dt, count=count)
        rec = {n: arr[n] for n in names}
    else:
        raise ValueError(f"{p}: unknown PLY format {fmt!r}")
    pts = np.stack([rec["x"], rec["y"], rec["z"]], axis=1).astype(np.float32)
    cols = None
    if {"red", "green", "blue"} <= set(names):
        cols = np.stack([rec["red"], rec["green"], rec["blue"]], axis=1).astype(np.uint8)
    return pts, cols, comments
