"""Concurrency of ``anydepth serve``: bounded queue (503), micro-batching, 16 parallel requests, responsiveness."""

from __future__ import annotations

import asyncio
import io
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("python_multipart")
httpx = pytest.importorskip("httpx")

import anydepth  # noqa: E402
from anydepth.inference import PredictItem, predict  # noqa: E402
from anydepth.serve.app import create_app  # noqa: E402
from anydepth.serve.batching import BatchPredictor, Job, QueueFullError  # noqa: E402
from anydepth.types import DepthSpace  # noqa: E402

BASE = "http://127.0.0.1"


class GatedRunner:
    """Known-answer runner (disparity = mean RGB + 0.5) that can be held at a gate and records batch shapes."""

    patch_size = 16
    output_space = DepthSpace.DISPARITY_AFFINE_INVARIANT
    device = torch.device("cpu")

    def __init__(self, gate: threading.Event | None = None, delay: float = 0.0) -> None:
        self.gate = gate
        self.delay = delay
        self.shapes: list[tuple[int, ...]] = []
        self.entered = threading.Event()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(timeout=30), "test gate never opened"
        if self.delay:
            time.sleep(self.delay)
        return x.mean(dim=1, keepdim=True) + 0.5


def image(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


async def post_npy(client: httpx.AsyncClient, data: bytes) -> httpx.Response:
    return await client.post(
        "/v1/predict", files={"image": ("a.png", data, "image/png")}, data={"format": "npy"}, timeout=60
    )


def npy(r: httpx.Response) -> np.ndarray:
    assert r.status_code == 200, r.text
    return np.load(io.BytesIO(r.content))


async def wait_for(cond, timeout: float = 10.0) -> None:
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, "condition not reached in time"
        await asyncio.sleep(0.01)


# ------------------------------------------------------------------------------------------------------------
# The BatchPredictor on its own
# ------------------------------------------------------------------------------------------------------------


def test_batches_group_same_size_jobs_and_results_go_to_the_right_request() -> None:
    gate = threading.Event()
    runner = GatedRunner(gate)
    bp = BatchPredictor(runner, capacity=16, max_batch_size=3, max_wait_s=0.0)
    try:
        blocker = Job(PredictItem(image(16, 16, 99)), (16, 16))
        bp.submit(blocker)
        assert runner.entered.wait(10)  # the worker is busy: everything below queues up
        sizes = [(16, 32), (16, 32), (32, 16), (16, 32), (32, 16), (16, 32), (16, 32)]
        imgs = [image(h, w, i) for i, (h, w) in enumerate(sizes)]
        jobs = [Job(PredictItem(im), hw) for im, hw in zip(imgs, sizes, strict=True)]
        futs = [bp.submit(j) for j in jobs]
        assert bp.pending == 1 + len(jobs)
        gate.set()
        for im, f in zip(imgs, futs, strict=True):
            pred = f.result(timeout=30)
            np.testing.assert_allclose(pred.value, im.mean(axis=2) / 255.0 + 0.5, atol=1e-6)
        # first the blocker, then same-size groups of at most 3 in arrival order of their first member
        assert [s[0] for s in runner.shapes] == [1, 3, 2, 2]
        assert [s[2:] for s in runner.shapes] == [(16, 16), (16, 32), (32, 16), (16, 32)]
        assert bp.pending == 0 and bp.stats()["largest_batch"] == 3
    finally:
        gate.set()
        bp.close()


def test_capacity_is_enforced_and_released() -> None:
    gate = threading.Event()
    bp = BatchPredictor(GatedRunner(gate), capacity=2, max_batch_size=1, max_wait_s=0.0)
    try:
        f1 = bp.submit(Job(PredictItem(image(16, 16, 1)), (16, 16)))
        f2 = bp.submit(Job(PredictItem(image(16, 16, 2)), (16, 16)))
        with pytest.raises(QueueFullError):
            bp.submit(Job(PredictItem(image(16, 16, 3)), (16, 16)))
        gate.set()
        f1.result(timeout=30)
        f2.result(timeout=30)
        deadline = time.monotonic() + 10
        while bp.pending and time.monotonic() < deadline:
            time.sleep(0.01)
        assert bp.pending == 0
        bp.submit(Job(PredictItem(image(16, 16, 4)), (16, 16))).result(timeout=30)
    finally:
        gate.set()
        bp.close()
    with pytest.raises(RuntimeError, match="closed"):
        bp.submit(Job(PredictItem(image(16, 16, 5)), (16, 16)))


def test_a_failing_runner_fails_only_its_batch() -> None:
    class Flaky(GatedRunner):
        def __call__(self, x: torch.Tensor) -> torch.Tensor:
            if x.shape[-1] == 48:
                raise RuntimeError("boom")
            return super().__call__(x)

    bp = BatchPredictor(Flaky(), capacity=4, max_batch_size=2, max_wait_s=0.0)
    try:
        bad = bp.submit(Job(PredictItem(image(16, 48, 0)), (16, 48)))
        with pytest.raises(RuntimeError, match="boom"):
            bad.result(timeout=30)
        good = bp.submit(Job(PredictItem(image(16, 16, 0)), (16, 16)))
        assert good.result(timeout=30).value.shape == (16, 16)
    finally:
        bp.close()


# ------------------------------------------------------------------------------------------------------------
# Through HTTP
# ------------------------------------------------------------------------------------------------------------


def test_queue_full_gives_503_and_the_event_loop_stays_responsive() -> None:
    gate = threading.Event()
    runner = GatedRunner(gate)
    app = create_app(runner, queue_size=2, max_batch_size=1, batch_wait_ms=0, default_resolution="native")
    data = png(image(32, 32, 0))

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as c:
            t1 = asyncio.create_task(post_npy(c, data))
            t2 = asyncio.create_task(post_npy(c, data))
            await wait_for(lambda: app.state.predictor.pending == 2)
            # the event loop answers while inference is blocked
            t0 = time.monotonic()
            h = await c.get("/v1/health")
            assert h.status_code == 200 and h.json()["queue"]["pending"] == 2
            assert time.monotonic() - t0 < 5.0
            r3 = await post_npy(c, data)
            assert r3.status_code == 503, r3.text
            assert r3.json()["status"] == 503 and "queue is full" in r3.json()["detail"]
            assert r3.headers["retry-after"] == "1"
            gate.set()
            r1, r2 = await t1, await t2
            expected = image(32, 32, 0).mean(axis=2) / 255.0 + 0.5
            np.testing.assert_allclose(npy(r1), expected, atol=1e-6)
            np.testing.assert_allclose(npy(r2), expected, atol=1e-6)
            await wait_for(lambda: app.state.predictor.pending == 0)
            assert (await post_npy(c, data)).status_code == 200  # capacity was released

    try:
        asyncio.run(asyncio.wait_for(scenario(), timeout=60))
    finally:
        gate.set()
        app.state.predictor.close()


def test_inference_error_is_a_json_500_and_the_service_survives() -> None:
    class Broken(GatedRunner):
        def __call__(self, x: torch.Tensor) -> torch.Tensor:
            return torch.zeros(x.shape[0], 2, 3, 3)  # wrong shape

    app = create_app(Broken(), default_resolution="native", batch_wait_ms=0)

    async def scenario() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as c:
            r = await post_npy(c, png(image(16, 16, 0)))
            assert r.status_code == 500 and "inference failed" in r.json()["detail"]
            assert (await c.get("/v1/health")).status_code == 200

    try:
        asyncio.run(asyncio.wait_for(scenario(), timeout=60))
    finally:
        app.state.predictor.close()


def test_sixteen_parallel_requests_match_sequential_answers() -> None:
    torch.manual_seed(0)
    model = anydepth.create_model("sdt_test")
    with torch.no_grad():
        model.decoder.head.conv_out.bias.fill_(1.0)
    model.eval()
    # two input sizes -> two processing sizes, so batching must group by size
    imgs = [image(48, 64, i) if i % 2 == 0 else image(64, 48, i) for i in range(16)]
    datas = [png(im) for im in imgs]
    app = create_app(model, queue_size=16, max_batch_size=4, batch_wait_ms=50, default_resolution="64")

    async def scenario() -> tuple[list[httpx.Response], list[httpx.Response]]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as c:
            sequential = [await post_npy(c, d) for d in datas]
            assert app.state.predictor.largest_batch == 1
            parallel = await asyncio.gather(*(post_npy(c, d) for d in datas))
            return sequential, list(parallel)

    try:
        sequential, parallel = asyncio.run(asyncio.wait_for(scenario(), timeout=300))
    finally:
        app.state.predictor.close()
    assert len(parallel) == 16
    for im, s, p in zip(imgs, sequential, parallel, strict=True):
        a, b = npy(s), npy(p)
        assert a.shape == b.shape == im.shape[:2]
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
    # the service's answer is the library's answer
    np.testing.assert_allclose(npy(sequential[0]), predict(model, imgs[0], resolution="64").value, atol=1e-5)
    stats = app.state.predictor.stats()
    assert stats["images_run"] == 32 and stats["largest_batch"] >= 2  # concurrent requests were batched
    assert max(int(r.headers["x-anydepth-batch-size"]) for r in parallel) >= 2
