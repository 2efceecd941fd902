"""Fault injection for long jobs: kill -9 / SIGINT at seeded points of ``train`` and ``filter``, then resume;
the final outputs must be identical to those of an uninterrupted run (docs/reliability.md).

The kill points are progress counts (training records in ``metrics.jsonl``, rows in ``scores.progress.csv``) drawn
from a seeded generator; the child is signalled as soon as its progress file reaches the count. Slow (a child
process per run, each importing torch): ``pytest -m slow tests/test_reliability_faults.py``.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from anydepth.config import config_to_yaml
from fault_corpus import strict_json_load
from test_reliability_train import tiny

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "anydepth.cli.main", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}


def run_to_end(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(_cmd(*args), cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    return res


def run_and_signal(args: list[str], cwd: Path, progress: Callable[[], int], at: int, sig: int) -> int | None:
    """Start ``anydepth ARGS``, send ``sig`` once ``progress()`` reaches ``at``; the child's return code."""
    with subprocess.Popen(
        _cmd(*args), cwd=cwd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    ) as child:
        deadline = time.monotonic() + 300
        while child.poll() is None and time.monotonic() < deadline:
            if progress() >= at:
                child.send_signal(sig)
                break
            time.sleep(0.005)
        _, err = child.communicate(timeout=300)
    if sig == signal.SIGINT and child.returncode not in (0, None):
        assert child.returncode == 130 and "Traceback" not in err, err
    return child.returncode


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


# -- train --------------------------------------------------------------------------------------------------
def test_train_killed_and_resumed_gives_identical_weights(tmp_path: Path) -> None:
    steps = 12
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(
        config_to_yaml(tiny(f"train.max_steps={steps}", "train.ckpt_every=2", "train.keep_last=2"))
    )
    base = ["train", "--config", str(cfg), "--no-progress"]
    run_to_end([*base, "--output", "ref"], tmp_path)
    ref = (tmp_path / "ref" / "model_final.safetensors").read_bytes()
    ref_losses = [
        r["loss"] for r in map(_json, (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines())
    ]

    rng = random.Random(18)
    points = [(rng.randint(1, steps - 1), sig) for sig in (signal.SIGKILL, signal.SIGKILL, signal.SIGINT)]
    interrupted = 0
    for n, (at, sig) in enumerate(points):
        out = tmp_path / f"run{n}"
        rc = run_and_signal(
            [*base, "--output", out.name], tmp_path, lambda o=out: _lines(o / "metrics.jsonl"), at, sig
        )
        if rc != 0:  # interrupted (not finished before the signal): resume until done
            interrupted += 1
            assert (out / "checkpoints").is_dir() or at <= 2, f"no checkpoint after {at} steps"
            resume = ["train", "--output", out.name, "--resume", "--no-progress"]
            if not (out / "checkpoints").is_dir() or not any((out / "checkpoints").glob("step_*.pt")):
                resume = [*base, "--output", out.name, "--overwrite"]
            run_to_end(resume, tmp_path)
        assert (out / "model_final.safetensors").read_bytes() == ref, (
            f"weights differ after {sig!r} at step {at}"
        )
        recs = [_json(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in recs] == list(range(1, steps + 1)), "duplicate or missing records"
        assert [r["loss"] for r in recs] == ref_losses
        assert not list(out.rglob(".*.tmp*")), "temporary files left behind"
    assert interrupted >= 2, "the runs ended before the signals: no fault was injected"


def _json(line: str) -> dict:
    import json

    return json.loads(line)


# -- filter -------------------------------------------------------------------------------------------------
def test_filter_killed_and_resumed_gives_identical_outputs(tmp_path: Path) -> None:
    from anydepth.data.datasets.synthetic import write_synthetic_dataset

    root = tmp_path / "data"
    n = 60
    write_synthetic_dataset(root, n, (48, 64), seed=5)
    base = ["filter", "--dataset", f"folder={root}", "--no-plots", "--quiet"]
    run_to_end([*base, "--output", "ref"], tmp_path)
    final = ("scores.csv", "summary.json", "summary.md")

    def outputs(out: Path) -> dict[str, bytes]:
        files = {f: (out / f).read_bytes() for f in final}
        files.update({f"lists/{p.name}": p.read_bytes() for p in sorted((out / "lists").iterdir())})
        return files

    ref = outputs(tmp_path / "ref")
    strict_json_load(tmp_path / "ref" / "summary.json")
    rng = random.Random(18)
    points = [(rng.randint(2, n - 2), sig) for sig in (signal.SIGKILL, signal.SIGKILL, signal.SIGINT)]
    interrupted = 0
    for k, (at, sig) in enumerate(points):
        out = tmp_path / f"out{k}"
        progress = out / "scores.progress.csv"
        rc = run_and_signal([*base, "--output", out.name], tmp_path, lambda p=progress: _lines(p), at, sig)
        if rc != 0:
            interrupted += 1
            assert not (out / "scores.csv").exists(), "a final output written by an interrupted run"
            run_to_end([*base, "--output", out.name], tmp_path)
        assert outputs(out) == ref, f"outputs differ after {sig!r} at sample {at}"
    assert interrupted >= 2, "the runs ended before the signals: no fault was injected"


# -- infer --------------------------------------------------------------------------------------------------
def test_infer_killed_and_resumed_gives_identical_outputs(tmp_path: Path) -> None:
    import torch

    import anydepth
    from fault_corpus import rgb_image

    torch.manual_seed(0)
    ckpt = anydepth.save_model(
        anydepth.create_model("sdt_test"), tmp_path / "tiny.safetensors", contents="full"
    )
    n = 24
    for i in range(n):
        rgb_image(tmp_path / "in" / f"im{i:02d}.png", (48, 64), seed=i)
    base = [
        "infer",
        "in",
        "--checkpoint",
        str(ckpt),
        "--save",
        "all",
        "--size",
        "32",
        "--batch-size",
        "1",
        "-q",
    ]
    run_to_end([*base, "-o", "ref"], tmp_path)

    def outputs(out: Path) -> dict[str, bytes]:
        return {
            p.name: p.read_bytes()
            for p in sorted(out.iterdir())
            if p.is_file() and not p.name.startswith((".", "summary"))
        }

    ref = outputs(tmp_path / "ref")
    assert len(ref) == 5 * n
    rng = random.Random(18)
    points = [(rng.randint(2, n - 2), sig) for sig in (signal.SIGKILL, signal.SIGKILL, signal.SIGINT)]
    interrupted = 0
    for k, (at, sig) in enumerate(points):
        out = tmp_path / f"out{k}"
        rc = run_and_signal(
            [*base, "-o", out.name],
            tmp_path,
            lambda o=out: len(list(o.glob("*.ply"))) if o.is_dir() else 0,
            at,
            sig,
        )
        if rc != 0:
            interrupted += 1
            if sig == signal.SIGINT:  # a clean stop: the summary lists what was done and what is partial
                s = strict_json_load(out / "summary.json")
                assert s["interrupted"] and s["counts"]["ok"] >= at - 1
            run_to_end([*base, "-o", out.name, "--skip-existing"], tmp_path)
        assert outputs(out) == ref, f"outputs differ after {sig!r} at image {at}"
    assert interrupted >= 2, "the runs ended before the signals: no fault was injected"
