"""Live depth: read a camera, a network stream or a video file in real time, predict the newest frame, repeat.

Pieces (no printing, no device choice; the CLI ``anydepth live`` and the web app put them together):

* ``parse_source``: a camera index (``0``), a device path (``/dev/video0``), an RTSP/HTTP/... URL or a video file.
* ``LatestFrame``: a one-slot mailbox. The reader overwrites the slot; the consumer takes the newest frame. When
  inference is slower than the source, older frames are dropped (counted), never queued: memory and latency
  stay bounded.
* ``FrameReader``: a thread decoding the source with PyAV into a ``LatestFrame``; files (and URLs, unless
  ``realtime=False``) are paced by their timestamps, so a file plays at its own speed; a dropped network stream
  or camera is reopened with exponential back-off (``backoff_s`` doubling up to ``max_backoff_s``; reset after
  each frame). ``stop()`` ends it promptly, including during a back-off wait.
* ``run_live``: the consumer loop: take the newest frame, call ``process(frame)``, hand the result to
  ``on_result``, keep FPS / latency statistics (``LiveStats``); stops on ``stop_event``, ``max_frames``, the end
  of a file, or when the reader gives up.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from anydepth.extras import require

__all__ = ["LiveSource", "parse_source", "Frame", "LatestFrame", "FrameReader", "LiveStats", "run_live"]

log = logging.getLogger(__name__)

_URL = re.compile(r"^(rtsp|rtsps|rtmp|rtmps|http|https|udp|tcp|srt|rtp)://", re.IGNORECASE)


@dataclass(frozen=True)
class LiveSource:
    """Where live frames come from.

    Attributes:
        spec: what the user gave.
        kind: ``camera`` (index or device), ``url`` (network stream) or ``file``.
        target: what PyAV opens (device path, URL or file path).
        format: PyAV/FFmpeg input format (``v4l2``, ``avfoundation``, ``dshow``) or None to probe.
        options: FFmpeg options (e.g. ``rtsp_transport=tcp``).
    """

    spec: str
    kind: Literal["camera", "url", "file"]
    target: str
    format: str | None = None
    options: dict[str, str] = field(default_factory=dict)

    @property
    def is_live(self) -> bool:
        """Cameras and network streams are live: they are reopened when they drop."""
        return self.kind != "file"


def parse_source(spec: str | int, *, platform: str | None = None) -> LiveSource:
    """Interpret a live source given on the command line.

    Args:
        spec: camera index (``0``), device path (``/dev/video0``), URL (``rtsp://``, ``http://``, ...) or video file.
        platform: ``sys.platform`` value that decides how a camera index is opened (default: this machine's).

    Raises:
        ValueError: ``spec`` is none of these (e.g. a file that does not exist).
    """
    s = str(spec).strip()
    plat = platform or sys.platform
    if re.fullmatch(r"\d+", s):
        idx = int(s)
        if plat.startswith("linux"):
            return LiveSource(s, "camera", f"/dev/video{idx}", "v4l2")
        if plat == "darwin":
            return LiveSource(s, "camera", str(idx), "avfoundation", {"framerate": "30"})
        raise ValueError(
            f"camera index {s!r}: on {plat} give the device by name (e.g. 'video=My Camera' is dshow)"
        )
    if s.startswith("video="):
        return LiveSource(s, "camera", s, "dshow")
    if _URL.match(s):
        opts = {"rtsp_transport": "tcp"} if s.lower().startswith("rtsp") else {}
        return LiveSource(s, "url", s, None, opts)
    if s.startswith("/dev/"):
        return LiveSource(s, "camera", s, "v4l2")
    p = Path(s)
    if p.is_file():
        return LiveSource(s, "file", os.fspath(p))
    raise ValueError(
        f"live source {s!r} is not a camera index, a device path, a stream URL (rtsp://, http://, ...) or an "
        "existing video file"
    )


@dataclass(frozen=True)
class Frame:
    """A decoded frame: ``rgb`` uint8 ``[H, W, 3]``, its sequence number ``index`` (0-based, counting every
    decoded frame, dropped ones included), ``captured`` (``time.monotonic()`` when decoded) and the stream time
    ``pts_s`` (seconds; None if unknown)."""

    rgb: np.ndarray
    index: int
    captured: float
    pts_s: float | None


class LatestFrame:
    """One-slot, latest-wins mailbox between a producer thread and a consumer (thread-safe)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._closed = False
        self.put_count = 0
        self.dropped = 0

    def put(self, frame: Frame) -> None:
        """Store ``frame``, replacing (dropping) an older one that was not taken yet."""
        with self._cond:
            if self._frame is not None:
                self.dropped += 1
            self._frame = frame
            self.put_count += 1
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> Frame | None:
        """Take the newest frame, waiting up to ``timeout`` seconds; None on timeout or when closed and empty."""
        with self._cond:
            if self._frame is None and not self._closed:
                self._cond.wait(timeout)
            f, self._frame = self._frame, None
            return f

    def close(self) -> None:
        """Mark the producer finished (wakes a waiting consumer)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed


class FrameReader(threading.Thread):
    """Decode ``source`` into ``slot`` on a background thread, reconnecting live sources with back-off.

    Args:
        source: a ``LiveSource``.
        slot: the ``LatestFrame`` to fill.
        realtime: pace frames by their timestamps (default: files and URLs yes, cameras no).
        loop: restart a file at its end instead of finishing.
        backoff_s: first reconnection delay (seconds); doubles after each failure up to ``max_backoff_s``.
        max_reconnects: give up after this many consecutive failed (re)connections (None = never).
        timeout_s: open/read timeout for network sources (seconds).

    Attributes:
        reconnects: number of reopenings after a drop or failure.
        waits: the back-off delays waited, in order (seconds).
        error: the last error message, if any.
    """

    def __init__(
        self,
        source: LiveSource,
        slot: LatestFrame,
        *,
        realtime: bool | None = None,
        loop: bool = False,
        backoff_s: float = 0.5,
        max_backoff_s: float = 10.0,
        max_reconnects: int | None = None,
        timeout_s: float = 5.0,
    ) -> None:
        super().__init__(name="anydepth-live-reader", daemon=True)
        if not backoff_s > 0 or max_backoff_s < backoff_s:
            raise ValueError(f"need 0 < backoff_s <= max_backoff_s, got {backoff_s}, {max_backoff_s}")
        self.source = source
        self.slot = slot
        self.realtime = source.kind != "camera" if realtime is None else bool(realtime)
        self.loop = loop
        self.backoff_s = float(backoff_s)
        self.max_backoff_s = float(max_backoff_s)
        self.max_reconnects = max_reconnects
        self.timeout_s = float(timeout_s)
        self.reconnects = 0
        self.waits: list[float] = []
        self.error: str | None = None
        self.info: dict[str, Any] = {}
        self._stop_event = threading.Event()
        self._index = 0

    def stop(self) -> None:
        """Ask the thread to finish (returns at once; ``join()`` to wait)."""
        self._stop_event.set()

    def _open(self) -> Any:
        av = require("av", "live input (PyAV)")
        kw: dict[str, Any] = {"options": dict(self.source.options)}
        if self.source.format:
            kw["format"] = self.source.format
        if self.source.kind == "url":
            kw["timeout"] = (self.timeout_s, self.timeout_s)
        return av.open(self.source.target, mode="r", **kw)

    def _decode(self, container: Any) -> bool:
        """Decode until the end or a stop; True when at least one frame arrived."""
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate
        self.info = {
            "width": int(stream.codec_context.width),
            "height": int(stream.codec_context.height),
            "fps": float(rate) if rate else None,
            "codec": str(stream.codec_context.name),
        }
        t0_wall: float | None = None
        t0_media: float | None = None
        got = False
        for frame in container.decode(stream):
            if self._stop_event.is_set():
                break
            pts = float(frame.time) if frame.time is not None else None
            if self.realtime and pts is not None:
                if t0_wall is None or t0_media is None:
                    t0_wall, t0_media = time.monotonic(), pts
                ahead = (t0_wall + (pts - t0_media)) - time.monotonic()
                if ahead > 0 and self._stop_event.wait(min(ahead, 1.0)):
                    break
            rgb = frame.to_ndarray(format="rgb24")
            self.slot.put(Frame(rgb, self._index, time.monotonic(), pts))
            self._index += 1
            got = True
        return got

    def run(self) -> None:
        av = require("av", "live input (PyAV)")
        failures = 0
        try:
            while not self._stop_event.is_set():
                got = False
                try:
                    container = self._open()
                    try:
                        if not container.streams.video:
                            raise ValueError(f"{self.source.spec}: no video stream")
                        got = self._decode(container)
                    finally:
                        container.close()
                    if self._stop_event.is_set():
                        break
                    if not self.source.is_live and not self.loop:
                        break  # end of a file
                    if not self.source.is_live:
                        continue
                    self.error = "stream ended"
                except (av.FFmpegError, OSError, ValueError) as e:
                    self.error = f"{type(e).__name__}: {e}"
                    if not self.source.is_live and not got:
                        break  # a file that cannot be read will not get better
                failures = 0 if got else failures + 1
                if self.max_reconnects is not None and failures > self.max_reconnects:
                    log.warning(
                        "live source %s: giving up after %d failed attempts", self.source.spec, failures
                    )
                    break
                delay = min(self.backoff_s * 2 ** max(failures - 1, 0), self.max_backoff_s)
                log.warning("live source %s: %s; reconnecting in %.1f s", self.source.spec, self.error, delay)
                self.waits.append(delay)
                if self._stop_event.wait(delay):
                    break
                self.reconnects += 1
        finally:
            self.slot.close()


@dataclass
class LiveStats:
    """Running statistics of ``run_live``.

    Attributes:
        frames_in: frames decoded by the reader. frames_out: frames processed. dropped: frames replaced before
        processing (latest-wins). reconnects: source reopenings. fps: processed frames per second (EMA).
        latency_ms: capture-to-result latency of the last frame (EMA), milliseconds. process_ms: time spent in
        ``process`` per frame (EMA). elapsed_s: wall time since start.
    """

    frames_in: int = 0
    frames_out: int = 0
    dropped: int = 0
    reconnects: int = 0
    fps: float = 0.0
    latency_ms: float = 0.0
    process_ms: float = 0.0
    elapsed_s: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {k: round(float(v), 3) for k, v in self.__dict__.items()}


def run_live(
    reader: FrameReader,
    process: Callable[[Frame], Any],
    on_result: Callable[[Frame, Any, LiveStats], None],
    *,
    stop_event: threading.Event | None = None,
    max_frames: int | None = None,
    ema: float = 0.9,
    stats: LiveStats | None = None,
) -> LiveStats:
    """Consume the newest frames of ``reader`` until stopped; starts and joins the reader thread.

    Args:
        reader: a ``FrameReader`` (not started yet).
        process: ``frame -> result`` (e.g. predict + temporal alignment); runs on this thread.
        on_result: called with each frame, its result and the current ``LiveStats`` (e.g. write outputs).
        stop_event: set it (e.g. from a signal handler or a web request) to stop cleanly.
        max_frames: stop after this many processed frames.
        ema: smoothing of the FPS / latency statistics in [0, 1).
        stats: a ``LiveStats`` to update in place (so the caller still has it after an interruption).

    Returns:
        The final ``LiveStats``. Exceptions of ``process``/``on_result`` (and ``KeyboardInterrupt``) propagate
        after the reader has been stopped and joined.
    """
    stop = stop_event or threading.Event()
    stats = stats if stats is not None else LiveStats()
    t_start = time.monotonic()
    last_done: float | None = None
    reader.start()
    try:
        while not stop.is_set():
            frame = reader.slot.get(timeout=0.2)
            if frame is None:
                if reader.slot.closed and not reader.is_alive():
                    break
                continue
            t0 = time.monotonic()
            result = process(frame)
            done = time.monotonic()
            stats.frames_out += 1
            stats.frames_in = reader.slot.put_count
            stats.dropped = reader.slot.dropped
            stats.reconnects = reader.reconnects
            lat, proc = 1000.0 * (done - frame.captured), 1000.0 * (done - t0)
            first = stats.frames_out == 1
            stats.latency_ms = lat if first else ema * stats.latency_ms + (1 - ema) * lat
            stats.process_ms = proc if first else ema * stats.process_ms + (1 - ema) * proc
            if last_done is not None:
                inst = 1.0 / max(done - last_done, 1e-9)
                stats.fps = inst if stats.fps == 0 else ema * stats.fps + (1 - ema) * inst
            last_done = done
            stats.elapsed_s = done - t_start
            on_result(frame, result, stats)
            if max_frames is not None and stats.frames_out >= max_frames:
                break
    finally:
        reader.stop()
        reader.join(timeout=10.0)
        stats.frames_in = reader.slot.put_count
        stats.dropped = reader.slot.dropped
        stats.reconnects = reader.reconnects
        stats.elapsed_s = time.monotonic() - t_start
    return stats
