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

``prediction_cloud`` is the one way a ``Prediction`` becomes a point cloud (``anydepth infer``, ``anydepth serve``
and the demo): depth -> masks (invalid, beyond ``max_depth``, depth edges) -> strided unprojection -> colours ->
header comments saying whether the cloud is metric. ``encode_ply`` gives the bytes (the server answers with them),
``write_ply`` writes them atomically.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from anydepth.atomic import atomic_path
from anydepth.ops.geometry import depth_edge_mask, unproject_depth
from anydepth.types import Intrinsics, Prediction

__all__ = [
    "PointCloud",
    "auto_stride",
    "cloud_from_depth",
    "prediction_cloud",
    "encode_ply",
    "write_ply",
    "read_ply",
]

PathLike = str | os.PathLike[str]

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip


@dataclass
class PointCloud:
    """A coloured point cloud and its PLY header comments.

    Attributes:
        points: ``[N,3]`` float32 camera-frame coordinates (unit of the depth).
        colors: ``[N,3]`` uint8 RGB.
        comments: PLY header comment lines (no newlines).
        stride: pixel stride per axis used.
    """

    points: np.ndarray
    colors: np.ndarray
    comments: list[str]
    stride: int


def auto_stride(h: int, w: int, max_points: int) -> int:
    """Smallest per-axis pixel stride that keeps an ``h x w`` grid at or under ``max_points`` points."""
    return max(1, math.ceil(math.sqrt(h * w / max_points)))


def cloud_from_depth(
    depth: np.ndarray,
    intrinsics: Intrinsics,
    rgb: np.ndarray,
    *,
    stride: int = 1,
    max_depth: float | None = None,
    edge_threshold: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Unproject every ``stride``-th pixel of a planar depth map, keeping valid pixels only.

    Args:
        depth: ``[H,W]`` planar depth (any unit); non-finite or <= 0 = no point.
        intrinsics: pinhole intrinsics of this ``H x W`` image (pixels).
        rgb: ``[H,W,3]`` uint8 colours.
        stride: keep every ``stride``-th pixel per axis.
        max_depth: drop points farther than this (same unit as ``depth``).
        edge_threshold: drop pixels at relative depth jumps above this (``ops.geometry.depth_edge_mask``); 0 keeps.

    Returns:
        ``(points [N,3], colors [N,3] uint8)`` in row-major pixel order.
    """
    d = np.asarray(depth, dtype=np.float32)
    ok = np.isfinite(d) & (d > 0)
    if max_depth is not None:
        ok &= d <= max_depth
    if edge_threshold > 0:
        ok &= ~depth_edge_mask(d, rtol=edge_threshold)
    pts = unproject_depth(d, intrinsics)[::stride, ::stride]
    sel = ok[::stride, ::stride]
    return pts[sel], np.asarray(rgb, dtype=np.uint8)[::stride, ::stride][sel]


def _scale_note(pred: Prediction, unaligned_hint: str) -> str:
    info = pred.meta.get("depth", {})
    if pred.metric:
        if info.get("mapping") == "aligned":
            ref = info.get("reference", "reference depth")
            return (
                f"metric: yes; units: metres; aligned to {ref} (least squares in {info.get('fit_space', '?')} "
                f"space, scale {info.get('scale', float('nan')):.6g}, shift {info.get('shift', float('nan')):.6g})"
            )
        return "metric: yes; units: metres (metric model output)"
    return (
        f"metric: NO; units: nominal (affine-invariant prediction mapped to the nominal depth range "
        f"[{info.get('near')}, {info.get('far')}]; true scale and shift unknown{unaligned_hint})"
    )


def prediction_cloud(
    pred: Prediction,
    rgb: np.ndarray,
    *,
    stride: int,
    header: Sequence[str] = (),
    max_depth: float | None = None,
    edge_threshold: float = 0.0,
    intrinsics_source: bool = True,
    unaligned_hint: str = "",
) -> PointCloud:
    """The point cloud of a prediction's depth (metric, aligned or nominal) with self-describing comments.

    Args:
        pred: a ``Prediction`` with ``depth [H,W]`` and ``intrinsics``.
        rgb: ``[H,W,3]`` uint8 image the prediction was made for.
        stride: pixel stride per axis (``auto_stride`` for a point budget).
        header: first comment lines (tool and version, source...).
        max_depth, edge_threshold: see ``cloud_from_depth``.
        intrinsics_source: name where the intrinsics came from (``pred.meta["intrinsics_source"]``).
        unaligned_hint: appended to the note of a non-metric cloud (e.g. how to get a metric one).

    Raises:
        ValueError: the prediction has no depth or no intrinsics.
    """
    if pred.depth is None or pred.intrinsics is None:
        raise ValueError("prediction_cloud needs a prediction with depth and intrinsics")
    depth = np.asarray(pred.depth, dtype=np.float32)
    k = pred.intrinsics
    points, colors = cloud_from_depth(
        depth, k, rgb, stride=stride, max_depth=max_depth, edge_threshold=edge_threshold
    )
    src = f" ({pred.meta.get('intrinsics_source')})" if intrinsics_source else ""
    comments = [
        *header,
        _scale_note(pred, unaligned_hint),
        "frame: OpenCV camera, x right, y down, z forward; pixel centres at integer coordinates",
        f"intrinsics fx {k.fx:.6f} fy {k.fy:.6f} cx {k.cx:.6f} cy {k.cy:.6f}{src} "
        f"image {depth.shape[1]}x{depth.shape[0]} stride {stride}",
    ]
    comments = [c.replace("\n", " ").replace("\r", " ") for c in comments]
    return PointCloud(points, colors, comments, stride)


def encode_ply(
    points: np.ndarray, colors: np.ndarray | None = None, *, comments: Sequence[str] = ()
) -> bytes:
    """A point cloud as binary little-endian PLY bytes (format in the module docstring).

    Args:
        points: ``[N, 3]`` float coordinates (stored as float32).
        colors: optional ``[N, 3]`` uint8 RGB.
        comments: header comment lines (no newlines).

    Raises:
        ValueError: bad shapes/dtypes or a comment with a newline.
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
    return ("\n".join(header) + "\n").encode("ascii") + rec.tobytes()


def write_ply(
    path: PathLike,
    points: np.ndarray,
    colors: np.ndarray | None = None,
    *,
    comments: list[str] | tuple[str, ...] = (),
    overwrite: bool = False,
) -> Path:
    """Write a point cloud as a binary little-endian PLY file (atomically; bytes from ``encode_ply``).

    Args:
        path: destination ``.ply`` file.
        points: ``[N, 3]`` float coordinates (stored as float32).
        colors: optional ``[N, 3]`` uint8 RGB.
        comments: header comment lines (no newlines).
        overwrite: replace an existing file (default: refuse with ``FileExistsError``).

    Returns:
        The path written.
    """
    data = encode_ply(points, colors, comments=comments)
    with atomic_path(path, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
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
