"""Every relevant command over the fault corpus (``tests/fault_corpus.py``): no traceback, no crash signal, the bad
item named, the good items processed, outputs complete or absent, strict JSON everywhere (docs/reliability.md)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from anydepth.cli.main import main
from anydepth.data import io
from fault_corpus import (
    PICKLE_MARKER,
    SET_FAULTS,
    Case,
    checkpoint_faults,
    config_faults,
    depth_faults,
    depth_png,
    depth_values,
    image_faults,
    odd_images,
    rgb_image,
    strict_json_load,
)

REPO = Path(__file__).resolve().parents[1]
TINY_CFG = REPO / "configs" / "train" / "cpu_tiny.yaml"

pytestmark = pytest.mark.usefixtures("one_thread")


def _run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``anydepth ARGS`` in a child process (a crash signal shows as a negative return code)."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "anydepth.cli.main", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _one_line_error(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip() and not ln.startswith(("WARNING", "INFO"))]
    assert len(lines) == 1, f"expected a one-line error, got:\n{text}"
    assert "Traceback" not in text
    return lines[0]


# -- library readers ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("corpus")


def _ids(cases: list[Case]) -> list[str]:
    return [c.name for c in cases]


def test_image_reader_refuses_every_bad_image(corpus: Path) -> None:
    cases = image_faults(corpus / "images")
    for c in cases:
        with pytest.raises(ValueError) as e:
            io.read_image(c.path)
        c.check_message(str(e.value))
    bomb = next(c for c in cases if c.name == "bomb_png")
    with pytest.raises(ValueError, match="too many pixels"):
        io.image_size(bomb.path)
    # the limit is a parameter and an environment variable (0 = none of ours; Pillow's own limit still applies)
    small = rgb_image(corpus / "images_ok" / "small.png", (32, 40))
    with pytest.raises(ValueError, match=r"32x40|40x32"):
        io.read_image(small, max_pixels=1000)
    assert io.read_image(small, max_pixels=0).shape == (32, 40, 3)


def test_pixel_limit_environment_variable(monkeypatch: pytest.MonkeyPatch, corpus: Path) -> None:
    small = rgb_image(corpus / "env" / "small.png", (32, 40))
    monkeypatch.setenv(io.MAX_PIXELS_ENV, "100")
    with pytest.raises(ValueError, match=f"{io.MAX_PIXELS_ENV}=1280"):
        io.read_image(small)
    monkeypatch.setenv(io.MAX_PIXELS_ENV, "lots")
    with pytest.raises(ValueError, match="non-negative integer"):
        io.max_image_pixels()
    monkeypatch.setenv(io.MAX_PIXELS_ENV, "0")
    assert io.max_image_pixels() is None


def test_odd_but_valid_images_are_read(corpus: Path) -> None:
    for p in odd_images(corpus / "odd"):
        img = io.read_image(p)
        assert img.shape == (32, 40, 3) and img.dtype == np.uint8, p.name
        assert io.image_size(p) == (32, 40)


def test_depth_reader_refuses_every_bad_depth(corpus: Path) -> None:
    for c in depth_faults(corpus / "depth", marker_dir=corpus):
        with pytest.raises(ValueError) as e:
            io.read_depth(c.path, scale=1000.0)
        c.check_message(str(e.value))
    assert not (corpus / PICKLE_MARKER).exists()


# -- checkpoints: load_model and convert ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bad_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Case]]:
    import anydepth

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("ckpt")
    return d, checkpoint_faults(d / "files", anydepth.create_model("sdt_test"), marker_dir=d)


def test_load_model_refuses_every_bad_checkpoint(bad_checkpoints: tuple[Path, list[Case]]) -> None:
    from anydepth.models.checkpoint import load_model

    d, cases = bad_checkpoints
    for c in cases:
        with pytest.raises(ValueError) as e:
            load_model(c.path)
        c.check_message(str(e.value))
    assert not (d / PICKLE_MARKER).exists(), "a pickle payload was executed"


def test_convert_cli_over_bad_checkpoints(
    bad_checkpoints: tuple[Path, list[Case]], capsys: pytest.CaptureFixture[str]
) -> None:
    d, cases = bad_checkpoints
    for c in cases:
        dst = d / f"out_{c.name}.safetensors"
        assert main(["convert", str(c.path), str(dst)]) == 2, c.name
        line = _one_line_error(capsys.readouterr().err)
        assert c.path.name in line, line
        assert not dst.exists() and not list(d.glob(f".out_{c.name}*")), "partial output left behind"
    assert not (d / PICKLE_MARKER).exists(), "a pickle payload was executed"


# -- train: malformed configs and overrides ---------------------------------------------------------------------
def test_train_cli_over_bad_configs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for c in config_faults(tmp_path / "cfg"):
        assert (
            main(["train", "--config", str(c.path), "--output", str(tmp_path / "r"), "--print-config"]) == 2
        )
        c.check_message(_one_line_error(capsys.readouterr().err))
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(("override", "reason"), SET_FAULTS, ids=[s for s, _ in SET_FAULTS])
def test_train_cli_over_bad_set(
    override: str, reason: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(
        [
            "train",
            "--config",
            str(TINY_CFG),
            "--set",
            override,
            "--output",
            str(tmp_path / "r"),
            "--print-config",
        ]
    )
    assert rc == 2
    line = _one_line_error(capsys.readouterr().err)
    assert override in line and __import__("re").search(reason, line), line


# -- filter over a dataset holding every bad depth and RGB file next to good samples -------------------------
def test_filter_cli_over_corpus(tmp_path: Path) -> None:
    root = tmp_path / "data"
    size = (32, 40)
    lines, bad = [], {}
    for i in range(4):  # good samples
        rgb_image(root / f"rgb/good{i}.png", size, seed=i)
        depth_png(root / f"depth/good{i}.png", size, seed=i)
        lines.append(f"rgb/good{i}.png depth/good{i}.png 1000")
    for c in depth_faults(root / "depth_bad", size, marker_dir=tmp_path):
        rgb_image(root / f"rgb/{c.name}.png", size)
        rel = c.path.relative_to(root).as_posix()
        lines.append(f"rgb/{c.name}.png {rel} 1000")
        bad[rel] = c
    for c in image_faults(root / "rgb_bad", size):
        dp = depth_png(root / f"depth/for_{c.name}.png", size)
        rel = c.path.relative_to(root).as_posix()
        lines.append(f"{rel} {dp.relative_to(root).as_posix()} 1000")
        bad[rel] = c
    for kind, p in depth_values(root / "depth_values", size).items():  # readable, nothing valid: excluded
        rgb_image(root / f"rgb/value_{kind}.png", size)
        lines.append(f"rgb/value_{kind}.png {p.relative_to(root).as_posix()}")
    rgb_image(root / "rgb/mismatch.png", (size[0] + 8, size[1]))  # RGB size != depth size, no --check-rgb
    depth_png(root / "depth/mismatch.png", size)
    lines.append("rgb/mismatch.png depth/mismatch.png 1000")
    (root / "all.txt").write_text("\n".join(lines) + "\n")
    # default: RGB files are checked from their header; --check-rgb decodes them (finds truncated rasters too)
    for out, extra in ((tmp_path / "out", ()), (tmp_path / "out_check", ("--check-rgb",))):
        res = _run_cli(
            "filter",
            "--dataset",
            f"folder={root}:{root / 'all.txt'}",
            "--output",
            str(out),
            "--no-plots",
            *extra,
            cwd=tmp_path,
        )
        assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
        with open(out / "scores.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == len(lines)
        by_path = {r["depth_path"] if r["depth_path"] in bad else r["rgb_path"]: r for r in rows}
        for rel, c in bad.items():
            if not extra and rel.startswith("rgb_bad/truncated"):
                continue  # a valid header over a truncated raster: only decoding tells
            r = by_path[rel]
            assert r["status"] == "error" and r["kept"] in ("0", "False", "false"), (c.name, r)
            assert c.path.name in r["error"] or rel in r["error"], (c.name, r["error"])
        for kind in ("nan", "inf", "zero"):
            r = next(r for r in rows if r["rgb_path"] == f"rgb/value_{kind}.png")
            assert r["kept"] in ("0", "False", "false") and r["reason"] == "low_valid", r
        mism = next(r for r in rows if r["rgb_path"] == "rgb/mismatch.png")
        assert mism["status"] == "error" and "differs from depth size" in mism["error"]
        good = [r for r in rows if r["rgb_path"].startswith("rgb/good")]
        assert len(good) == 4 and all(r["status"] == "ok" for r in good)
        strict_json_load(out / "summary.json")
        strict_json_load(out / "run.json")
    assert not (tmp_path / PICKLE_MARKER).exists()


def test_train_over_nan_inf_zero_depth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Depth maps holding only NaN, inf or zeros are masked out: training runs, every logged value is finite."""
    root = tmp_path / "data"
    lines = []
    for kind, p in depth_values(root / "depth", (32, 32)).items():
        rgb_image(root / f"rgb/{kind}.png", (32, 32))
        lines.append(f"rgb/{kind}.png {p.relative_to(root).as_posix()}")
    (root / "list.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    sets = [
        f"data.train=[{{name: folder, root: {root}, split_file: {root / 'list.txt'}}}]",
        "data.val=[]",
        "data.size=[32,32]",
        "train.epochs=0",
        "train.max_steps=2",
        "train.batch_size=2",
        "train.tensorboard=false",
    ]
    argv = ["train", "--config", str(TINY_CFG), "--output", str(out), "--no-progress"]
    assert main([*argv, *[a for s in sets for a in ("--set", s)]]) == 0, capsys.readouterr().err
    recs = [strict_json_line(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [1, 2] and all(r["loss"] == 0.0 for r in recs)


def strict_json_line(line: str) -> dict:
    import json

    return json.loads(line, parse_constant=lambda t: pytest.fail(f"bare {t}"))
