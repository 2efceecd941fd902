"""Visual comparisons: surface-quality metrics (``ops.surface``), the offscreen point renderer (``vis.render``)
and the figure pipeline (``vis.figure``, ``anydepth figure``)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from anydepth.ops.geometry import intrinsics_from_fov, unproject_depth
from anydepth.ops.surface import surface_quality, window_planes
from anydepth.vis.render import View, grid_normals, orbit_view, render_points

pytestmark = pytest.mark.usefixtures("one_thread")


def _plane_depth(h: int, w: int, tilt: float = 0.0, z0: float = 4.0) -> tuple[np.ndarray, object]:
    """Depth of the plane ``z = z0 + tilt * y`` seen by a 60-degree camera (exact per pixel)."""
    k = intrinsics_from_fov(h, w, 60.0)
    v = np.arange(h, dtype=np.float64)[:, None].repeat(w, 1)
    ry = (v - k.cy) / k.fy  # ray y per unit z: y = ry z; z = z0 + tilt ry z -> z = z0 / (1 - tilt ry)
    return z0 / (1.0 - tilt * ry), k


def test_window_planes_fit_exact_planes() -> None:
    z, k = _plane_depth(40, 50, tilt=0.5)
    wp = window_planes(np.asarray(unproject_depth(z, k)), np.ones_like(z, bool), k=5, stride=3)
    assert np.nanmax(wp.rms) < 1e-6  # box-sum precision floor (metres, at 4-6 m)
    expected = np.array([0.0, 0.5, -1.0]) / math.hypot(
        0.5, 1.0
    )  # normal of z - 0.5 y = z0, facing the camera
    np.testing.assert_allclose(
        wp.normal.reshape(-1, 3), np.broadcast_to(expected, (wp.rms.size, 3)), atol=1e-6
    )


def test_surface_quality_known_answers() -> None:
    gt, k = _plane_depth(48, 64, tilt=0.3)
    valid = np.ones_like(gt, bool)
    perfect = surface_quality(gt, gt, valid, k)
    assert perfect.windows > 100 and perfect.planar_fraction == 1.0
    assert perfect.plane_residual < 1e-6 and perfect.normal_noise_deg < 1e-3
    noisy = surface_quality(
        gt * (1 + 0.01 * np.random.default_rng(0).standard_normal(gt.shape)), gt, valid, k
    )
    assert noisy.plane_residual > 1e-3 and noisy.normal_noise_deg > 1.0
    flat, _ = _plane_depth(48, 64, tilt=0.0)
    tilted = surface_quality(flat, gt, valid, k)  # a fronto-parallel plane where the GT is tilted
    assert tilted.plane_residual < 1e-6
    assert tilted.normal_noise_deg == pytest.approx(math.degrees(math.atan(0.3)), abs=0.05)
    rough = gt.copy()
    rough[::2] *= 1.05  # GT that is not planar anywhere
    none = surface_quality(gt, rough, valid, k)
    assert none.windows == 0 and math.isnan(none.plane_residual)
    with pytest.raises(ValueError, match="one shape"):
        surface_quality(gt[:2], gt, valid, k)


def test_render_points_zbuffer_and_view() -> None:
    view = View(np.eye(3), np.zeros(3), np.zeros(3), focal=10.0, size=(9, 9))
    pts = np.array([[0.0, 0.0, 2.0], [0.0, 0.0, 1.0], [0.0, 0.0, 3.0], [0.0, 0.0, -1.0]])
    cols = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [9, 9, 9]], np.uint8)
    img = render_points(pts, cols, view, point_size=1)
    assert img[4, 4].tolist() == [0, 255, 0]  # the nearest point wins; behind the camera is skipped
    assert (img.reshape(-1, 3) == 255).all(axis=1).sum() == 80  # everything else is background
    img3 = render_points(pts, cols, view, point_size=3)
    assert (img3[3:6, 3:6] == [0, 255, 0]).all()
    orbit = orbit_view(4.0, yaw_deg=0.0, pitch_deg=0.0, size=(9, 9))
    assert orbit.offset[2] == pytest.approx(1.4)
    n = grid_normals(np.asarray(unproject_depth(np.full((5, 5), 2.0), intrinsics_from_fov(5, 5, 60.0))))
    np.testing.assert_allclose(n[2, 2], [0.0, 0.0, -1.0], atol=1e-9)


@pytest.fixture(scope="module")
def tiny_runner(nontrivial):  # type: ignore[no-untyped-def]
    import anydepth
    from anydepth.inference import TorchRunner

    return TorchRunner(nontrivial(anydepth.create_model("sdt_test")))


def _samples() -> list:
    from anydepth.data.datasets.synthetic import render_scene as rs
    from anydepth.data.datasets.synthetic import sample_scene
    from anydepth.vis.figure import FigureSample

    out = []
    for i in range(2):
        r = rs(sample_scene(np.random.default_rng(i), (48, 64), kind="indoor"), 48, 64)
        gt = r.depth if i == 0 else None
        out.append(FigureSample(f"s{i}", r.rgb, gt, None if gt is None else gt > 0, r.intrinsics))
    return out


def test_compare_and_write(tiny_runner, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from anydepth.vis.figure import compare_models, comparison_figure, write_comparison

    samples = _samples()
    comp = compare_models({"a": tiny_runner, "b": tiny_runner}, samples, resolution="native")
    r0, r1 = comp.results["s0"], comp.results["s1"]
    assert r0["a"].abs_rel is not None and r0["a"].info["mapping"] == "aligned"
    assert r1["a"].abs_rel is None and r1["a"].info["mapping"] == "nominal"
    a, b = (
        r1["a"].depth,
        r1["b"].depth,
    )  # same model, aligned to the first's (percentile-clipped) nominal depth
    assert np.median(np.abs(b - a) / a) < 0.01
    grid = comparison_figure(comp, tile_width=64)
    assert grid.shape[1] == 64 * (1 + 1 + 2 + 2) and grid.dtype == np.uint8
    summary = write_comparison(comp, tmp_path / "fig")
    names = {p.name for p in (tmp_path / "fig").iterdir()}
    assert {"figure.png", "pointclouds.png", "quality.json", "quality.md", "quality.png", "ply"} <= names
    assert len(summary["ply"]) == 2 + 1 + 2  # s0: GT + 2 models; s1: 2 models
    rows = json.loads((tmp_path / "fig" / "quality.json").read_text())
    assert [r["image"] for r in rows] == ["s0", "s0"] and rows[0]["planar_windows"] > 0
    with pytest.raises(FileExistsError):
        write_comparison(comp, tmp_path / "fig")


def test_quality_without_planar_windows_is_strict_json(tiny_runner, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Sparse ground truth (every 5th pixel, like LiDAR) has no planar window: the measures are null in
    quality.json (strict JSON, no NaN token) and "n/a" in quality.md."""
    from anydepth.vis.figure import FigureSample, compare_models, write_comparison

    s = _samples()[0]
    assert s.depth is not None
    sparse = np.zeros_like(s.depth, dtype=bool)
    sparse[::5, ::5] = True
    sample = FigureSample("sparse", s.rgb, np.where(sparse, s.depth, 0.0), sparse, s.intrinsics)
    comp = compare_models({"a": tiny_runner}, [sample], resolution="native")
    write_comparison(comp, tmp_path / "fig")
    text = (tmp_path / "fig" / "quality.json").read_text()
    rows = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert rows[0]["planar_windows"] == 0 and rows[0]["plane_residual"] is None
    assert rows[0]["normal_noise_deg"] is None and rows[0]["abs_rel"] > 0
    assert "n/a" in (tmp_path / "fig" / "quality.md").read_text()


