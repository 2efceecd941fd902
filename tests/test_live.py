"""Live input (``anydepth.live``, ``anydepth live``) against a stream served by the test on 127.0.0.1, and the
depth sequence writers of ``data.video``."""

from __future__ import annotations

import functools
import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from anydepth.live import Frame, FrameReader, LatestFrame, LiveSource, parse_source, run_live

av = pytest.importorskip("av")

pytestmark = pytest.mark.usefixtures("one_thread")


def _write_ts(path: Path, n: int = 12, fps: int = 25, size: tuple[int, int] = (48, 64)) -> Path:
    """An MPEG-TS clip (streamable over plain HTTP, no seeking needed) with a moving bright bar."""
    h, w = size
    with av.open(str(path), "w", format="mpegts") as c:
        s = c.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for i in range(n):
            f = np.full((h, w, 3), 40, np.uint8)
            f[:, (4 * i) % w : (4 * i) % w + 8] = 220
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    root = tmp_path / "www"
    root.mkdir()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield root, f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


def test_parse_source(tmp_path: Path) -> None:
    assert parse_source("0", platform="linux") == LiveSource("0", "camera", "/dev/video0", "v4l2")
    assert parse_source("1", platform="darwin").format == "avfoundation"
    assert parse_source("/dev/video2").kind == "camera"
    rtsp = parse_source("rtsp://cam.local/stream")
    assert rtsp.kind == "url" and rtsp.options == {"rtsp_transport": "tcp"} and rtsp.is_live
    assert parse_source("http://127.0.0.1:8000/a.ts").kind == "url"
    f = tmp_path / "clip.mp4"
    f.write_bytes(b"x")
    src = parse_source(str(f))
    assert src.kind == "file" and not src.is_live
    with pytest.raises(ValueError, match="not a camera index"):
        parse_source(str(tmp_path / "missing.mp4"))
    with pytest.raises(ValueError, match="by name"):
        parse_source("0", platform="win32")


def test_latest_frame_drops_old_frames_and_never_queues() -> None:
    slot = LatestFrame()
    for i in range(5):
        slot.put(Frame(np.zeros((2, 2, 3), np.uint8), i, time.monotonic(), None))
    got = slot.get(timeout=0.1)
    assert got is not None and got.index == 4 and slot.dropped == 4
    assert slot.get(timeout=0.01) is None  # nothing new: no backlog
    slot.close()
    assert slot.get(timeout=5.0) is None and slot.closed


def test_reader_over_http_realtime_and_latest_wins(http_root: tuple[Path, str]) -> None:
    root, base = http_root
    _write_ts(root / "clip.ts", n=12, fps=25)
    slot = LatestFrame()
    reader = FrameReader(parse_source(f"{base}/clip.ts"), slot, max_reconnects=0, backoff_s=0.01)
    seen: list[int] = []

    def slow(frame: object) -> int:
        time.sleep(0.1)  # slower than the 25 fps source: frames must be dropped
        return 0

    stop = threading.Event()

    def record(frame: Frame, result: object, stats: object) -> None:
        seen.append(frame.index)
        if frame.index >= 11:  # the last frame always arrives (it stays in the slot until taken)
            stop.set()  # (an HTTP stream that ends is a dropped live stream: it would be reopened)

    t0 = time.monotonic()
    stats = run_live(reader, slow, record, stop_event=stop)
    elapsed = time.monotonic() - t0
    assert elapsed >= 0.35  # paced at the source rate (12 frames at 25 fps = 0.48 s), not decoded at once
    assert stats.frames_in >= 12 and stats.dropped > 0
    assert stats.frames_out + stats.dropped <= stats.frames_in and seen == sorted(seen)
    assert seen[-1] >= 10  # the consumer always gets the newest frame
    assert stats.fps > 0 and stats.latency_ms > 0


def test_reader_reconnects_with_backoff_then_gives_up(http_root: tuple[Path, str]) -> None:
    _, base = http_root
    slot = LatestFrame()
    reader = FrameReader(
        parse_source(f"{base}/missing.ts"), slot, backoff_s=0.01, max_backoff_s=0.03, max_reconnects=3
    )
    stats = run_live(reader, lambda f: None, lambda f, r, s: None)
    assert stats.frames_out == 0 and reader.reconnects == 3
    assert reader.waits == [0.01, 0.02, 0.03, 0.03][: len(reader.waits)] and len(reader.waits) == 3
    assert "404" in (reader.error or "")


def test_stream_that_drops_is_reopened(http_root: tuple[Path, str]) -> None:
    root, base = http_root
    _write_ts(root / "short.ts", n=5)
    slot = LatestFrame()
    reader = FrameReader(parse_source(f"{base}/short.ts"), slot, realtime=False, backoff_s=0.01)
    seen: list[int] = []
    run_live(reader, lambda f: time.sleep(0.002), lambda f, r, s: seen.append(f.index), max_frames=8)
    assert reader.reconnects >= 1  # the stream "ended" and was reopened: indices keep counting
    assert len(seen) == 8 and seen == sorted(seen) and seen[-1] >= 5


