"""The web app's live page: browser-camera frames in, colour depth out, plus a server-side live stream as MJPEG.

``create_live_router(runner, ...)`` returns a FastAPI ``APIRouter`` that the web app includes (``anydepth serve``
adds it; any FastAPI app can). Routes:

* ``GET /live``: the page. "Browser camera" uses ``getUserMedia``: the page grabs a frame from the video element,
  sends it as JPEG to ``POST /v1/live/frame``, shows the returned colour depth, and only then grabs the next frame
  (one request in flight: the newest frame always wins, nothing queues). It shows FPS, round-trip latency and the
  server's processing time. "Server stream" shows ``/v1/live/stream.mjpg`` when the server runs a ``LiveSession``.
* ``POST /v1/live/frame?session_id=ID``: body = one JPEG/PNG frame (at most ``max_frame_bytes``, ``max_pixels``);
  answers ``image/jpeg`` (colour depth, temporally aligned per ``session_id``; at most ``max_sessions`` sessions are
  kept, least recently used first out) with ``X-Process-Ms``. If the model is busy with another frame the answer
  is 429 (the frame is dropped: the client sends its next, newer frame).
* ``GET /v1/live/stats``: sessions, the server stream's statistics (frames in/out, dropped, FPS, latency).
* ``GET /v1/live/stream.mjpg``: ``multipart/x-mixed-replace`` JPEG stream of the server-side ``LiveSession``
  (404 without one).

``LiveSession`` runs ``live.stream.FrameReader`` + ``run_live`` on a background thread and keeps the newest
colour frame and the statistics.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from anydepth.inference import RangeTracker, Runner, nominal_depth, predict_iter
from anydepth.live.stream import Frame, FrameReader, LatestFrame, LiveSource, LiveStats, run_live
from anydepth.ops.colormap import apply_colormap
from anydepth.ops.temporal import TemporalAligner

__all__ = ["DepthColorizer", "LiveSession", "create_live_router", "LIVE_PAGE", "LIVE_JS", "LIVE_CSS"]

log = logging.getLogger(__name__)


class DepthColorizer:
    """Frame -> temporally aligned prediction -> colour image, for one stream (not thread-safe; one per stream).

    Args:
        runner: the model runner. resolution: processing size string. colormap: colour map name.
        align: temporal alignment (else per-frame colour range).
        smooth: the aligner's temporal noise reduction in [0, 1) (``TemporalAligner(smooth=...)``; 0 = off).
    """

    def __init__(
        self,
        runner: Runner,
        *,
        resolution: str = "384",
        colormap: str = "turbo",
        align: bool = True,
        smooth: float = 0.0,
    ):
        self.runner = runner
        self.resolution = resolution
        self.colormap = colormap
        self.aligner = TemporalAligner(runner.output_space, smooth=smooth) if align else None
        self.colors = RangeTracker(0.95 if align else 0.0)

    def process(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 ``[H, W, 3]`` frame -> ``(value [H, W] float32, colour uint8 [H, W, 3])``: the prediction in
        the model's space (temporally aligned, or per-frame normalised disparity/depth), and its colour map
        (near = warm)."""
        space = self.runner.output_space
        pred = next(
            predict_iter(self.runner, [rgb], resolution=self.resolution, batch_size=1, compute_depth=False)
        )
        if self.aligner is not None:
            value = self.aligner.update(pred.value).value
        else:
            depth, _ = nominal_depth(pred.value, space)
            value = (1.0 / depth if space.is_disparity else depth).astype(np.float32)
        near = value if space.is_disparity else -value
        lo, hi = self.colors.update(near)
        return value, apply_colormap(near, self.colormap, vmin=lo, vmax=hi)

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """uint8 ``[H, W, 3]`` frame -> uint8 ``[H, W, 3]`` colour depth."""
        return self.process(rgb)[1]


def _jpeg(rgb: np.ndarray, quality: int = 80) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


