"""Micro-batching inference worker for the HTTP service: one thread, a bounded queue, same-size grouping.

Requests are decoded by the web handlers and submitted here as ``Job`` objects; a single worker thread runs
the forward passes, so the event loop never blocks on the model and the model is never called from two threads
at once. When a job is taken from the queue, the worker waits up to ``max_wait_s`` (a few milliseconds) for
more jobs with the *same processing size* and runs them as one batch (``inference.predict_iter`` with a fixed
size), up to ``max_batch_size``. Jobs of other sizes stay queued in arrival order for the next round.

Admission is bounded: at most ``capacity`` jobs may be admitted (waiting *or* running) at once; ``submit``
raises ``QueueFullError`` beyond that (the service answers 503), so memory and latency stay bounded under load.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from anydepth.inference import DEFAULT_NOMINAL_RANGE, PredictItem, Resolution, Runner, predict_iter
from anydepth.types import Prediction

__all__ = ["Job", "QueueFullError", "BatchPredictor"]

log = logging.getLogger(__name__)


class QueueFullError(RuntimeError):
    """Raised by ``BatchPredictor.submit`` when ``capacity`` jobs are already admitted."""


@dataclass
class Job:
    """One image waiting for a forward pass.

    Attributes:
        item: the image (uint8 ``[H,W,3]`` array) with its intrinsics and metadata.
        proc_hw: processing size ``(H', W')`` in pixels, a multiple of the runner's patch size; jobs with the
            same ``proc_hw`` may share a batch.
        future: completed with the ``Prediction`` (``value`` ``[H,W]`` at the input size) or the exception.
        submitted: ``time.perf_counter()`` at submission (for the queue-wait timing).
    """

    item: PredictItem
    proc_hw: tuple[int, int]
    future: concurrent.futures.Future[Prediction] = field(default_factory=concurrent.futures.Future)
    submitted: float = field(default_factory=time.perf_counter)


class BatchPredictor:
    """A worker thread that runs a ``Runner`` on micro-batches of same-size jobs.

    Args:
        runner: the inference runner (``TorchRunner`` or any ``inference.Runner``). Only the worker thread calls it.
        capacity: maximum number of admitted jobs (waiting + running); ``submit`` raises ``QueueFullError`` beyond.
        max_batch_size: maximum images per forward pass (1 disables batching).
        max_wait_s: how long the worker waits for more same-size jobs after taking the first one (seconds).
        flip_tta: horizontal-flip test-time augmentation for every forward pass.
        nominal_range: ``(near, far)`` for the nominal depth (``inference.nominal_depth``) of each prediction.

    The thread starts on the first ``submit`` (or ``start``) and stops on ``close``.
    """

    def __init__(
        self,
        runner: Runner,
        *,
        capacity: int = 16,
        max_batch_size: int = 4,
        max_wait_s: float = 0.005,
        flip_tta: bool = False,
        nominal_range: tuple[float, float] = DEFAULT_NOMINAL_RANGE,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity (queue size) must be >= 1, got {capacity}")
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if not 0.0 <= max_wait_s <= 1.0:
            raise ValueError(f"max_wait_s must be in [0, 1] seconds, got {max_wait_s}")
        self.runner = runner
        self.capacity = int(capacity)
        self.max_batch_size = int(max_batch_size)
        self.max_wait_s = float(max_wait_s)
        self.flip_tta = bool(flip_tta)
        self.nominal_range = nominal_range
        self._cond = threading.Condition()
        self._waiting: deque[Job] = deque()
        self._admitted = 0
        self._closed = False
        self._thread: threading.Thread | None = None
        self.batches_run = 0
        self.images_run = 0
        self.largest_batch = 0

    # ---------------------------------------------------------------------------------------------------------
    # Client side (any thread)
    # ---------------------------------------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Jobs admitted and not finished (waiting + running)."""
        with self._cond:
            return self._admitted

    def stats(self) -> dict[str, Any]:
        """Counters for the health endpoint."""
        with self._cond:
            return {
                "pending": self._admitted,
                "waiting": len(self._waiting),
                "capacity": self.capacity,
                "max_batch_size": self.max_batch_size,
                "batches_run": self.batches_run,
                "images_run": self.images_run,
                "largest_batch": self.largest_batch,
            }

    def start(self) -> None:
        """Start the worker thread (idempotent)."""
        with self._cond:
            if self._closed:
                raise RuntimeError("BatchPredictor is closed")
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="anydepth-serve-batcher", daemon=True)
                self._thread.start()

    def submit(self, job: Job) -> concurrent.futures.Future[Prediction]:
        """Queue ``job``; returns its future.

        Raises:
            QueueFullError: ``capacity`` jobs are already admitted.
            RuntimeError: the predictor was closed.
        """
        self.start()
        with self._cond:
            if self._closed:
                raise RuntimeError("BatchPredictor is closed")
            if self._admitted >= self.capacity:
                raise QueueFullError(f"inference queue full ({self.capacity} requests admitted)")
            self._admitted += 1
            self._waiting.append(job)
            self._cond.notify_all()
        return job.future

    def close(self, timeout: float = 10.0) -> None:
        """Stop accepting jobs, let the worker finish the queued ones, and join it (bounded by ``timeout``)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                log.warning("inference worker still busy after %.1f s; leaving it (daemon thread)", timeout)

    # ---------------------------------------------------------------------------------------------------------
    # Worker side
    # ---------------------------------------------------------------------------------------------------------

    def _take_batch(self) -> list[Job] | None:
        """Block for the next job, then gather same-size jobs for up to ``max_wait_s``. None when closed."""
        with self._cond:
            while not self._waiting:
                if self._closed:
                    return None
                self._cond.wait(0.5)
            first = self._waiting.popleft()
            batch = [first]
            deadline = time.monotonic() + self.max_wait_s
            while len(batch) < self.max_batch_size:
                keep: deque[Job] = deque()
                while self._waiting:
                    j = self._waiting.popleft()
                    if j.proc_hw == first.proc_hw and len(batch) < self.max_batch_size:
                        batch.append(j)
                    else:
                        keep.append(j)
                self._waiting = keep
                remaining = deadline - time.monotonic()
                if len(batch) >= self.max_batch_size or remaining <= 0 or self._closed:
                    break
                self._cond.wait(remaining)
            return batch

    def _run(self, batch: list[Job]) -> None:
        # Jobs whose request went away (future cancelled) are dropped; the others can no longer be cancelled.
        batch = [j for j in batch if j.future.set_running_or_notify_cancel()]
        if not batch:
            return
        t0 = time.perf_counter()
        h, w = batch[0].proc_hw
        try:
            preds = list(
                predict_iter(
                    self.runner,
                    [j.item for j in batch],
                    resolution=Resolution(short_side=None, size=(h, w)),
                    batch_size=len(batch),
                    flip_tta=self.flip_tta,
                    nominal_range=self.nominal_range,
                )
            )
            if len(preds) != len(batch):
                raise RuntimeError(f"predict_iter returned {len(preds)} predictions for {len(batch)} images")
        except Exception as e:  # every waiting request must get an answer
            log.exception("inference failed for a batch of %d image(s) at %dx%d", len(batch), w, h)
            for j in batch:
                j.future.set_exception(e)
            return
        done = time.perf_counter()
        for j, p in zip(batch, preds, strict=True):
            p.meta["queue_s"] = t0 - j.submitted
            p.meta["batch_s"] = done - t0
            j.future.set_result(p)

    def _loop(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            try:
                self._run(batch)
            finally:
                with self._cond:
                    self._admitted -= len(batch)
                    self.batches_run += 1
                    self.images_run += len(batch)
                    self.largest_batch = max(self.largest_batch, len(batch))