def test_cli_figure_on_a_folder(tmp_path: Path) -> None:
    from anydepth.cli.main import main
    from anydepth.data.io import write_image

    for s in _samples():
        write_image(tmp_path / "imgs" / f"{s.id}.png", s.rgb)
    out = tmp_path / "out"
    argv = ["figure", "--model", "sdt_test", "--model", "x=dpt_test", "--images", str(tmp_path / "imgs")]
    assert main([*argv, "-o", str(out), "--size", "native", "--device", "cpu"]) == 0
    assert (out / "figure.png").is_file() and not (out / "quality.json").exists()  # no GT, no quality
    assert len(list((out / "ply").glob("*.ply"))) == 4
    assert main(["figure", "--model", "nope", "--images", str(tmp_path / "imgs"), "-o", str(out)]) == 2
    assert main(["figure", "--model", "sdt_test", "-o", str(out)]) == 2


def test_load_rgbd_fixture_samples(rgbd_fixtures: Path) -> None:
    from anydepth.vis.figure import load_rgbd_samples

    samples = load_rgbd_samples(rgbd_fixtures)
    assert len(samples) >= 3
    for s in samples:
        assert s.depth is not None and s.valid is not None and s.intrinsics is not None
        assert s.depth.shape == s.rgb.shape[:2] and s.valid.any()


def test_benchmark_samples_and_cli(tmp_path: Path) -> None:
    from anydepth.cli.main import main
    from anydepth.vis.figure import load_benchmark_samples
    from test_eval_datasets import write_kitti

    write_kitti(tmp_path / "data")
    samples = load_benchmark_samples("kitti", tmp_path / "data", indices=[0])
    assert len(samples) == 1 and samples[0].id == "kitti_0000"
    s = samples[0]
    assert s.depth is not None and s.valid is not None and s.valid.any() and s.rgb.dtype == np.uint8
    assert (s.depth[s.valid] <= 80.0).all()
    out = tmp_path / "fig"
    argv = ["figure", "--model", "sdt_test", "--benchmark", "kitti", "--data-root", str(tmp_path / "data")]
    assert main([*argv, "--indices", "0", "-o", str(out), "--size", "64", "--device", "cpu"]) == 0
    assert (out / "figure.png").is_file() and (out / "quality.json").is_file()
    assert main(["figure", "--model", "sdt_test", "--benchmark", "kitti", "-o", str(out)]) == 2


def test_compare_visual_delegates_to_figure(tmp_path: Path) -> None:
    from anydepth.cli.main import main
    from anydepth.data.io import write_image

    write_image(tmp_path / "imgs" / "a.png", _samples()[0].rgb)
    out = tmp_path / "cmp"
    argv = [
        "compare",
        "--visual",
        "--model",
        "sdt_test",
        "--images",
        str(tmp_path / "imgs"),
        "--size",
        "native",
    ]
    assert main([*argv, "-o", str(out), "--device", "cpu"]) == 0
    assert (out / "figure.png").is_file() and (out / "pointclouds.png").is_file()
    assert main(argv) == 2  # no -o
    assert main(["compare"]) == 2  # neither results nor --visual
