"""End-to-end: the web page in headless Chromium against a real uvicorn server on 127.0.0.1.

Needs Debian's ``chromium`` and ``chromium-driver`` packages and ``selenium`` (PyPI). Marked slow; CI runs it on
every submission with ``make test-browser`` (``.ci/run`` installs the packages), which sets
``ANYDEPTH_REQUIRE_BROWSER=1``: then a missing browser, driver or package is a failure, never a skip. The
screenshot and the downloaded PNG16 are written to ``$ANYDEPTH_TEST_ARTIFACTS`` (default: the test's temporary
folder); the test prints their paths.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytestmark = pytest.mark.slow

REQUIRED = os.environ.get("ANYDEPTH_REQUIRE_BROWSER", "") == "1"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
if CHROMIUM is None or CHROMEDRIVER is None:
    msg = "needs Debian's chromium and chromium-driver packages (apt-get install -y chromium chromium-driver)"
    if REQUIRED:
        pytest.fail(f"ANYDEPTH_REQUIRE_BROWSER=1 but the browser is missing: {msg}", pytrace=False)
    pytest.skip(msg, allow_module_level=True)
if REQUIRED:  # an ImportError here fails the run
    import fastapi  # noqa: F401
    import selenium.webdriver as webdriver
    import uvicorn
else:
    pytest.importorskip("fastapi")
    uvicorn = pytest.importorskip("uvicorn")
    webdriver = pytest.importorskip("selenium.webdriver")

from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

import anydepth  # noqa: E402
from anydepth.serve.app import create_app  # noqa: E402

TOKEN = "browser-test-token-0123456789"

# Counts the pixels of a canvas that differ from its background (WebGL canvases are copied to a 2D canvas).
NON_EMPTY_JS = """
const src = document.getElementById(arguments[0]) || document.querySelector(arguments[0]);
const c = document.createElement('canvas');
c.width = src.width; c.height = src.height;
const ctx = c.getContext('2d');
ctx.drawImage(src, 0, 0);
const d = ctx.getImageData(0, 0, c.width, c.height).data;
const bg = [d[0], d[1], d[2]];
let differ = 0, colours = new Set(), checksum = 0;
for (let i = 0; i < d.length; i += 4) {
  if (Math.abs(d[i] - bg[0]) + Math.abs(d[i + 1] - bg[1]) + Math.abs(d[i + 2] - bg[2]) > 30) differ++;
  if (colours.size < 1000) colours.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
  checksum = (checksum + d[i] + 3 * d[i + 1] + 7 * d[i + 2]) % 1000000007;
}
return [c.width * c.height, differ, colours.size, checksum];
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    torch.manual_seed(0)
    model = anydepth.create_model("sdt_test")
    with torch.no_grad():
        model.decoder.head.conv_out.bias.fill_(1.0)
    app = create_app(model, token=TOKEN, default_resolution="128")
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(15)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    profile = tmp_path_factory.mktemp("chromium-profile")
    for arg in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
        "--window-size=1400,1000", "--disable-dev-shm-usage", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
    ):  # fmt: skip
        opts.add_argument(arg)
    drv = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    downloads = tmp_path_factory.mktemp("downloads")
    drv.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    drv.download_dir = downloads  # type: ignore[attr-defined]
    drv.set_page_load_timeout(60)
    drv.set_script_timeout(30)
    try:
        yield drv
    finally:
        drv.quit()


def body_data(drv: object, key: str) -> str | None:
    return drv.execute_script(f"return document.body.dataset.{key} || null")  # type: ignore[attr-defined]


