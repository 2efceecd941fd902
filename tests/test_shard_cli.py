"""Sharded ``anydepth eval`` and ``anydepth infer``: two CPU processes + merge == one process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import test_infer_cli
from anydepth.cli.main import main
from anydepth.shard import Shard, is_complete, shard_dirs
from test_eval_datasets import write_nyu

SRC = Path(__file__).resolve().parents[1] / "src"
ckpt = test_infer_cli.ckpt  # the fixture: a tiny sdt_test checkpoint whose output varies over the image


def _two_shards(argv: list[str]) -> list[int]:
    """Run ``anydepth argv`` as two processes: shard 0 by ``--shard 0/2``, shard 1 as torchrun starts it; their
    exit statuses (a failed status comes with the process output)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    # the same intra-op thread count as this process, whose in-process runs are compared with the shards' (a
    # different split of a reduction changes the last float bit)
    env["OMP_NUM_THREADS"] = str(torch.get_num_threads())
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "anydepth.cli.main", *argv]
    procs = [
        subprocess.Popen([*cmd, "--shard", "0/2"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT),
        subprocess.Popen(
            cmd, env={**env, "RANK": "1", "WORLD_SIZE": "2"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        ),
    ]
    codes = []
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode in (0, 1), out.decode()
        codes.append(p.returncode)
    return codes


def _without(doc: dict, *keys: str) -> dict:
    return {k: v for k, v in doc.items() if k not in keys}


# ----------------------------------------------------------------------------------------------------------------
# eval
# ----------------------------------------------------------------------------------------------------------------


def test_eval_two_processes_then_merge_equal_one_run(tmp_path: Path, ckpt: Path, capsys) -> None:
    data = tmp_path / "data"
    write_nyu(data / "nyuv2", n=5, hw=(48, 64))
    (
        data / "nyuv2" / "test/kitchen_0001/depth_0004.png"
    ).unlink()  # one failed sample, kept with --allow-missing
    common = ["eval", "--checkpoint", str(ckpt), "--benchmark", "nyuv2", "--data-root", str(data)]
    common += ["--processing-res", "64", "--device", "cpu", "--no-progress", "--allow-missing"]
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    assert main([*common, "--output", str(single)]) == 0

    assert _two_shards([*common, "--output", str(sharded)]) == [0, 0]
    assert not (sharded / "metrics.json").exists()  # shards write only into their own directories
    dirs = shard_dirs(sharded)
    assert [s for s, _ in dirs] == [Shard(0, 2), Shard(1, 2)] and all(is_complete(d) for _, d in dirs)
    n_rows = [len((d / "per_sample.csv").read_text().splitlines()) - 1 for _, d in dirs]
    assert n_rows == [3, 1]  # samples 0, 2, 4 and 1, 3 (sample 3 failed)

    # a finished shard is not recomputed
    before = (dirs[0][1] / "metrics.json").read_bytes()
    capsys.readouterr()
    assert main([*common, "--output", str(sharded), "--shard", "0/2"]) == 0
    assert "already done" in capsys.readouterr().out
    assert (dirs[0][1] / "metrics.json").read_bytes() == before

    assert main([*common, "--output", str(sharded)]) == 0  # the merge
    assert (sharded / "per_sample.csv").read_bytes() == (single / "per_sample.csv").read_bytes()
    assert (sharded / "table.md").read_bytes() == (single / "table.md").read_bytes()
    one, merged = (json.loads((d / "metrics.json").read_text()) for d in (single, sharded))
    b1, bm = one["benchmarks"]["nyuv2"], merged["benchmarks"]["nyuv2"]
    assert bm["metrics"] == b1["metrics"] and bm["num_samples"] == 4 and bm["complete"] is False
    assert [f["name"] for f in bm["failures"]] == ["test/kitchen_0001/rgb_0004.png"]
    assert _without(bm, "seconds") == _without(b1, "seconds")
    assert _without(merged, "created_utc", "benchmarks", "arguments") == _without(
        one, "created_utc", "benchmarks", "arguments"
    )
    assert _without(merged["arguments"], "output") == _without(one["arguments"], "output")


def test_eval_merge_refuses_missing_or_mismatched_shards(tmp_path: Path, capsys) -> None:
    data, preds = tmp_path / "data", tmp_path / "preds"
    write_nyu(data / "nyuv2", n=3)
    preds.mkdir()
    for i in range(3):  # disparity-like predictions, one per sample
        p = preds / f"test/kitchen_{i % 2:04d}/rgb_{i + 1:04d}.npy"
        p.parent.mkdir(parents=True, exist_ok=True)
        np.save(p, np.linspace(1.0, 2.0, 48 * 64, dtype=np.float32).reshape(48, 64) + i)
    common = ["eval", "--predictions", str(preds), "--pred-space", "disparity", "--benchmark", "nyuv2"]
    common += ["--data-root", str(data), "--no-progress", "--output", str(tmp_path / "out")]
    assert main([*common, "--shard", "1/3"]) == 0
    capsys.readouterr()
    assert main(common) == 2
    assert "0/3, 2/3 are missing or unfinished" in capsys.readouterr().err
    assert main([*common, "--shard", "0/3", "--alignment", "median"]) == 0
    assert main([*common, "--shard", "2/3"]) == 0
    assert main(common) == 2
    assert "other arguments (alignment='median'" in capsys.readouterr().err
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_merge_results_restores_rows_failures_and_layout_checks(tmp_path: Path) -> None:
    from anydepth.eval.evaluate import evaluate, merge_results
    from anydepth.eval.report import per_sample_csv, read_per_sample_csv

    root = tmp_path / "nyuv2"
    write_nyu(root, n=7, list_file=False)  # scanned layout: 7 of the official 654 -> a "(layout)" failure
    (root / "test/kitchen_0000/depth_0003.png").unlink()

    def predict(rgb: np.ndarray) -> np.ndarray:
        return rgb.mean(-1).astype(np.float32) / 255.0 + 0.1

    kw = {"pred_space": "disparity", "allow_missing": True}
    one = evaluate(predict, "nyuv2", root, **kw)
    parts = [evaluate(predict, "nyuv2", root, shard=Shard(k, 3), **kw) for k in (2, 0, 1)]
    # scan order: kitchen_0000/rgb_0001, 0003, 0005, 0007, kitchen_0001/rgb_0002, ...; shard 1 owns rgb_0003 (failed)
    assert [p.num_samples for p in parts] == [2, 3, 1]
    merged = merge_results(parts)
    assert [f.name for f in merged.failures] == [f.name for f in one.failures]
    assert [f.name for f in one.failures][-1] == "(layout)" and len(one.failures) == 2
    assert merged.metrics == one.metrics and merged.per_sample == one.per_sample
    assert _without(merged.to_dict(), "seconds") == _without(one.to_dict(), "seconds")
    # rows survive the CSV round trip exactly (floats are written with repr)
    (tmp_path / "per_sample.csv").write_text(per_sample_csv([one]))
    assert read_per_sample_csv(tmp_path / "per_sample.csv") == {"nyuv2": one.per_sample}
    with pytest.raises(ValueError, match="shards 0..2 of 3"):
        merge_results(parts[:2])


# ----------------------------------------------------------------------------------------------------------------
# infer
# ----------------------------------------------------------------------------------------------------------------


def _images(src: Path) -> None:
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(40, 56), (48, 48), (40, 56), (36, 60), (40, 56)]):
        sub = src / ("sub" if i % 2 else "")
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(sub / f"img{i}.png")
    (src / "broken.png").write_bytes(b"not a png")  # a failed input, recorded like in one run


