"""Streaming video IO with PyAV (``pip install av``; imported inside the functions that need it).

Frames are decoded and encoded one at a time, so memory does not grow with the video length. Frames are uint8
RGB ``[H, W, 3]`` arrays. Decoded frames are turned upright using the stream's display matrix (phone videos
are often stored sideways with a rotation tag), like image EXIF orientation.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from anydepth.atomic import atomic_path, write_json
from anydepth.extras import require

__all__ = [
    "VIDEO_EXTENSIONS",
    "SEQUENCE_FORMATS",
    "VideoInfo",
    "probe_video",
    "iter_frames",
    "VideoWriter",
    "DepthSequenceWriter",
]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

#: File name extensions treated as videos when expanding inputs.
VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".mts", ".3gp"}
)


def _import_av() -> Any:
    return require("av", "video input/output (PyAV)")


@dataclass(frozen=True)
class VideoInfo:
    """Properties of a video's first video stream.

    Attributes:
        fps: average frame rate (frames per second) as a fraction.
        frames: number of frames reported by the container (0 when unknown; may be approximate).
        width, height: stored frame size in pixels (before rotation).
        rotation: counter-clockwise display rotation in degrees (0, 90, 180, 270).
        codec: decoder name.
    """

    fps: Fraction
    frames: int
    width: int
    height: int
    rotation: int
    codec: str

    @property
    def display_size(self) -> tuple[int, int]:
        """``(H, W)`` of the upright frames that ``iter_frames`` yields."""
        return (self.width, self.height) if self.rotation in (90, 270) else (self.height, self.width)


def _open_input(path: PathLike) -> Any:
    av = _import_av()
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"video not found: {p}")
    try:
        container = av.open(os.fspath(p), mode="r")
    except av.FFmpegError as e:
        raise ValueError(f"cannot open video {p}: {e}") from e
    if not container.streams.video:
        container.close()
        raise ValueError(f"{p}: no video stream")
    return container


def _rotation(value: Any) -> int:
    try:
        r = int(round(float(value or 0) / 90.0)) * 90
    except (TypeError, ValueError):
        return 0
    return r % 360


def probe_video(path: PathLike) -> VideoInfo:
    """Read the frame rate, frame count, size and rotation of a video without decoding it.

    Raises:
        FileNotFoundError: no such file. ValueError: not a decodable video.
    """
    container = _open_input(path)
    try:
        s = container.streams.video[0]
        rate = s.average_rate or s.guessed_rate or s.base_rate or Fraction(30, 1)
        rot = 0
        try:
            import av

            first = next(container.decode(s), None)
            if isinstance(first, av.VideoFrame):
                rot = _rotation(getattr(first, "rotation", 0))
        except Exception as e:  # noqa: BLE001 - a broken first frame is reported later by iter_frames
            log.debug("probe_video(%s): first frame not decodable: %s", path, e)
        return VideoInfo(
            fps=Fraction(rate),
            frames=int(s.frames or 0),
            width=int(s.codec_context.width),
            height=int(s.codec_context.height),
            rotation=rot,
            codec=str(s.codec_context.name),
        )
    finally:
        container.close()


def iter_frames(path: PathLike, *, stride: int = 1, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Decode a video frame by frame (streaming) as upright uint8 RGB ``[H, W, 3]`` arrays.

    Args:
        path: video file.
        stride: keep every ``stride``-th frame (1 = all).
        max_frames: stop after yielding this many frames.

    Raises:
        FileNotFoundError: no such file. ValueError: not a decodable video, or decoding fails mid-stream (the
            message names the file and the frame index).
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    av = _import_av()
    container = _open_input(path)
    try:
        s = container.streams.video[0]
        s.thread_type = "AUTO"
        n_out = 0
        i = -1
        try:
            for i, frame in enumerate(container.decode(s)):
                if i % stride:
                    continue
                rgb = frame.to_ndarray(format="rgb24")
                k = _rotation(getattr(frame, "rotation", 0)) // 90
                if k:
                    rgb = np.ascontiguousarray(np.rot90(rgb, k=k))
                yield rgb
                n_out += 1
                if max_frames is not None and n_out >= max_frames:
                    return
        except av.FFmpegError as e:
            raise ValueError(f"{path}: decoding failed after frame {i}: {e}") from e
    finally:
        container.close()


class VideoWriter:
    """Encode uint8 RGB frames to a video file, streaming, written atomically.

    The file appears at ``path`` only when the writer is closed without an exception (a temporary file in the
    same directory is renamed into place). The file has one video stream and no audio. Even sizes are encoded as
    yuv420p; odd sizes are padded by one edge pixel (yuv420p needs even sizes, and every player decodes it), or,
    with ``keep_size``, kept exactly as H.264 4:4:4 (when libx264 is available; fewer players decode 4:4:4).
    Codec: H.264 (``libx264``) when available, else MPEG-4 Part 2.

    Args:
        path: destination (``.mp4`` recommended; the container is chosen from the extension).
        fps: frame rate (use the source's ``VideoInfo.fps`` to keep timing).
        overwrite: replace an existing file (default: refuse with ``FileExistsError``).
        crf: H.264 constant rate factor (lower = better quality, bigger file).
        keep_size: never pad odd sizes (see above).

    Example::

        with VideoWriter("out.mp4", fps=info.fps) as w:
            for frame in frames:
                w.write(frame)
    """

    def __init__(
        self,
        path: PathLike,
        fps: Fraction | float,
        *,
        overwrite: bool = False,
        crf: int = 18,
        keep_size: bool = False,
    ) -> None:
        self.path = Path(path)
        self.fps = Fraction(fps).limit_denominator(1001 * 1000)
        if self.fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.crf = int(crf)
        self.keep_size = bool(keep_size)
        self.frames_written = 0
        self._overwrite = overwrite
        self._ctx: Any = None
        self._container: Any = None
        self._stream: Any = None
        self._size: tuple[int, int] | None = None
        self._pad = False

    def __enter__(self) -> VideoWriter:
        _import_av()
        self._ctx = atomic_path(self.path, overwrite=self._overwrite)
        self._tmp = self._ctx.__enter__()
        return self

    def _open_stream(self, h: int, w: int) -> None:
        av = _import_av()
        self._container = av.open(os.fspath(self._tmp), mode="w", format=self._format())
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        self._stream = self._container.add_stream(codec, rate=self.fps)
        # odd sizes: H.264 can keep them exactly in 4:4:4 (no chroma subsampling; fewer players decode it)
        odd = bool(h % 2 or w % 2)
        self._pad = odd and not (self.keep_size and codec == "libx264")
        if self._pad:
            self._stream.width, self._stream.height = w + (w % 2), h + (h % 2)
        else:
            self._stream.width, self._stream.height = w, h
        self._stream.pix_fmt = "yuv444p" if odd and not self._pad else "yuv420p"
        if codec == "libx264":
            self._stream.options = {"crf": str(self.crf), "preset": "medium"}
        else:
            self._stream.bit_rate = 8_000_000
        self._size = (h, w)

    def _format(self) -> str | None:
        return {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".avi": "avi"}.get(
            self.path.suffix.lower()
        )

    def write(self, frame: np.ndarray) -> None:
        """Append one uint8 RGB ``[H, W, 3]`` frame; all frames must have the size of the first."""
        av = _import_av()
        if self._ctx is None:
            raise RuntimeError("VideoWriter.write called outside its 'with' block")
        a = np.asarray(frame)
        if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
            raise ValueError(f"VideoWriter expects uint8 [H, W, 3] frames, got {a.dtype} {a.shape}")
        if self._stream is None:
            self._open_stream(a.shape[0], a.shape[1])
        if (a.shape[0], a.shape[1]) != self._size:
            raise ValueError(
                f"{self.path}: frame size {a.shape[:2]} differs from the first frame's {self._size}"
            )
        if self._pad:
            a = np.pad(a, ((0, a.shape[0] % 2), (0, a.shape[1] % 2), (0, 0)), mode="edge")
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(a), format="rgb24")
        for packet in self._stream.encode(vf):
            self._container.mux(packet)
        self.frames_written += 1

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self._container is not None:
                if exc_type is None:
                    for packet in self._stream.encode():
                        self._container.mux(packet)
                self._container.close()
            if exc_type is None and self.frames_written == 0:
                raise ValueError(f"{self.path}: no frames were written")
        except BaseException as e:
            self._ctx.__exit__(type(e), e, e.__traceback__)
            raise
        self._ctx.__exit__(exc_type, exc, tb)


#: Formats of ``DepthSequenceWriter``.
SEQUENCE_FORMATS: tuple[str, ...] = ("png16", "npz")


class DepthSequenceWriter:
    """Stream float depth/disparity maps of a video to a 16-bit PNG sequence or one ``.npz`` file.

    Memory stays bounded: each frame is written when it arrives.

    * ``png16``: ``path`` is a directory; frame ``i`` goes to ``path/{i:06d}.png`` (each written atomically) and
      ``path/index.json`` (written at close) records the frame rate, the value space and per frame the range
      ``[lo, hi]`` such that ``value = lo + png / 65535 * (hi - lo)`` (0 = invalid when ``lo`` maps there too:
      non-finite values are stored as 0 and listed as ``invalid_is_zero``).
    * ``npz``: ``path`` is one ``.npz`` file (a zip of ``frame_{i:06d}.npy`` float32 arrays, plus ``fps`` and
      ``space``), written to a temporary file and renamed into place at close; ``numpy.load`` reads it lazily.

    Args:
        path: directory (png16) or ``.npz`` file (npz).
        fmt: ``"png16"`` or ``"npz"``.
        fps: source frame rate, recorded in the index.
        space: name of the values' space (e.g. ``"disparity_affine_invariant"``), recorded in the index.
        value_range: fixed ``(lo, hi)`` for every PNG frame (e.g. a temporally aligned clip); None = per frame.
        overwrite: replace existing outputs (default: refuse with ``FileExistsError``).
    """

    def __init__(
        self,
        path: PathLike,
        fmt: str,
        *,
        fps: Fraction | float,
        space: str = "",
        value_range: tuple[float, float] | None = None,
        overwrite: bool = False,
    ) -> None:
        if fmt not in SEQUENCE_FORMATS:
            raise ValueError(f"unknown depth sequence format {fmt!r}; expected one of {SEQUENCE_FORMATS}")
        if value_range is not None and not value_range[1] > value_range[0]:
            raise ValueError(f"value_range must be (lo, hi) with hi > lo, got {value_range}")
        self.path = Path(path)
        self.fmt = fmt
        self.fps = float(fps)
        self.space = space
        self.value_range = value_range
        self.frames_written = 0
        self._overwrite = overwrite
        self._ranges: list[list[float]] = []
        self._ctx: Any = None
        self._zip: Any = None
        self._shape: tuple[int, int] | None = None

    def __enter__(self) -> DepthSequenceWriter:
        if self.fmt == "npz":
            import zipfile

            self._ctx = atomic_path(self.path, overwrite=self._overwrite)
            tmp = self._ctx.__enter__()
            self._zip = zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED)
        else:
            if self.path.exists() and not self.path.is_dir():
                raise FileExistsError(f"{self.path} exists and is not a directory")
            if (self.path / "index.json").exists() and not self._overwrite:
                raise FileExistsError(f"{self.path} already holds a sequence (refusing to overwrite)")
            self.path.mkdir(parents=True, exist_ok=True)
        return self

    def write(self, value: np.ndarray) -> None:
        """Append one ``[H, W]`` float map (all frames of a sequence have one size)."""
        from anydepth.data.io import write_png16
        from anydepth.ops.colormap import to_uint16

        a = np.asarray(value, dtype=np.float32)
        if a.ndim != 2:
            raise ValueError(f"depth sequence frames must be [H, W], got shape {a.shape}")
        if self._shape is None:
            self._shape = (a.shape[0], a.shape[1])
        elif a.shape != self._shape:
            raise ValueError(
                f"{self.path}: frame size {a.shape} differs from the first frame's {self._shape}"
            )
        i = self.frames_written
        if self.fmt == "npz":
            if self._zip is None:
                raise RuntimeError("DepthSequenceWriter.write called outside its 'with' block")
            self._zip.writestr(f"frame_{i:06d}.npy", _npy_bytes(a))
        else:
            ok = np.isfinite(a)
            if self.value_range is not None:
                lo, hi = self.value_range
            elif ok.any():
                lo, hi = float(a[ok].min()), float(a[ok].max())
            else:
                lo, hi = 0.0, 1.0
            if not hi > lo:
                hi = lo + max(abs(lo), 1.0) * 1e-6
            write_png16(self.path / f"{i:06d}.png", to_uint16(a, lo, hi), overwrite=self._overwrite)
            self._ranges.append([lo, hi])
        self.frames_written += 1

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.fmt == "npz":
            try:
                if exc_type is None:
                    self._zip.writestr("fps.npy", _npy_bytes(np.array(self.fps)))
                    self._zip.writestr("space.npy", _npy_bytes(np.array(self.space)))
                self._zip.close()
            except BaseException as e:
                self._ctx.__exit__(type(e), e, e.__traceback__)
                raise
            self._ctx.__exit__(exc_type, exc, tb)
            return
        if exc_type is not None:
            return
        index = {
            "fps": self.fps,
            "space": self.space,
            "frames": self.frames_written,
            "decode": "value = lo + png / 65535 * (hi - lo), per frame range [lo, hi]",
            "invalid_is_zero": True,
            "ranges": self._ranges,
        }
        write_json(self.path / "index.json", index, overwrite=True, indent=None)


def _npy_bytes(a: np.ndarray) -> bytes:
    import io as _io

    buf = _io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()
