"""Benchmark specs, the KITTI benchmark crop and every evaluation mask."""

from __future__ import annotations

import numpy as np
import pytest

from anydepth.eval.benchmarks import (
    PAPER_BENCHMARKS,
    apply_crop,
    eval_mask,
    get_benchmark,
    kb_crop_box,
    list_benchmarks,
)
from anydepth.registry import BENCHMARKS


def test_paper_benchmarks_registered_with_protocol_values() -> None:
    assert list_benchmarks()[:5] == list(PAPER_BENCHMARKS)
    assert all(b in BENCHMARKS for b in PAPER_BENCHMARKS)
    counts = {b: get_benchmark(b).num_samples for b in PAPER_BENCHMARKS}
    assert counts == {"nyuv2": 654, "kitti": 652, "eth3d": 454, "scannet": 800, "diode": 771}
    ranges = {b: (get_benchmark(b).min_depth, get_benchmark(b).max_depth) for b in PAPER_BENCHMARKS}
    assert ranges == {
        "nyuv2": (1e-3, 10.0),
        "kitti": (1e-5, 80.0),
        "eth3d": (1e-5, float("inf")),
        "scannet": (1e-3, 10.0),
        "diode": (0.6, 350.0),
    }
    assert get_benchmark("kitti").crop == "kb" and get_benchmark("kitti").eval_mask == "kitti_marigold"
    assert get_benchmark("nyuv2").eval_mask == "nyu_eigen"
    assert get_benchmark("eth3d").alignment_max_res == 1024
    assert get_benchmark("diode").mask_range is False
    assert {b: get_benchmark(b).processing_res for b in PAPER_BENCHMARKS} == {
        "nyuv2": 0,
        "kitti": 0,
        "eth3d": 768,
        "scannet": 0,
        "diode": 640,
    }
    assert all(get_benchmark(b).alignment == "auto" for b in PAPER_BENCHMARKS)
    with pytest.raises(KeyError, match="nyuv2"):
        get_benchmark("nyu")


def test_kb_crop_on_full_kitti_frame() -> None:
    box = kb_crop_box((375, 1242))
    assert (box.top, box.left, box.height, box.width) == (23, 13, 352, 1216)
    frame = np.arange(375 * 1242).reshape(375, 1242)
    out = apply_crop(frame, box)
    assert out.shape == (352, 1216) and out[0, 0] == frame[23, 13] and out[-1, -1] == frame[374, 1228]
    assert kb_crop_box((370, 1224)).left == 4  # floor((1224 - 1216) / 2)
    rgb = np.zeros((375, 1242, 3))
    assert apply_crop(rgb, box).shape == (352, 1216, 3)
    with pytest.raises(ValueError, match="at least 352x1216"):
        kb_crop_box((300, 1000))


def _box(m: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.where(m.any(1))[0], np.where(m.any(0))[0]
    assert m.sum() == (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)  # a single filled rectangle
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def test_nyu_eigen_mask() -> None:
    m = eval_mask("nyu_eigen", (480, 640))
    assert _box(m) == (45, 471, 41, 601)
    assert m.sum() == 426 * 560
    assert _box(eval_mask("nyu_eigen", (240, 320))) == (22, 236, 20, 300)  # proportional for other sizes


def test_kitti_marigold_mask_on_cropped_frame() -> None:
    assert _box(eval_mask("kitti_marigold", (352, 1216))) == (117, 321, 43, 1172)


def test_kitti_full_frame_masks_translated_into_the_crop() -> None:
    box = kb_crop_box((375, 1242))
    eigen = eval_mask("kitti_eigen_full", (352, 1216), box)
    # Eigen fractions of 375x1242: rows 124:342, cols 44:1197 -> minus the crop offsets (23, 13)
    assert _box(eigen) == (124 - 23, 342 - 23, 44 - 13, 1197 - 13)
    garg = eval_mask("kitti_garg_full", (352, 1216), box)
    # Garg: rows int(0.40810811*375)=153 : int(0.99189189*375)=371, cols 44:1197
    assert _box(garg) == (153 - 23, 371 - 23, 44 - 13, 1197 - 13)
    assert eval_mask(None, (4, 4)) is None
    with pytest.raises(KeyError, match="unknown evaluation mask"):
        eval_mask("eigen", (352, 1216))


def test_spec_replace_options() -> None:
    k = get_benchmark("kitti")
    assert k.replace(kitti_mask="garg_full").eval_mask == "kitti_garg_full"
    assert k.replace(kitti_mask="none").eval_mask is None
    assert k.replace(kitti_mask="eigen_full").options["kitti_mask"] == "eigen_full"
    with pytest.raises(ValueError, match="kitti_mask"):
        k.replace(kitti_mask="bts")
    with pytest.raises(ValueError, match="KITTI only"):
        get_benchmark("nyuv2").replace(kitti_mask="garg_full")
    d = get_benchmark("diode").replace(diode_range_mask=True)
    assert d.mask_range and d.options["range_mask"]
    with pytest.raises(ValueError, match="unknown BenchmarkSpec field"):
        k.replace(colour="red")
    with pytest.raises(ValueError, match="unknown alignment"):
        k.replace(alignment="lsq")
    assert get_benchmark("eth3d").to_dict()["max_depth"] == "inf"
