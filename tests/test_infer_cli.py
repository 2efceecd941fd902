"""``anydepth infer`` end to end (in-process) on generated images, a generated video and generated depth."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import anydepth
from anydepth.cli.main import main
from anydepth.data.io import read_png16
from anydepth.data.pointcloud import read_ply
from anydepth.inference import predict
from anydepth.ops.colormap import from_uint16
from anydepth.ops.geometry import project_points
from anydepth.types import Intrinsics

SIZE = ["--size", "64"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny full checkpoint whose output varies over the image (random init alone gives a constant map)."""
    torch.manual_seed(0)
    model = anydepth.create_model("sdt_test")
    conv = model.decoder.head.conv_out
    with torch.no_grad():
        conv.weight.mul_(20.0)
        conv.bias.fill_(1.3)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    anydepth.save_model(model, path, contents="full")
    return path


@pytest.fixture(scope="module")
def model(ckpt: Path) -> torch.nn.Module:
    return anydepth.load_model(ckpt)


def _rgb(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) % 256], -1)
    return np.clip(base + rng.integers(-20, 20, size=(h, w, 3)), 0, 255).astype(np.uint8)


def _summary(out: Path, name: str = "summary.json") -> dict:
    return json.loads((out / name).read_text())


def _run(*argv: str) -> int:
    return main(["infer", *argv])


def test_images_directory_every_output_format(tmp_path: Path, ckpt: Path, model: torch.nn.Module) -> None:
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    rgb = _rgb(40, 56, 0)
    Image.fromarray(rgb).save(src / "a.png")
    Image.fromarray(rgb[..., 0]).save(src / "sub" / "gray.png")  # 8-bit grayscale
    Image.fromarray(np.concatenate([rgb, np.full((40, 56, 1), 128, np.uint8)], -1)).save(
        src / "sub" / "rgba.png"
    )
    Image.fromarray(rgb[..., 1].astype(np.uint16) * 257).save(src / "deep16.png")  # 16-bit grayscale
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    Image.fromarray(rgb).save(src / "phone.jpg", exif=exif, quality=95)
    out = tmp_path / "out"

    assert _run(str(src), "-o", str(out), "--checkpoint", str(ckpt), "--save", "all", *SIZE, "-q") == 0

    for stem in ["a", "sub/gray", "sub/rgba", "deep16", "phone"]:
        for suffix in ["_pred16.png", "_pred.npy", "_color.png", "_side.png", ".ply"]:
            assert (out / f"{stem}{suffix}").is_file(), f"{stem}{suffix}"
    s = _summary(out)
    assert s["counts"] == {"ok": 5, "skipped": 0, "failed": 0}
    assert (
        s["model"]["checkpoint"] == str(ckpt) and s["model"]["output_space"] == "disparity_affine_invariant"
    )
    rec = {Path(r["input"]).name: r for r in s["inputs"]}

    # npy: the raw prediction, identical to the Python API
    value = np.load(out / "a_pred.npy")
    assert value.dtype == np.float32 and value.shape == (40, 56)
    np.testing.assert_allclose(value, predict(model, rgb, resolution="64").value, rtol=1e-5, atol=1e-6)
    # 16-bit PNG: the normalised prediction, invertible with the range in summary.json
    lo, hi = rec["a.png"]["png16_range"]
    q = read_png16(out / "a_pred16.png")
    assert q.min() == 0 and q.max() == 65535
    np.testing.assert_allclose(from_uint16(q, lo, hi), value, atol=(hi - lo) / 65535 + 1e-7)
    # colour and side-by-side
    color = np.asarray(Image.open(out / "a_color.png"))
    side = np.asarray(Image.open(out / "a_side.png"))
    assert color.shape == (40, 56, 3) and side.shape == (40, 112, 3)
    np.testing.assert_array_equal(side[:, :56], rgb)
    np.testing.assert_array_equal(side[:, 56:], color)
    # EXIF orientation applied: outputs are upright (portrait)
    assert np.load(out / "phone_pred.npy").shape == (56, 40)
    # point cloud: nominal (not metric), reprojects onto the pixel grid with the recorded intrinsics
    pts, cols, comments = read_ply(out / "a.ply")
    assert any("metric: NO" in c for c in comments)
    assert rec["a.png"]["metric"] is False and rec["a.png"]["intrinsics_source"] == "default_fov"
    k = Intrinsics(**rec["a.png"]["intrinsics"])
    uv = project_points(pts.astype(np.float64), k)
    np.testing.assert_allclose(uv, np.round(uv), atol=1e-3)
    u, v = np.round(uv).astype(int).T
    np.testing.assert_array_equal(cols, rgb[v, u])
    assert pts[:, 2].min() >= 1.0 - 1e-4 and pts[:, 2].max() <= 10.0 + 1e-3  # nominal range
    assert 0 < len(pts) <= 40 * 56