class LiveSession:
    """A server-side live stream (camera, URL or file) predicted on a background thread.

    Args:
        source: the ``LiveSource``. colorize: ``rgb -> colour`` (a ``DepthColorizer``).
        reader_options: keyword arguments for ``FrameReader`` (back-off, reconnects, realtime, loop).
    """

    def __init__(
        self, source: LiveSource, colorize: Callable[[np.ndarray], np.ndarray], **reader_options: Any
    ) -> None:
        self.source = source
        self.colorize = colorize
        self.reader = FrameReader(source, LatestFrame(), **reader_options)
        self.stats = LiveStats()
        self.stop_event = threading.Event()
        self._cond = threading.Condition()
        self._jpeg: bytes | None = None
        self._seq = 0
        self._thread: threading.Thread | None = None
        self.error: str | None = None

    def start(self) -> None:
        """Start reading and predicting (returns at once)."""
        if self._thread is not None:
            raise RuntimeError("LiveSession already started")
        self._thread = threading.Thread(target=self._run, name="anydepth-live-session", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        def on_result(frame: Frame, color: np.ndarray, stats: LiveStats) -> None:
            data = _jpeg(color)
            with self._cond:
                self._jpeg, self._seq = data, self._seq + 1
                self._cond.notify_all()

        try:
            run_live(
                self.reader,
                lambda f: self.colorize(f.rgb),
                on_result,
                stop_event=self.stop_event,
                stats=self.stats,
            )
        except Exception as e:  # noqa: BLE001 - reported by /v1/live/stats; the web app keeps serving
            self.error = f"{type(e).__name__}: {e}"
            log.error("live session %s stopped: %s", self.source.spec, self.error)
        finally:
            with self._cond:
                self._cond.notify_all()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop and join the background thread."""
        self.stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def next_jpeg(self, after: int, timeout: float = 5.0) -> tuple[int, bytes | None]:
        """Wait for a frame newer than sequence number ``after``; ``(seq, jpeg)`` (jpeg None on timeout/stop)."""
        with self._cond:
            if self._seq <= after and self.running:
                self._cond.wait(timeout)
            return self._seq, (self._jpeg if self._seq > after else None)

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.source.spec,
            "kind": self.source.kind,
            "running": self.running,
            "error": self.error or self.reader.error,
            "stats": self.stats.as_dict(),
        }


def create_live_router(
    runner: Runner,
    *,
    resolution: str = "384",
    colormap: str = "turbo",
    session: LiveSession | None = None,
    max_sessions: int = 4,
    max_frame_bytes: int = 4 * 1024 * 1024,
    max_pixels: int = 4_000_000,
) -> Any:
    """The live page and its API as a FastAPI ``APIRouter`` (see the module docstring).

    Args:
        runner: model runner used for browser frames (shared; one frame at a time).
        resolution, colormap: processing size and colour map for browser frames.
        session: a started ``LiveSession`` to publish as MJPEG (None: browser camera only).
        max_sessions: browser streams with their own temporal state (LRU).
        max_frame_bytes, max_pixels: limits per posted frame (413 beyond).
    """
    from fastapi import APIRouter, Request
    from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
    from PIL import Image

    router = APIRouter()
    lock = threading.Lock()
    sessions: OrderedDict[str, DepthColorizer] = OrderedDict()
    counters = {"frames": 0, "busy": 0}

    @router.get("/live", include_in_schema=False, response_model=None)
    def live_page() -> Any:
        return HTMLResponse(LIVE_PAGE)

    @router.get("/live.js", include_in_schema=False, response_model=None)
    def live_js() -> Any:
        return Response(LIVE_JS, media_type="text/javascript")

    @router.get("/live.css", include_in_schema=False, response_model=None)
    def live_css() -> Any:
        return Response(LIVE_CSS, media_type="text/css")

    async def live_frame(request: Any) -> Any:
        session_id = str(request.query_params.get("session_id", "default"))[:64]
        body = await request.body()
        if len(body) > max_frame_bytes:
            return JSONResponse({"error": f"frame is {len(body)} bytes; the limit is {max_frame_bytes}"}, 413)
        try:
            im = Image.open(io.BytesIO(body))
            if im.width * im.height > max_pixels:
                return JSONResponse(
                    {"error": f"frame has {im.width}x{im.height} pixels; limit {max_pixels}"}, 413
                )
            rgb = np.asarray(im.convert("RGB"))
        except Exception as e:  # noqa: BLE001 - any undecodable body is the client's error
            return JSONResponse({"error": f"not a JPEG/PNG frame: {e}"}, 400)
        from starlette.concurrency import run_in_threadpool

        if not lock.acquire(blocking=False):
            counters["busy"] += 1
            return JSONResponse({"error": "busy: frame dropped, send the next one"}, 429)
        try:
            col = sessions.pop(session_id, None) or DepthColorizer(
                runner, resolution=resolution, colormap=colormap
            )
            sessions[session_id] = col
            while len(sessions) > max_sessions:
                sessions.popitem(last=False)
            t0 = time.perf_counter()
            color = await run_in_threadpool(col, rgb)
            ms = 1000.0 * (time.perf_counter() - t0)
            counters["frames"] += 1
        finally:
            lock.release()
        return Response(_jpeg(color), media_type="image/jpeg", headers={"X-Process-Ms": f"{ms:.1f}"})

    # the annotation must be the class itself (this module uses postponed annotations and imports FastAPI lazily)
    live_frame.__annotations__ = {"request": Request, "return": Any}
    router.add_api_route(
        "/v1/live/frame",
        live_frame,
        methods=["POST"],
        tags=["live"],
        response_model=None,
        summary="Colour depth of one live frame",
    )

    @router.get("/v1/live/stats", tags=["live"], response_model=None, summary="Live statistics")
    def live_stats() -> Any:
        return {
            "browser": {
                "sessions": len(sessions),
                "frames": counters["frames"],
                "dropped_busy": counters["busy"],
            },
            "server_stream": session.describe() if session is not None else None,
        }

    @router.get("/v1/live/stream.mjpg", tags=["live"], response_model=None, summary="Server-side live stream")
    def live_stream(max_frames: int = 0) -> Any:
        if session is None:
            return JSONResponse({"error": "no server-side live stream (start serve with --live SOURCE)"}, 404)

        def parts() -> Iterator[bytes]:
            seq, sent = 0, 0
            while session.running or seq < session._seq:
                seq, data = session.next_jpeg(seq)
                if data is None:
                    continue
                yield b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: " + str(len(data)).encode()
                yield b"\r\n\r\n" + data + b"\r\n"
                sent += 1
                if max_frames and sent >= max_frames:
                    return

        return StreamingResponse(parts(), media_type="multipart/x-mixed-replace; boundary=frame")

    return router


LIVE_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>anydepth live</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="live.css"></head><body>
<h1>anydepth live</h1>
<p><button id="cam">Use my camera</button><button id="srv">Server stream</button><button id="stop">Stop</button>
<a href="./">single images</a></p>
<div id="stats">idle</div>
<div class="row"><video id="video" autoplay playsinline muted></video><img id="depth" alt="depth"></div>
<canvas id="canvas" hidden></canvas>
<script src="live.js"></script></body></html>
"""

#: The live page's stylesheet (served at ``/live.css``: the app's CSP allows no inline styles).
LIVE_CSS = """body{font-family:system-ui,sans-serif;margin:1rem;background:#111;color:#eee}
.row{display:flex;gap:1rem;flex-wrap:wrap}video,img{max-width:45vw;background:#000}
button{margin-right:.5rem}a{color:#9cf}#stats{font-family:monospace;margin:.5rem 0}
"""

#: The live page's script (served at ``/live.js``: the app's CSP allows no inline scripts).
LIVE_JS = """"use strict";
const video = document.getElementById("video"), depth = document.getElementById("depth");
const canvas = document.getElementById("canvas"), stats = document.getElementById("stats");
const session = Math.random().toString(36).slice(2);
let running = false, frames = 0, t0 = 0, lastUrl = null;
function show(text) { stats.textContent = text; }
async function loop() {
  while (running) {
    if (!video.videoWidth) { await new Promise(r => setTimeout(r, 50)); continue; }
    canvas.width = video.videoWidth; canvas.height = video.videoHeight;
    canvas.getContext("2d").drawImage(video, 0, 0);
    const blob = await new Promise(r => canvas.toBlob(r, "image/jpeg", 0.8));
    const sent = performance.now();
    let res;
    try {
      res = await fetch("v1/live/frame?session_id=" + session, {method: "POST", body: blob,
        headers: {"Content-Type": "image/jpeg"}, credentials: "same-origin"});
    } catch (e) { show("server not reachable: " + e); running = false; break; }
    if (res.status === 429) { await new Promise(r => setTimeout(r, 10)); continue; }
    if (!res.ok) { show("error: " + (await res.text())); running = false; break; }
    const url = URL.createObjectURL(await res.blob());
    depth.src = url; if (lastUrl) URL.revokeObjectURL(lastUrl); lastUrl = url;
    frames += 1;
    const now = performance.now(), fps = 1000 * frames / (now - t0);
    show(`browser camera: ${fps.toFixed(1)} fps, latency ${(now - sent).toFixed(0)} ms, ` +
         `model ${res.headers.get("X-Process-Ms")} ms`);
  }
}
document.getElementById("cam").onclick = async () => {
  try {
    video.srcObject = await navigator.mediaDevices.getUserMedia({video: true, audio: false});
  } catch (e) { show("camera not available: " + e); return; }
  running = true; frames = 0; t0 = performance.now(); loop();
};
document.getElementById("srv").onclick = async () => {
  const s = await (await fetch("v1/live/stats", {credentials: "same-origin"})).json();
  if (!s.server_stream) { show("no server-side stream (anydepth serve --live SOURCE)"); return; }
  running = false; depth.src = "v1/live/stream.mjpg";
  const tick = async () => {
    const st = (await (await fetch("v1/live/stats", {credentials: "same-origin"})).json()).server_stream;
    if (!st) return;
    show(`server stream ${st.source}: ${st.stats.fps.toFixed(1)} fps, latency ${st.stats.latency_ms.toFixed(0)} ms, ` +
         `dropped ${st.stats.dropped}, reconnects ${st.stats.reconnects}${st.error ? ", " + st.error : ""}`);
    if (depth.src.endsWith("stream.mjpg")) setTimeout(tick, 1000);
  };
  tick();
};
document.getElementById("stop").onclick = () => {
  running = false; depth.removeAttribute("src");
  if (video.srcObject) { video.srcObject.getTracks().forEach(t => t.stop()); video.srcObject = null; }
  show("stopped");
};
"""