def test_stop_event_ends_cleanly(http_root: tuple[Path, str]) -> None:
    root, base = http_root
    _write_ts(root / "loop.ts", n=5)
    slot = LatestFrame()
    reader = FrameReader(parse_source(f"{base}/loop.ts"), slot, backoff_s=0.01)
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    stats = run_live(reader, lambda f: None, lambda f, r, s: None, stop_event=stop)
    assert not reader.is_alive() and stats.frames_out >= 1


def test_cli_live_writes_outputs(
    http_root: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from anydepth.cli.main import main

    root, base = http_root
    _write_ts(root / "clip.ts", n=8, fps=50)
    out = tmp_path / "live"
    argv = ["live", f"{base}/clip.ts", "-o", str(out), "--model", "sdt_test", "--size", "native"]
    rc = main(
        [*argv, "--device", "cpu", "--max-frames", "3", "--save", "video,latest,png16,npz", "--no-realtime"]
    )
    assert rc == 0
    assert "anydepth live: 3 frames" in capsys.readouterr().out  # the one-line summary on stdout
    summary = json.loads((out / "live.json").read_text())
    assert summary["stats"]["frames_out"] == 3 and summary["temporal_alignment"] is True
    info = av.open(str(out / "depth.mp4"))
    v = info.streams.video[0]
    assert len(info.streams.audio) == 0 and (v.codec_context.width, v.codec_context.height) == (64, 48)
    assert float(v.average_rate) == pytest.approx(50.0)
    info.close()
    idx = json.loads((out / "depth_png16" / "index.json").read_text())
    assert idx["frames"] == 3 and len(idx["ranges"]) == 3
    with np.load(out / "depth.npz") as z:
        assert z["frame_000002"].shape == (48, 64) and float(z["fps"]) == pytest.approx(50.0)
    assert (out / "latest.jpg").is_file()
    assert main(["live", str(tmp_path / "nope.mp4"), "-o", str(out), "--model", "sdt_test"]) == 2
    assert main([*argv, "--smooth", "1.0", "--max-frames", "1", "--overwrite"]) == 2
    assert main([*argv, "--smooth", "0.5", "--per-frame", "--max-frames", "1", "--overwrite"]) == 2
    rc = main(
        [*argv, "--smooth", "0.7", "--max-frames", "2", "--no-realtime", "--save", "latest", "--overwrite"]
    )
    assert rc == 0 and json.loads((out / "live.json").read_text())["stats"]["frames_out"] == 2
    assert json.loads((out / "live.json").read_text())["model"] == {"preset": "sdt_test", "fast": True}
    # a decoder without a fast path (DAv2's DPT) runs eagerly by default; an explicit --fast is refused
    dav2 = ["live", f"{base}/clip.ts", "-o", str(out), "--model", "dpt_dav2_test", "--size", "native"]
    assert main([*dav2, "--max-frames", "1", "--no-realtime", "--save", "latest", "--overwrite"]) == 0
    assert json.loads((out / "live.json").read_text())["model"] == {"preset": "dpt_dav2_test", "fast": False}
    assert (
        main([*dav2, "--fast", "--max-frames", "1", "--no-realtime", "--save", "latest", "--overwrite"]) == 2
    )


def test_depth_sequence_writers_round_trip(tmp_path: Path) -> None:
    from anydepth.data.io import read_png16
    from anydepth.data.video import DepthSequenceWriter
    from anydepth.ops.colormap import from_uint16

    frames = [np.linspace(0.1, 1.0 + i, 15 * 17, dtype=np.float32).reshape(15, 17) for i in range(3)]
    with DepthSequenceWriter(tmp_path / "seq", "png16", fps=30, space="disparity_affine_invariant") as w:
        for f in frames:
            w.write(f)
    idx = json.loads((tmp_path / "seq" / "index.json").read_text())
    lo, hi = idx["ranges"][2]
    back = from_uint16(read_png16(tmp_path / "seq" / "000002.png"), lo, hi)
    np.testing.assert_allclose(back, frames[2], atol=(hi - lo) / 65535)
    with pytest.raises(FileExistsError):
        DepthSequenceWriter(tmp_path / "seq", "png16", fps=30).__enter__()
    with pytest.raises(RuntimeError, match="boom"):
        with DepthSequenceWriter(tmp_path / "a.npz", "npz", fps=30) as w:
            w.write(frames[0])
            raise RuntimeError("boom")
    assert not (tmp_path / "a.npz").exists()  # atomic: nothing half-written
    with DepthSequenceWriter(tmp_path / "a.npz", "npz", fps=30) as w:
        for f in frames:
            w.write(f)
        with pytest.raises(ValueError, match="differs"):
            w.write(np.zeros((3, 3)))
    with np.load(tmp_path / "a.npz") as z:
        np.testing.assert_array_equal(z["frame_000001"], frames[1])
    with pytest.raises(ValueError, match="unknown depth sequence format"):
        DepthSequenceWriter(tmp_path / "x", "exr", fps=1)


def test_video_writer_keep_size_keeps_odd_sizes(tmp_path: Path) -> None:
    from anydepth.data.video import VideoWriter, iter_frames

    if "libx264" not in av.codecs_available:
        pytest.skip("needs libx264 for 4:4:4")
    with VideoWriter(tmp_path / "odd.mp4", 10, keep_size=True) as vw:
        vw.write(np.zeros((15, 17, 3), np.uint8))
    assert next(iter(iter_frames(tmp_path / "odd.mp4"))).shape == (15, 17, 3)


def test_cli_live_ctrl_c_finalises_outputs(
    http_root: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from anydepth.cli.main import main
    from anydepth.ops.temporal import TemporalAligner

    root, base = http_root
    _write_ts(root / "clip.ts", n=8)
    real = TemporalAligner.update
    calls = {"n": 0}

    def interrupt_on_third(self: TemporalAligner, *a: object, **k: object) -> object:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # what Ctrl-C raises in the main thread
        return real(self, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(TemporalAligner, "update", interrupt_on_third)
    out = tmp_path / "live"
    argv = ["live", f"{base}/clip.ts", "-o", str(out), "--model", "sdt_test", "--size", "native", "--no-fast"]
    assert main([*argv, "--device", "cpu", "--no-realtime"]) == 0
    summary = json.loads((out / "live.json").read_text())
    assert summary["interrupted"] is True and summary["stats"]["frames_out"] == 2
    with av.open(str(out / "depth.mp4")) as c:  # finalised, playable
        assert sum(1 for _ in c.decode(video=0)) == 2


def test_live_web_router_browser_frames_and_server_stream(tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    import io

    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from PIL import Image

    import anydepth
    from anydepth.inference import TorchRunner
    from anydepth.live.web import DepthColorizer, LiveSession, create_live_router

    runner = TorchRunner(anydepth.create_model("sdt_test"))
    app = FastAPI()
    app.include_router(create_live_router(runner, resolution="native", max_frame_bytes=200_000))
    client = TestClient(app)
    assert "live.js" in client.get("/live").text and "getUserMedia" in client.get("/live.js").text
    buf = io.BytesIO()
    Image.fromarray(np.full((48, 64, 3), 90, np.uint8)).save(buf, format="JPEG")
    for _ in range(2):
        r = client.post("/v1/live/frame?session_id=a", content=buf.getvalue())
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        assert Image.open(io.BytesIO(r.content)).size == (64, 48) and float(r.headers["X-Process-Ms"]) > 0
    assert client.post("/v1/live/frame", content=b"not an image").status_code == 400
    assert client.post("/v1/live/frame", content=b"x" * 200_001).status_code == 413
    st = client.get("/v1/live/stats").json()
    assert st["browser"]["frames"] == 2 and st["browser"]["sessions"] == 1 and st["server_stream"] is None
    assert client.get("/v1/live/stream.mjpg").status_code == 404

    clip = _write_ts(tmp_path / "clip.ts", n=6)
    session = LiveSession(
        parse_source(str(clip)), DepthColorizer(runner, resolution="native"), realtime=False
    )
    session.start()
    app2 = FastAPI()
    app2.include_router(create_live_router(runner, session=session))
    with TestClient(app2) as c2:
        r = c2.get("/v1/live/stream.mjpg?max_frames=2")
        assert r.headers["content-type"].startswith("multipart/x-mixed-replace")
        assert r.content.count(b"Content-Type: image/jpeg") == 2
        session.stop()
        desc = c2.get("/v1/live/stats").json()["server_stream"]
        assert desc["stats"]["frames_out"] >= 2 and desc["running"] is False


def test_serve_app_has_the_live_page(tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    import io

    from fastapi.testclient import TestClient
    from PIL import Image

    import anydepth
    from anydepth.cli.main import build_parser
    from anydepth.cli.serve import build_app

    clip = _write_ts(tmp_path / "clip.ts", n=5)
    args = build_parser().parse_args(
        ["serve", "--model", "sdt_test", "--device", "cpu", "--live", str(clip), "--live-size", "native"]
    )
    app, info = build_app(args)
    assert info["live_session"] is not None and not info["live_session"].running
    with TestClient(app, base_url="http://127.0.0.1") as c:  # the app only answers loopback Host names
        assert "getUserMedia" in c.get("/live.js").text
        buf = io.BytesIO()
        Image.fromarray(np.full((32, 48, 3), 120, np.uint8)).save(buf, format="JPEG")
        assert c.post("/v1/live/frame", content=buf.getvalue()).status_code == 200
        assert c.get("/v1/live/stats").json()["server_stream"]["source"] == str(clip)
    plain = anydepth.serve.create_app(anydepth.create_model("sdt_test"), live_page=False)
    with TestClient(plain, base_url="http://127.0.0.1") as c:
        assert c.get("/live").status_code == 404
