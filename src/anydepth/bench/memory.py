"""Peak memory of one forward pass, measured in a fresh subprocess per configuration.

* CPU: the process's peak resident set. The child builds the model and inputs, runs one warm-up forward,
  resets the kernel's high-water mark (``5`` written to ``/proc/self/clear_refs``), reads ``VmRSS`` from
  ``/proc/self/status``, runs one more forward and reads ``VmHWM``. The difference is the activation and
  workspace memory of that forward (``peak_mib``); ``first_call_mib`` is the same for the very first
  forward (includes one-time allocations), ``process_peak_mib`` the whole process (runtime + weights +
  activations). The child runs with ``MALLOC_MMAP_THRESHOLD_=65536`` so that glibc returns freed buffers
  to the system and the high-water mark is a clean peak (the environment of *this* process is untouched;
  with ``LD_PRELOAD=...jemalloc...`` the setting is irrelevant and jemalloc's retained pages count).
* CUDA: ``torch.cuda.max_memory_allocated`` minus the memory allocated before the forward.

The child is ``python -m anydepth.bench.memory_child '<json spec>' result.json`` (run it by hand the same way, e.g.
with ``'{"model": "sdt_test", "resolution": 64}'``); it builds the runner with ``anydepth.bench.efficiency`` and
measures it with ``measure_forward_peak``, so this module imports nothing from the benchmark.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = ["measure_peak_memory", "measure_forward_peak", "read_proc_status_kib"]

_MIB = 1024.0 * 1024.0


def read_proc_status_kib(key: str) -> int:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``); raises RuntimeError off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError as e:  # pragma: no cover - non-Linux
        raise RuntimeError(f"cannot read /proc/self/status: {e}") from e
    raise RuntimeError(f"/proc/self/status has no {key} field")


def _reset_hwm() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def measure_forward_peak(fn: Callable[[], Any], device: torch.device) -> dict[str, Any]:
    """Peak memory of one call of ``fn`` (one forward) in *this* process; see module docstring.

    Args:
        fn: the forward to measure (built by ``anydepth.bench.efficiency.build_runner``), run twice.
        device: where ``fn`` runs (``cpu`` or ``cuda``).

    Returns:
        ``{"kind", "peak_mib", "first_call_mib", "process_peak_mib", "baseline_mib"}``.
    """
    if device.type == "cuda":
        with torch.no_grad():
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            out = fn()
            torch.cuda.synchronize(device)
            first = torch.cuda.max_memory_allocated(device) - base
            del out
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            out = fn()
            torch.cuda.synchronize(device)
            peak = torch.cuda.max_memory_allocated(device) - base
            total = torch.cuda.max_memory_allocated(device)
        return {
            "kind": "cuda_max_allocated",
            "peak_mib": peak / _MIB,
            "first_call_mib": first / _MIB,
            "process_peak_mib": total / _MIB,
            "baseline_mib": base / _MIB,
        }
    if device.type != "cpu":
        raise ValueError(f"memory measurement supports cpu and cuda devices, got {device}")
    with torch.no_grad():
        gc.collect()
        _reset_hwm()
        rss0 = read_proc_status_kib("VmRSS")
        out = fn()
        first = read_proc_status_kib("VmHWM") - rss0
        del out
        gc.collect()
        _reset_hwm()
        rss1 = read_proc_status_kib("VmRSS")
        out = fn()
        hwm = read_proc_status_kib("VmHWM")
        del out
    return {
        "kind": "cpu_rss_delta",
        "peak_mib": (hwm - rss1) / 1024.0,
        "first_call_mib": first / 1024.0,
        "process_peak_mib": hwm / 1024.0,
        "baseline_mib": rss1 / 1024.0,
    }


def measure_peak_memory(
    model: str,
    *,
    part: str = "decoder",
    variant: str = "eager",
    dtype: str = "float32",
    resolution: int = 256,
    batch: int = 1,
    device: str = "cpu",
    tile_rows: int | None = None,
    max_tile_pixels: int | None = None,
    threads: int | None = None,
    seed: int = 0,
    timeout: float = 1800.0,
) -> dict[str, Any]:
    """Peak memory of one forward of a configuration, measured in a fresh Python subprocess.

    Args:
        model: preset name.
        part, variant, dtype, resolution, batch, device, tile_rows, max_tile_pixels: as in
            ``anydepth.bench.efficiency.build_runner``.
        threads: torch threads in the child (default: this process's ``torch.get_num_threads()``).
        seed: RNG seed.
        timeout: seconds before the child is killed.

    Returns:
        ``{"kind", "peak_mib", "first_call_mib", "process_peak_mib", "baseline_mib"}`` (MiB).

    Raises:
        RuntimeError: the child failed (its stderr tail is in the message).
    """
    spec = {
        "model": model,
        "part": part,
        "variant": variant,
        "dtype": dtype,
        "resolution": int(resolution),
        "batch": int(batch),
        "device": device,
        "tile_rows": tile_rows,
        "max_tile_pixels": max_tile_pixels,
        "threads": threads or torch.get_num_threads(),
        "seed": seed,
    }
    env = dict(os.environ)
    env.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")
    with tempfile.TemporaryDirectory(prefix="anydepth-mem-") as tmp:
        result_path = Path(tmp) / "result.json"
        proc = subprocess.run(
            [sys.executable, "-m", "anydepth.bench.memory_child", json.dumps(spec), str(result_path)],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:  # the child's last stderr line is its exception ("ValueError: ...")
            lines = proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"]
            raise RuntimeError(f"memory measurement of {spec['variant']} {spec['dtype']} failed: {lines[-1]}")
        if not result_path.is_file():
            raise RuntimeError(f"memory measurement of {spec} wrote no result: {proc.stderr.strip()[-500:]}")
        result: dict[str, Any] = json.loads(result_path.read_text())
    return result
