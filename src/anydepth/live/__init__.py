"""anydepth.live: live depth from cameras, network streams and files (``stream``), and the web app's live page
(``web``: browser camera frames in, colour depth out; the server-side stream as MJPEG)."""

from anydepth.live.stream import (
    Frame,
    FrameReader,
    LatestFrame,
    LiveSource,
    LiveStats,
    parse_source,
    run_live,
)

__all__ = ["LiveSource", "parse_source", "Frame", "LatestFrame", "FrameReader", "LiveStats", "run_live"]
