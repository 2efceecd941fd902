"""End-to-end: the live page in headless Chromium with a fake camera (Chromium's test pattern through
``getUserMedia``) against a real uvicorn server on 127.0.0.1, plus a server-side live stream of a local clip.

Needs Debian's ``chromium`` and ``chromium-driver`` and ``selenium``, like ``test_serve_browser.py``; marked slow.
The screenshot is written to ``$ANYDEPTH_TEST_ARTIFACTS`` (default: the test's temporary folder).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
if CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip("needs Debian's chromium and chromium-driver packages", allow_module_level=True)
pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
webdriver = pytest.importorskip("selenium.webdriver")
av = pytest.importorskip("av")

from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

import anydepth  # noqa: E402
from anydepth.inference import TorchRunner  # noqa: E402
from anydepth.live import parse_source  # noqa: E402
from anydepth.live.web import DepthColorizer, LiveSession  # noqa: E402
from anydepth.serve.app import create_app  # noqa: E402


def _clip(path: Path, n: int = 40) -> Path:
    with av.open(str(path), "w", format="mpegts") as c:
        s = c.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=10)
        s.width, s.height, s.pix_fmt = 96, 64, "yuv420p"
        for i in range(n):
            f = np.full((64, 96, 3), 60, np.uint8)
            f[:, (3 * i) % 96 : (3 * i) % 96 + 12] = 230
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import torch

    torch.manual_seed(0)
    model = anydepth.create_model("sdt_test")
    with torch.no_grad():
        model.decoder.head.conv_out.weight.mul_(20.0)
        model.decoder.head.conv_out.bias.fill_(1.3)
    runner = TorchRunner(model)
    clip = _clip(tmp_path_factory.mktemp("clip") / "clip.ts")
    session = LiveSession(parse_source(str(clip)), DepthColorizer(runner, resolution="native"), loop=True)
    app = create_app(runner, default_resolution="128", live_session=session)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    session.start()
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        session.stop()
        srv.should_exit = True
        thread.join(15)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    profile = tmp_path_factory.mktemp("chromium-profile")
    for arg in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
        "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}", "--window-size=1200,700",
        "--disable-dev-shm-usage", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
    ):  # fmt: skip
        opts.add_argument(arg)
    drv = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    drv.set_page_load_timeout(60)
    try:
        yield drv
    finally:
        drv.quit()


def _wait_stats(drv: object, pattern: str, timeout: float = 90.0) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = drv.find_element(By.ID, "stats").text  # type: ignore[attr-defined]
        if re.search(pattern, text):
            return text
        time.sleep(0.3)
    raise AssertionError(f"live page stats {text!r} never matched {pattern!r}")


def test_live_page_browser_camera_and_server_stream(server: str, browser: object, tmp_path: Path) -> None:
    drv = browser
    drv.get(f"{server}/live")  # type: ignore[attr-defined]
    drv.find_element(By.ID, "cam").click()  # type: ignore[attr-defined]
    text = _wait_stats(drv, r"browser camera: [0-9.]+ fps, latency [0-9]+ ms, model [0-9.]+ ms")
    fps = float(re.search(r"([0-9.]+) fps", text).group(1))  # type: ignore[union-attr]
    assert fps > 0
    # the stats line is updated when the answer arrives; the <img> decodes the depth frame just after
    deadline = time.monotonic() + 15
    w = 0
    while w == 0 and time.monotonic() < deadline:
        w = drv.execute_script("return document.getElementById('depth').naturalWidth")  # type: ignore[attr-defined]
        time.sleep(0.1)
    assert w > 0
    out = Path(os.environ.get("ANYDEPTH_TEST_ARTIFACTS", tmp_path))
    out.mkdir(parents=True, exist_ok=True)
    drv.save_screenshot(str(out / "live_page.png"))  # type: ignore[attr-defined]
    print(f"screenshot: {out / 'live_page.png'}")
    drv.find_element(By.ID, "srv").click()  # type: ignore[attr-defined]
    _wait_stats(drv, r"server stream .*: [0-9.]+ fps, latency [0-9]+ ms, dropped [0-9]+, reconnects [0-9]+")