def _files(out: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and "shards" not in p.parts and not p.name.startswith("summary")
    }


def _comparable(out: Path) -> dict:
    """``out/summary.json`` without what differs between runs (times, the output directory)."""
    summary = json.loads((out / "summary.json").read_text().replace(str(out), "OUT"))
    s = _without(summary, "started", "finished", "timings", "args")
    s["inputs"] = [_without(r, "forward_s", "time_s", "frames_per_s") for r in s["inputs"]]
    return s


def test_infer_two_processes_then_merge_equal_one_run(tmp_path: Path, ckpt: Path) -> None:
    src = tmp_path / "in"
    _images(src)
    common = ["infer", str(src), "--checkpoint", str(ckpt), "--size", "64", "--save", "png16,npy,color"]
    # batch size 1: every image then goes through the same forward pass in a shard as in one run (in larger
    # batches its neighbours differ, and kernels are not batch-invariant in the last float bit; docs/inference.md)
    common += ["--batch-size", "1", "--device", "cpu", "-q"]
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    assert main([*common, "-o", str(single)]) == 1  # broken.png fails

    assert sorted(_two_shards([*common, "-o", str(sharded)])) == [0, 1]  # the shard with broken.png fails
    dirs = shard_dirs(sharded)
    assert [s for s, _ in dirs] == [Shard(0, 2), Shard(1, 2)] and all(is_complete(d) for _, d in dirs)
    assert _files(sharded) == _files(single)

    assert main([*common, "-o", str(sharded)]) == 1  # the merge (reports the failed input again)
    assert _comparable(sharded) == _comparable(single)
    merged = json.loads((sharded / "summary.json").read_text())
    assert merged["counts"] == {"ok": 5, "skipped": 0, "failed": 1} and merged["timings"]["images"] == 5
    assert [f["input"] for f in merged["failures"]] == [str(src / "broken.png")]


