"""Serve soak test: a few hundred mixed good/bad requests from several threads against a real ``anydepth serve``
(uvicorn) on 127.0.0.1. Every answer must be 200, 4xx or 503; the server must stay healthy; its RSS must stay
under ``RSS_BOUND_MB`` and return near its idle level (docs/reliability.md). Slow: ``pytest -m slow``.
"""

from __future__ import annotations

import io
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from fault_corpus import png_header_bytes

REPO = Path(__file__).resolve().parents[1]
#: peak resident memory the server may reach during the soak (MiB), model and runtime included
RSS_BOUND_MB = 700
#: how far above its idle level the server's RSS may stay once the soak is over (MiB)
RSS_RETURN_MB = 150
REQUESTS = 200
THREADS = 6

pytestmark = pytest.mark.slow
httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_mb(pid: int) -> tuple[float, float]:
    """``(current RSS, peak RSS)`` of process ``pid`` in MiB (Linux /proc)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        fields[k] = v
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, int]]:
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "2"}
    args = ["serve", "--model", "sdt_test", "--port", str(port), "--size", "224", "--log-level", "warning"]
    with subprocess.Popen(
        [sys.executable, "-m", "anydepth.cli.main", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    ) as proc:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "server exited"
            try:
                if httpx.get(f"{base}/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
        yield base, proc.pid
        proc.terminate()
        proc.wait(timeout=30)


def _png(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _requests() -> list[tuple[str, dict, dict]]:
    """``(name, files, data)`` of the request mix."""
    rng = np.random.default_rng(0)
    good = _png(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8))
    big = _png(np.zeros((7000, 7000), np.uint8))  # 49 MP, ~50 KB: memory must follow the processing size
    jpg = io.BytesIO()
    from PIL import Image

    Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(jpg, format="JPEG")
    mix = [
        ("good_png", {"image": ("a.png", good, "image/png")}, {}),
        ("good_jpg_npy", {"image": ("a.jpg", jpg.getvalue(), "image/jpeg")}, {"format": "npy"}),
        ("good_png16", {"image": ("a.png", good, "image/png")}, {"format": "png16"}),
        ("big_49mp", {"image": ("big.png", big, "image/png")}, {"format": "png16"}),
        ("bomb", {"image": ("b.png", png_header_bytes(40000, 40000), "image/png")}, {}),
        ("truncated", {"image": ("t.png", good[: len(good) // 2], "image/png")}, {}),
        ("garbage", {"image": ("g.png", rng.bytes(3000), "image/png")}, {}),
        ("empty", {"image": ("e.png", b"", "image/png")}, {}),
        ("wrong_field", {"file": ("a.png", good, "image/png")}, {}),
        ("bad_format", {"image": ("a.png", good, "image/png")}, {"format": "exe"}),
        ("bad_fov", {"image": ("a.png", good, "image/png")}, {"fov": "nan"}),
        ("bad_resolution", {"image": ("a.png", good, "image/png")}, {"resolution": "99999x99999"}),
    ]
    return mix


def test_soak(server: tuple[str, int]) -> None:
    base, pid = server
    idle, _ = _rss_mb(pid)
    mix = _requests()
    rnd = random.Random(18)
    plan = [mix[i % len(mix)] for i in range(REQUESTS)]
    rnd.shuffle(plan)
    answers: Counter[tuple[str, int]] = Counter()
    failures: list[str] = []
    peak = [idle]
    lock = threading.Lock()

    def worker(items: list[tuple[str, dict, dict]]) -> None:
        with httpx.Client(base_url=base, timeout=120) as client:
            for name, files, data in items:
                try:
                    r = client.post("/v1/predict", files=files, data=data)
                    status = r.status_code
                    body = r.text[:200] if status != 200 else ""
                except httpx.HTTPError as e:
                    status, body = -1, repr(e)
                with lock:
                    answers[(name, status)] += 1
                    if not (status == 200 or 400 <= status < 500 or status == 503):
                        failures.append(f"{name}: {status} {body}")
                    peak[0] = max(peak[0], _rss_mb(pid)[0])

    threads = [threading.Thread(target=worker, args=(plan[k::THREADS],)) for k in range(THREADS)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.monotonic() - t0
    assert not failures, failures[:10]
    assert httpx.get(f"{base}/v1/health", timeout=10).status_code == 200
    by_name = {name: sorted({s for (n, s) in answers if n == name}) for name, _, _ in mix}
    for name in ("good_png", "good_jpg_npy", "good_png16", "big_49mp"):
        assert set(by_name[name]) <= {200, 503} and 200 in by_name[name], (name, by_name[name])
    for name in ("bomb", "truncated", "garbage", "empty", "wrong_field", "bad_format", "bad_fov"):
        assert all(400 <= s < 500 for s in by_name[name]), (name, by_name[name])
    time.sleep(2.0)
    after, hwm = _rss_mb(pid)
    report = (
        f"{REQUESTS} requests, {THREADS} threads, {seconds:.1f} s; RSS idle {idle:.0f} MiB, peak {hwm:.0f} MiB, "
        f"after {after:.0f} MiB; answers {dict(sorted(by_name.items()))}"
    )
    print(report)
    assert hwm < RSS_BOUND_MB, report
    assert after < idle + RSS_RETURN_MB, report


def test_wrong_field_names_the_expected_field(server: tuple[str, int]) -> None:
    base, _ = server
    r = httpx.post(f"{base}/v1/predict", files={"file": ("a.png", b"x", "image/png")}, timeout=30)
    assert r.status_code == 400 and "missing field 'image'" in r.json()["detail"], r.text
