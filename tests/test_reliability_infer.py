"""``infer``, ``eval`` and the serve decoder over the fault corpus (issue #18 items 2, 3, 4, 5, 6, 8, 12): bad inputs
reported by name while the rest is processed, non-finite predictions never written or scored silently, strict
JSON, a clean Ctrl-C, disk-full errors naming the file, memory-bounded decoding of large uploads."""

from __future__ import annotations

import errno
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import anydepth
from anydepth.cli.main import main
from fault_corpus import (
    PICKLE_MARKER,
    image_faults,
    nan_checkpoint,
    odd_images,
    png_header_bytes,
    prediction_faults,
    rgb_image,
    strict_json_load,
)
from test_eval_cli import _eval
from test_eval_cli import nyu_setup as nyu_setup  # the fixture

SIZE = ["--size", "32", "-q"]
OUTPUTS = ("_pred16.png", "_pred.npy", "_color.png", "_side.png", ".ply")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return anydepth.create_model("sdt_test")


@pytest.fixture(scope="module")
def ckpt(model: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return anydepth.save_model(model, tmp_path_factory.mktemp("ckpt") / "tiny.safetensors", contents="full")


def _infer(*argv: str) -> int:
    return main(["infer", *argv])


def test_infer_over_corpus_reports_each_bad_image_and_processes_the_rest(
    tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in"
    good = [rgb_image(src / f"good{i}.png", (32, 40), seed=i) for i in range(2)]
    odd = odd_images(src / "odd")
    bad = image_faults(src / "bad")
    out = tmp_path / "out"
    assert _infer(str(src), "-o", str(out), "--checkpoint", str(ckpt), "--save", "all", *SIZE) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    s = strict_json_load(out / "summary.json")
    failed = {f["input"]: f["reason"] for f in s["failures"]}
    for c in bad:
        assert str(c.path) in failed, c.name
        c.check_message(f"{c.path}: {failed[str(c.path)]}")
        assert str(c.path) in err
        assert not list(out.glob(f"bad/{c.path.stem}*")), f"outputs written for {c.name}"
    assert "ANYDEPTH_MAX_IMAGE_PIXELS" in failed[str(src / "bad" / "bomb.png")]
    for p in [*good, *odd]:
        stem = p.relative_to(src).with_suffix("")
        for suffix in OUTPUTS:
            assert (out / f"{stem}{suffix}").is_file(), f"{stem}{suffix}"
    assert s["counts"] == {"ok": len(good) + len(odd), "skipped": 0, "failed": len(bad)}
    assert s["nonfinite_written"] == 0 and s["interrupted"] == []


def test_infer_bomb_as_align_reference(
    tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    img = rgb_image(tmp_path / "a.png", (32, 40))
    ref = tmp_path / "ref.png"
    ref.write_bytes(png_header_bytes(40000, 40000, bit_depth=16, color_type=0))
    out = tmp_path / "out"
    assert _infer(str(img), "-o", str(out), "--checkpoint", str(ckpt), "--align-to", str(ref),
                  "--align-scale", "1000", *SIZE) == 1  # fmt: skip
    s = strict_json_load(out / "summary.json")
    reason = s["failures"][0]["reason"]
    assert "ref.png" in reason and "too many pixels" in reason
    assert "Traceback" not in capsys.readouterr().err


def test_infer_nonfinite_predictions(
    tmp_path: Path, model: torch.nn.Module, capsys: pytest.CaptureFixture[str]
) -> None:
    nan_ckpt = nan_checkpoint(tmp_path / "ckpt", model)
    img = rgb_image(tmp_path / "in" / "a.png", (32, 40))
    out = tmp_path / "out"
    assert _infer(str(img), "-o", str(out), "--checkpoint", str(nan_ckpt), "--save", "all", *SIZE) == 1
    s = strict_json_load(out / "summary.json")
    assert (
        "non-finite prediction" in s["failures"][0]["reason"]
        and "--allow-nonfinite" in s["failures"][0]["reason"]
    )
    assert not [p for p in out.iterdir() if p.name != "summary.json"], "outputs written for a NaN prediction"
    capsys.readouterr()
    out2 = tmp_path / "out2"
    assert _infer(str(img), "-o", str(out2), "--checkpoint", str(nan_ckpt), "--save", "npy,png16", "--allow-nonfinite",
                  *SIZE) == 0  # fmt: skip
    s = strict_json_load(out2 / "summary.json")
    assert s["nonfinite_written"] == 1 and s["inputs"][0]["nonfinite_pixels"] == 32 * 40
    assert s["inputs"][0]["png16_range"] == [None, None] or all(
        v is None or np.isfinite(v) for v in s["inputs"][0]["png16_range"]
    )
    assert np.isnan(np.load(out2 / "a_pred.npy")).all()


@pytest.mark.parametrize(
    "spec",
    ['{"fx": NaN, "fy": 500, "cx": 20, "cy": 16}', '{"fx": Infinity}', '{"fx": 500, "cy": -Infinity}',
     '{"fx": "abc"}', '{"fx": 0}', '{"fx": 500, "width": -3}'],
)  # fmt: skip
def test_infer_rejects_nonfinite_intrinsics_up_front(
    spec: str, tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    img = rgb_image(tmp_path / "a.png", (32, 40))
    out = tmp_path / "out"
    assert _infer(str(img), "-o", str(out), "--checkpoint", str(ckpt), "--intrinsics", spec, "--save", "ply",
                  *SIZE) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert err.startswith("anydepth infer: error: --intrinsics") and "\n" not in err, err
    assert not out.exists()


def test_infer_ctrl_c_writes_summary_lists_partial_inputs_and_resumes(
    tmp_path: Path, ckpt: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import anydepth.cli.infer as infer_cli

    src = tmp_path / "in"
    for i in range(3):
        rgb_image(src / f"im{i}.png", (32, 40), seed=i)
    args = ["--checkpoint", str(ckpt), "--save", "all", "--batch-size", "1", *SIZE]
    ref = tmp_path / "ref"
    assert _infer(str(src), "-o", str(ref), *args) == 0
    real = infer_cli._write_ply_for
    calls = []

    def ctrl_c_on_second(path: Path, *a: object, **k: object) -> object:
        calls.append(path)
        if len(calls) == 2:  # the second input has its PNG16/NPY/colour outputs, not its point cloud
            raise KeyboardInterrupt
        return real(path, *a, **k)

    monkeypatch.setattr(infer_cli, "_write_ply_for", ctrl_c_on_second)
    out = tmp_path / "out"
    assert _infer(str(src), "-o", str(out), *args) == 130
    err = capsys.readouterr().err
    assert "interrupted: 1 done, 1 partial, 1 not started" in err and "Traceback" not in err
    s = strict_json_load(out / "summary.json")
    assert s["counts"]["ok"] == 1 and len(s["interrupted"]) == 2
    by = {r["input"]: r for r in s["inputs"]}
    assert by[str(src / "im1.png")]["status"] == "interrupted"
    assert sorted(Path(p).name for p in by[str(src / "im1.png")]["partial"]) == [
        "im1_color.png", "im1_pred.npy", "im1_pred16.png", "im1_side.png"
    ]  # fmt: skip
    assert by[str(src / "im2.png")]["status"] == "interrupted" and by[str(src / "im2.png")]["partial"] == []
    monkeypatch.setattr(infer_cli, "_write_ply_for", real)
    assert _infer(str(src), "-o", str(out), *args, "--skip-existing") == 0  # resume: the rest is written
    for i in range(3):
        for suffix in OUTPUTS:
            assert (out / f"im{i}{suffix}").read_bytes() == (ref / f"im{i}{suffix}").read_bytes(), (
                f"im{i}{suffix}"
            )


def test_infer_disk_full_names_the_file(
    tmp_path: Path, ckpt: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    img = rgb_image(tmp_path / "in" / "a.png", (32, 40))

    def full(*a: object, **k: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "save", full)
    out = tmp_path / "out"
    assert _infer(str(img), "-o", str(out), "--checkpoint", str(ckpt), "--save", "npy", *SIZE) == 1
    reason = strict_json_load(out / "summary.json")["failures"][0]["reason"]
    assert f"disk full writing {out / 'a_pred.npy'}" in reason
    assert f"disk full writing {out / 'a_pred.npy'}" in capsys.readouterr().err
    assert not list(out.glob("*.npy")) and not list(out.glob(".*tmp*"))


# -- eval: non-finite or hostile predictions are per-sample errors, never a silent metric -------------------
@pytest.mark.parametrize("fault", ["all_nan", "part_inf", "wrong_shape", "pickled"])
def test_eval_bad_prediction_is_a_sample_error(
    fault: str, nyu_setup: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, preds = nyu_setup
    victim = sorted((preds / "nyuv2").rglob("*.npy"))[0]
    shape = np.load(victim).shape
    case = next(
        c for c in prediction_faults(tmp_path / "faults", shape, marker_dir=tmp_path) if c.name == fault
    )
    victim.write_bytes(case.path.read_bytes())
    assert _eval(data, preds, tmp_path / "strict") == 1
    err = capsys.readouterr().err
    assert str(victim) in err and "Traceback" not in err
    assert _eval(data, preds, tmp_path / "relaxed", "--allow-missing") == 0
    doc = strict_json_load(tmp_path / "relaxed" / "metrics.json")
    b = doc["benchmarks"]["nyuv2"]
    assert b["complete"] is False and b["num_samples"] == 2 and len(b["failures"]) == 1
    assert str(victim) in b["failures"][0]["error"]
    assert b["metrics"]["abs_rel"] == pytest.approx(0.0, abs=1e-6)  # the two good samples, unchanged
    assert not (tmp_path / PICKLE_MARKER).exists()


# -- serve: decoding bounded by the processing size ------------------------------------------------------------
def _encoded(arr: np.ndarray, fmt: str, **kw: object) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_serve_decodes_large_uploads_at_a_reduced_size(fmt: str) -> None:
    from PIL import Image

    from anydepth.serve.security import decode_image

    rgb = np.random.default_rng(0).integers(0, 256, (1000, 1600, 3), dtype=np.uint8)
    data = _encoded(rgb, fmt)
    full = decode_image(data)
    assert full.rgb.shape == (1000, 1600, 3) and full.reduction == 1 and full.source_hw == (1000, 1600)
    small = decode_image(data, target=lambda hw: (224, 352))
    h, w = small.rgb.shape[:2]
    assert 224 <= h < 2 * 224 and 352 <= w < 2 * 352, (h, w)  # at least the processing size, at most twice
    assert small.reduction == round(1000 / h) and small.source_hw == (1000, 1600)
    assert decode_image(data, target=lambda hw: hw).rgb.shape == (1000, 1600, 3)  # native: no reduction
    # EXIF orientation is applied after the reduction: an upright 1600x1000 picture stored rotated
    exif = Image.Exif()
    exif[0x0112] = 6
    rot = _encoded(rgb, fmt, exif=exif)
    up = decode_image(rot, target=lambda hw: (352, 224))
    assert up.source_hw == (1600, 1000) and up.rgb.shape[0] > up.rgb.shape[1]
    ref = decode_image(rot)
    assert ref.rgb.shape == (1600, 1000, 3)


def test_serve_api_over_corpus(tmp_path: Path, model: torch.nn.Module) -> None:
    """Every corpus image through ``POST /v1/predict``: bad ones 4xx with a JSON reason, odd but valid ones 200,
    a wrong field name says ``missing field 'image'``; strict JSON answers."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from anydepth.serve.app import create_app

    def strict(text: str) -> dict:
        return json.loads(text, parse_constant=lambda t: pytest.fail(f"bare {t} in a JSON answer"))

    app = create_app(model, default_resolution="64")
    with TestClient(app, base_url="http://127.0.0.1") as client:
        for c in image_faults(tmp_path / "bad"):
            r = client.post("/v1/predict", files={"image": (c.path.name, c.path.read_bytes(), "image/png")})
            assert 400 <= r.status_code < 500, (c.name, r.status_code, r.text)
            assert strict(r.text)["detail"], c.name
        for p in odd_images(tmp_path / "odd"):
            r = client.post("/v1/predict", files={"image": (p.name, p.read_bytes(), "image/png")})
            assert r.status_code == 200, (p.name, r.text)
            doc = strict(r.text)
            assert (doc["height"], doc["width"]) == (32, 40) and doc["reduction"] == 1
        png = _encoded(np.zeros((8, 8, 3), np.uint8), "PNG")
        r = client.post("/v1/predict", files={"file": ("a.png", png)})
        assert r.status_code == 400 and "missing field 'image'" in strict(r.text)["detail"]
        assert client.get("/v1/health").status_code == 200