def test_no_overwrite_skip_existing_resume_and_overwrite(tmp_path: Path, ckpt: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        Image.fromarray(_rgb(32, 32, i)).save(src / f"im{i}.png")
    out = tmp_path / "out"
    args = [str(src), "-o", str(out), "--checkpoint", str(ckpt), "--save", "npy,color", *SIZE, "-q"]
    assert _run(*args) == 0
    first = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}

    # second run without flags: refuses to overwrite, exits non-zero, files untouched
    assert _run(*args) == 1
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name in first} == first
    later = sorted(p.name for p in out.glob("summary-*.json"))
    assert len(later) == 1  # the first summary is kept too
    s = _summary(out, later[0])
    assert s["counts"]["failed"] == 3 and "already exists" not in s["failures"][0]["reason"]
    assert "--overwrite" in s["failures"][0]["reason"]

    # resume after an "interruption": one output missing
    (out / "im1_color.png").unlink()
    assert _run(*args, "--skip-existing") == 0
    assert (out / "im1_color.png").is_file()
    assert (out / "im1_pred.npy").stat().st_mtime_ns == first["im1_pred.npy"]  # existing output not rewritten
    assert (out / "im0_color.png").stat().st_mtime_ns == first["im0_color.png"]
    s = _summary(out, sorted(p.name for p in out.glob("summary-*.json"))[-1])
    status = {Path(r["input"]).name: r["status"] for r in s["inputs"]}
    assert status == {"im0.png": "skipped", "im1.png": "ok", "im2.png": "skipped"}

    assert _run(*args, "--overwrite") == 0
    assert (out / "im0_color.png").stat().st_mtime_ns != first["im0_color.png"]
    assert not list(out.glob(".*.tmp*"))  # no temporary files left behind