def wait_state(drv: object, states: tuple[str, ...], timeout: float = 90.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = body_data(drv, "state")
        if s in states:
            return s
        time.sleep(0.2)
    raise AssertionError(f"page state {body_data(drv, 'state')!r} never reached {states}")


def artefact_dir(tmp_path: Path) -> Path:
    d = Path(os.environ.get("ANYDEPTH_TEST_ARTIFACTS", tmp_path))
    d.mkdir(parents=True, exist_ok=True)
    return d


def wait_file(path: Path, timeout: float = 30.0) -> bytes:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and path.stat().st_size > 0:
            return path.read_bytes()
        time.sleep(0.1)
    raise AssertionError(
        f"{path} was not downloaded (folder holds {sorted(p.name for p in path.parent.iterdir())})"
    )


def test_page_upload_depth_and_point_cloud(
    server: str, browser: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    drv = browser
    drv.get(f"{server}/")  # type: ignore[attr-defined]
    # without the token the page answers with the prompt that says how to authenticate
    assert "authentication required" in drv.page_source  # type: ignore[attr-defined]
    assert "/?token=" in drv.page_source  # type: ignore[attr-defined]
    drv.get(f"{server}/?token={TOKEN}")  # type: ignore[attr-defined]  # sets the session cookie, redirects to /
    assert drv.current_url == f"{server}/"  # type: ignore[attr-defined]
    drv.get_log("browser")  # type: ignore[attr-defined]  # drop the expected 401 of the first visit
    assert wait_state(drv, ("idle", "error"), 30) == "idle", drv.find_element(By.ID, "status").text  # type: ignore[attr-defined]
    assert "sdt_test" in drv.find_element(By.ID, "model-info").text  # type: ignore[attr-defined]

    # 1. upload a file through the file input
    rng = np.random.default_rng(0)
    img = np.clip(np.linspace(0, 255, 96)[None, :, None] + rng.normal(0, 25, (72, 96, 3)), 0, 255).astype(
        np.uint8
    )
    path = tmp_path / "upload test.png"
    Image.fromarray(img).save(path)
    drv.find_element(By.ID, "file").send_keys(str(path))  # type: ignore[attr-defined]
    assert wait_state(drv, ("done", "error")) == "done", drv.find_element(By.ID, "status").text  # type: ignore[attr-defined]
    assert body_data(drv, "depthRendered") == "1"
    total, differ, colours, _ = drv.execute_script(NON_EMPTY_JS, "depth-view")  # type: ignore[attr-defined]
    assert total == 72 * 96 and colours > 10  # a colour-mapped map at the input size, not a flat fill
    assert body_data(drv, "webgl") == "1", "WebGL unavailable in this Chromium"
    assert body_data(drv, "cloudRendered") == "1" and int(body_data(drv, "cloudPoints") or 0) > 1000
    total, differ, colours, _ = drv.execute_script(NON_EMPTY_JS, "#cloud-view canvas")  # type: ignore[attr-defined]
    assert differ > 0.01 * total and colours > 10  # points were drawn
    link = drv.find_element(By.ID, "dl-png16")  # type: ignore[attr-defined]
    assert link.get_attribute("download") == "upload_test_pred16.png" and link.get_attribute(
        "href"
    ).startswith("blob:")
    # download the 16-bit PNG through the link, as a user would, and check what arrived
    link.click()
    png16 = drv.download_dir / "upload_test_pred16.png"  # type: ignore[attr-defined]
    data = wait_file(png16)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png16) as im:
        assert im.size == (96, 72) and im.mode in ("I;16", "I;16B", "I")
        arr = np.asarray(im)
    assert arr.max() > arr.min()  # a depth map, not a constant
    artefacts = artefact_dir(tmp_path)
    (artefacts / png16.name).write_bytes(data)

    # 2. a bundled example; change the colour map (re-coloured in the page, no new request)
    drv.find_element(By.CSS_SELECTOR, "#examples button").click()  # type: ignore[attr-defined]
    time.sleep(0.2)
    assert wait_state(drv, ("done", "error")) == "done", drv.find_element(By.ID, "status").text  # type: ignore[attr-defined]
    before = drv.execute_script(NON_EMPTY_JS, "depth-view")  # type: ignore[attr-defined]
    # the 384x288 example is decoded reduced by the largest integer factor that keeps it at least the processing
    # size (176x128 at resolution 128: factor 2), so memory follows the processing size (docs/serve.md)
    assert before[0] == (384 // 2) * (288 // 2)
    drv.execute_script(  # type: ignore[attr-defined]
        "const s = document.getElementById('colormap'); s.value = 'gray'; s.dispatchEvent(new Event('change'));"
    )
    after = drv.execute_script(NON_EMPTY_JS, "depth-view")  # type: ignore[attr-defined]
    assert after[2] <= 256 and after != before
    errors = [e for e in drv.get_log("browser") if e.get("level") == "SEVERE"]  # type: ignore[attr-defined]
    assert not errors, errors
    shot = artefacts / "serve_page.png"
    assert drv.save_screenshot(str(shot))  # type: ignore[attr-defined]
    with Image.open(shot) as im:
        assert im.size[0] >= 1000
        assert len(np.unique(np.asarray(im.convert("L")))) > 50
    with capsys.disabled():
        print(f"\nbrowser test artefacts: {shot} {artefacts / png16.name}")


def test_real_server_rejects_oversize_streamed_upload(server: str) -> None:
    """Over a real socket: a body far above the limit is answered with 413 without reading all of it."""
    port = int(server.rsplit(":", 1)[1])
    body_len = 40 * 1024 * 1024
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(
            (
                "POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {TOKEN}\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                "Transfer-Encoding: chunked\r\n\r\n"
            ).encode()
        )
        sent = 0
        head = b'--b\r\nContent-Disposition: form-data; name="image"; filename="x"\r\n\r\n'
        chunk = head + bytes(1 << 20)
        reply = b""
        s.settimeout(0.5)
        while sent < body_len:
            try:
                s.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            except OSError:
                break
            sent += len(chunk)
            chunk = bytes(1 << 20)
            try:
                reply += s.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if reply:
                break
        s.settimeout(10)
        while b"\r\n\r\n" not in reply:
            data = s.recv(65536)
            if not data:
                break
            reply += data
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert sent < body_len  # answered before the whole body was sent