def test_infer_shards_keep_the_batches_of_one_run(tmp_path: Path, ckpt: Path) -> None:
    """Shards take blocks of ``--batch-size`` images, so same-size inputs are batched exactly as in one run and the
    files are byte-identical with batches too (shard 0: images 0, 1, 4; shard 1: images 2, 3)."""
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(2)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(src / f"img{i}.png")
    common = ["infer", str(src), "--checkpoint", str(ckpt), "--size", "64", "--save", "png16,npy"]
    common += ["--batch-size", "2", "--device", "cpu", "-q"]
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    assert main([*common, "-o", str(single)]) == 0
    for k in (0, 1):
        assert main([*common, "-o", str(sharded), "--shard", f"{k}/2"]) == 0
    for k, names in ((0, ["img0.png", "img1.png", "img4.png"]), (1, ["img2.png", "img3.png"])):
        d = shard_dirs(sharded)[k][1]
        summary = json.loads((d / json.loads((d / "shard.json").read_text())["summary"]).read_text())
        assert [Path(r["input"]).name for r in summary["inputs"]] == names
    assert _files(sharded) == _files(single)
    assert main([*common, "-o", str(sharded)]) == 0
    assert _comparable(sharded) == _comparable(single)


def test_infer_shard_resumes_with_skip_existing(tmp_path: Path, ckpt: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    _images(src)
    shutil.rmtree(src / "sub")
    (src / "broken.png").unlink()  # left: img0, img2, img4; shard 0/2 owns img0 and img4
    common = ["infer", str(src), "--checkpoint", str(ckpt), "--size", "64", "--save", "png16"]
    common += ["--batch-size", "1", "--device", "cpu", "-q", "-o", str(out)]
    assert main([*common, "--shard", "0/2"]) == 0
    assert not (out / "img2_pred16.png").exists() and not (out / "summary.json").exists()
    first = (out / "img4_pred16.png").read_bytes()
    (out / "img4_pred16.png").unlink()  # as if the shard had been stopped before its last image
    assert main([*common, "--shard", "0/2", "--skip-existing"]) == 0
    assert (out / "img4_pred16.png").read_bytes() == first
    d0 = out / "shards" / "0-of-2"
    marker = json.loads((d0 / "shard.json").read_text())
    assert marker["summary"].startswith("summary-")  # the resumed run's summary; the first one is kept
    resumed = json.loads((d0 / marker["summary"]).read_text())
    assert [r["status"] for r in resumed["inputs"]] == ["skipped", "ok"]

    assert main(common) == 2  # merging before shard 1 ran: refused, nothing written
    assert not (out / "summary.json").exists()
    assert main([*common, "--shard", "1/2"]) == 0
    assert main(common) == 0
    merged = json.loads((out / "summary.json").read_text())
    assert [Path(r["input"]).name for r in merged["inputs"]] == ["img0.png", "img2.png", "img4.png"]
    assert [r["status"] for r in merged["inputs"]] == ["skipped", "ok", "ok"]
    assert merged["counts"] == {"ok": 2, "skipped": 1, "failed": 0} and merged["timings"]["shards"] == 2
    (out / "img2_pred16.png").unlink()
    assert main(common) == 2  # an output a shard reported is gone


def test_infer_a_video_is_one_item_of_a_shard(tmp_path: Path, ckpt: Path) -> None:
    pytest.importorskip("av")
    from anydepth.data.video import VideoWriter

    src = tmp_path / "in"
    _images(src)
    shutil.rmtree(src / "sub")
    (src / "broken.png").unlink()
    rng = np.random.default_rng(1)
    with VideoWriter(src / "clip.mp4", Fraction(24)) as vw:
        for _ in range(5):
            vw.write(rng.integers(0, 255, (32, 48, 3), dtype=np.uint8))
    # items: img0, img2, img4, then clip.mp4 -> shard 1/2 owns img2 and the whole video
    common = [
        "infer",
        str(src),
        "--checkpoint",
        str(ckpt),
        "--size",
        "64",
        "--save",
        "png16,color",
        "--batch-size",
    ]
    common += ["1", "--device", "cpu", "-q"]
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    assert main([*common, "-o", str(single)]) == 0
    for k in (1, 0):
        assert main([*common, "-o", str(sharded), "--shard", f"{k}/2"]) == 0
    shard1 = json.loads((sharded / "shards" / "1-of-2" / "summary.json").read_text())
    assert [Path(r["input"]).name for r in shard1["inputs"]] == ["img2.png", "clip.mp4"]
    assert shard1["inputs"][1]["frames"] == 5
    assert main([*common, "-o", str(sharded)]) == 0
    assert "clip_frames/000004_pred16.png" in _files(single)
    assert _files(sharded) == _files(single)
    assert _comparable(sharded) == _comparable(single)