def test_bad_inputs_are_reported_and_the_rest_continue(
    tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(_rgb(32, 32, 0)).save(src / "good.png")
    (src / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    good_jpg = src / "trunc.jpg"
    Image.fromarray(_rgb(64, 64, 1)).save(good_jpg)
    good_jpg.write_bytes(good_jpg.read_bytes()[:200])  # truncated
    (tmp_path / "data.xyz").write_text("not an image")
    out = tmp_path / "out"
    rc = _run(str(src), str(tmp_path / "data.xyz"), str(tmp_path / "missing.png"), "-o", str(out),
              "--checkpoint", str(ckpt), "--save", "npy", *SIZE, "-q")  # fmt: skip
    assert rc == 1
    assert (out / "good_pred.npy").is_file()
    s = _summary(out)
    assert s["counts"] == {"ok": 1, "skipped": 0, "failed": 4}
    failed = {Path(f["input"]).name: f["reason"] for f in s["failures"]}
    assert set(failed) == {"corrupt.png", "trunc.jpg", "data.xyz", "missing.png"}
    assert "no such file" in failed["missing.png"]
    err = capsys.readouterr().err
    assert "4 input(s) failed" in err and "corrupt.png" in err


def test_video_input_streams_to_depth_video_with_source_fps(tmp_path: Path, ckpt: Path) -> None:
    pytest.importorskip("av")
    from anydepth.data.video import VideoWriter, iter_frames, probe_video

    src = tmp_path / "clip.mp4"
    with VideoWriter(src, Fraction(24000, 1001)) as vw:
        for i in range(7):
            vw.write(np.roll(_rgb(32, 48, 0), 4 * i, axis=1))
    out = tmp_path / "out"
    args = [
        str(src),
        "-o",
        str(out),
        "--checkpoint",
        str(ckpt),
        "--save",
        "color,side,png16",
        "--batch-size",
        "3",
    ]
    assert _run(*args, *SIZE, "-q") == 0
    color, side = probe_video(out / "clip_color.mp4"), probe_video(out / "clip_side.mp4")
    assert color.fps == Fraction(24000, 1001) and side.fps == color.fps
    assert color.frames == 7 and color.display_size == (32, 48) and side.display_size == (32, 96)
    assert len(list(iter_frames(out / "clip_side.mp4"))) == 7
    index = json.loads((out / "clip_frames" / "index.json").read_text())
    assert [f["frame"] for f in index["frames"]] == list(range(7))
    assert len(list((out / "clip_frames").glob("*_pred16.png"))) == 7
    rec = _summary(out)["inputs"][0]
    assert rec["status"] == "ok" and rec["frames"] == 7 and "EMA" in rec["normalisation"]
    # resume: everything exists -> skipped
    assert _run(*args, *SIZE, "-q", "--skip-existing") == 0
    later = sorted(p.name for p in out.glob("summary-*.json"))[-1]
    assert _summary(out, later)["inputs"][0]["status"] == "skipped"
    # frame stride halves the frame rate
    out2 = tmp_path / "out2"
    assert _run(str(src), "-o", str(out2), "--checkpoint", str(ckpt), "--save", "color", "--frame-stride", "2",
                *SIZE, "-q") == 0  # fmt: skip
    info = probe_video(out2 / "clip_color.mp4")
    assert info.frames == 4 and info.fps == Fraction(12000, 1001)


def test_align_to_sparse_metric_depth_gives_metric_cloud(
    tmp_path: Path, ckpt: Path, model: torch.nn.Module
) -> None:
    rgb = _rgb(48, 64, 3)
    src = tmp_path / "scene.png"
    Image.fromarray(rgb).save(src)
    disp = predict(model, rgb, resolution="64").value.astype(np.float64)
    true_depth = 1.0 / (2.0 * (disp - disp.min()) / (disp.max() - disp.min()) + 0.25)  # 0.44 .. 4 m
    rng = np.random.default_rng(0)
    mm = np.zeros(true_depth.shape, np.uint16)
    ids = rng.choice(true_depth.size, size=true_depth.size // 10, replace=False)  # sparse, 10% of pixels
    mm.flat[ids] = np.round(true_depth.flat[ids] * 1000.0).astype(np.uint16)
    Image.fromarray(mm).save(tmp_path / "lidar.png")
    out = tmp_path / "out"
    k = {"fx": 60.0, "fy": 60.0, "cx": 31.5, "cy": 23.5}
    rc = _run(str(src), "-o", str(out), "--checkpoint", str(ckpt), "--save", "ply,npy", *SIZE, "-q",
              "--align-to", str(tmp_path / "lidar.png"), "--align-scale", "1000", "--intrinsics", json.dumps(k),
              "--edge-threshold", "0")  # fmt: skip
    assert rc == 0
    depth = np.load(out / "scene_depth.npy")
    np.testing.assert_allclose(depth, true_depth, rtol=2e-3)  # metric depth recovered from 10% of the pixels
    rec = _summary(out)["inputs"][0]
    assert rec["metric"] is True and rec["depth"]["mapping"] == "aligned"
    assert rec["depth"]["fit_pixels"] == true_depth.size // 10 and rec["intrinsics_source"] == "intrinsics"
    pts, _, comments = read_ply(out / "scene.ply")
    assert any("metric: yes" in c and "units: metres" in c for c in comments)
    assert any("fx 60.000000" in c for c in comments)
    # default cut: points beyond twice the farthest reference depth are dropped (sky, extrapolation)
    keep = depth <= 2.0 * rec["depth"]["reference_max_m"]
    assert rec["ply"]["max_depth"] == pytest.approx(2.0 * rec["depth"]["reference_max_m"])
    assert len(pts) == keep.sum() and 0.5 * depth.size < len(pts) < depth.size
    np.testing.assert_allclose(pts[:, 2], depth[keep], rtol=1e-6)
    u = np.tile(np.arange(64), (48, 1))[keep]
    np.testing.assert_allclose(pts[:, 0], (u - 31.5) / 60.0 * depth[keep], rtol=1e-5, atol=1e-6)

    # a directory of references matched by name; a missing or unusable reference fails only that input
    refs = tmp_path / "refs"
    refs.mkdir()
    np.save(refs / "scene.npy", np.where(mm > 0, true_depth, 0.0))
    src2 = tmp_path / "imgs"
    src2.mkdir()
    Image.fromarray(rgb).save(src2 / "scene.png")
    Image.fromarray(rgb).save(src2 / "other.png")
    out2 = tmp_path / "out2"
    rc = _run(str(src2), "-o", str(out2), "--checkpoint", str(ckpt), "--save", "npy", *SIZE, "-q",
              "--align-to", str(refs))  # fmt: skip
    assert rc == 1
    np.testing.assert_allclose(np.load(out2 / "scene_depth.npy"), true_depth, rtol=2e-3)
    s = _summary(out2)
    assert [Path(f["input"]).name for f in s["failures"]] == ["other.png"]
    assert "no reference depth" in s["failures"][0]["reason"]


def test_list_file_glob_and_usage_errors(tmp_path: Path, ckpt: Path) -> None:
    src = tmp_path / "in"
    (src / "d").mkdir(parents=True)
    for name in ["x.png", "d/y.png", "d/z.jpg"]:
        Image.fromarray(_rgb(32, 32, 0)).save(src / name)
    (tmp_path / "list.txt").write_text("in/x.png\nin/d/*.jpg\n")
    out = tmp_path / "out"
    assert _run(str(tmp_path / "list.txt"), "-o", str(out), "--checkpoint", str(ckpt), "--save", "color",
                *SIZE, "-q") == 0  # fmt: skip
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*_color.png")) == [
        "in/d/z_color.png",
        "in/x_color.png",
    ]
    out_g = tmp_path / "out_g"
    assert _run(str(src / "**" / "*.png"), "-o", str(out_g), "--checkpoint", str(ckpt), "--save", "color",
                *SIZE, "-q") == 0  # fmt: skip
    assert sorted(str(p.relative_to(out_g)) for p in out_g.rglob("*_color.png")) == [
        "d/y_color.png",
        "x_color.png",
    ]

    base = [str(src / "x.png"), "-o", str(tmp_path / "o3"), *SIZE, "-q"]
    assert _run(*base) == 2  # no model
    assert _run(*base, "--checkpoint", str(ckpt), "--save", "jpg") == 2
    assert _run(*base, "--checkpoint", str(ckpt), "--colormap", "jet") == 2
    assert _run(*base, "--checkpoint", str(ckpt), "--size", "huge") == 2
    assert _run(str(src), "-o", str(tmp_path / "o4"), "--checkpoint", str(ckpt), "--align-to",
                str(src / "x.png")) == 2  # fmt: skip
    with pytest.raises(SystemExit):
        _run(*base, "--checkpoint", str(ckpt), "--overwrite", "--skip-existing")


def test_forward_failure_is_reported_not_a_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import anydepth.cli.infer as infer_cli
    from anydepth.types import DepthSpace

    class FlakyRunner:
        patch_size = 16
        output_space = DepthSpace.DISPARITY_AFFINE_INVARIANT
        device = torch.device("cpu")
        calls = 0

        def __call__(self, x: torch.Tensor) -> torch.Tensor:
            FlakyRunner.calls += 1
            if FlakyRunner.calls > 1:
                raise RuntimeError("out of memory (simulated)")
            return x.mean(1, keepdim=True) + 0.5

    monkeypatch.setattr(infer_cli, "_make_runner", lambda args: (FlakyRunner(), {"preset": "flaky"}))
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        Image.fromarray(_rgb(32, 32, i)).save(src / f"im{i}.png")
    out = tmp_path / "out"
    assert _run(str(src), "-o", str(out), "--batch-size", "1", "--save", "npy", "--size", "native", "-q") == 1
    assert (out / "im0_pred.npy").is_file() and not (out / "im2_pred.npy").exists()
    s = _summary(out)
    assert s["counts"] == {"ok": 1, "skipped": 0, "failed": 2}
    assert all("inference failed" in f["reason"] for f in s["failures"])


def test_fast_path_gives_the_same_depth(tmp_path: Path, ckpt: Path) -> None:
    Image.fromarray(_rgb(48, 64, 3)).save(tmp_path / "a.png")
    outs = {}
    for name, extra in (("plain", []), ("fast", ["--fast"])):
        out = tmp_path / name
        assert _run(str(tmp_path / "a.png"), "-o", str(out), "--checkpoint", str(ckpt), "--save", "npy",
                    *SIZE, "-q", *extra) == 0  # fmt: skip
        outs[name] = np.load(out / "a_pred.npy")
    assert outs["plain"].std() > 1e-3
    np.testing.assert_allclose(outs["fast"], outs["plain"], atol=1e-4, rtol=0)
    # --fast is a torch-backend option
    assert _run(str(tmp_path / "a.png"), "-o", str(tmp_path / "x"), "--backend", "onnxruntime", "--onnx",
                str(tmp_path / "m.onnx"), "--fast") == 2  # fmt: skip
