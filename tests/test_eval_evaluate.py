"""``evaluate()`` end to end on tiny layouts: predictions adapter, model adapter, failures, options."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from anydepth.eval.benchmarks import get_benchmark, open_dataset
from anydepth.eval.evaluate import (
    FunctionPredictor,
    IncompleteBenchmarkError,
    ModelPredictor,
    PrecomputedPredictions,
    evaluate,
    parse_space,
)
from anydepth.types import DepthSpace
from test_eval_datasets import write_diode, write_eth3d, write_kitti, write_nyu, write_scannet


def _gt_disparity_predictions(
    root: Path, bench: str, out: Path, *, scale: float = 0.37, shift: float = 0.02, **ds_kwargs: object
) -> None:
    """Write affine disparity predictions derived from GT (perfect after disparity alignment)."""
    ds = open_dataset(bench, root, **ds_kwargs)
    spec = get_benchmark(bench)
    from anydepth.eval.benchmarks import apply_crop, kb_crop_box

    for i in range(len(ds)):
        gt, valid = ds.load_depth(i)
        box = kb_crop_box(gt.shape) if spec.crop == "kb" else None
        gt, valid = apply_crop(gt, box), apply_crop(valid, box)
        disp = np.where(valid, 1.0 / np.where(valid, gt, 1.0), 0.05)
        p = out / Path(ds.sample_name(i)).with_suffix(".npy")
        p.parent.mkdir(parents=True, exist_ok=True)
        np.save(p, (scale * disp + shift).astype(np.float32))


@pytest.mark.parametrize(
    ("bench", "writer", "kwargs"),
    [
        ("nyuv2", write_nyu, {}),
        ("scannet", write_scannet, {}),
        ("diode", write_diode, {}),
        ("eth3d", write_eth3d, {"depth_hw": (8, 12)}),
    ],
)
def test_gt_derived_predictions_score_perfectly(tmp_path: Path, bench: str, writer, kwargs: dict) -> None:
    data, preds = tmp_path / "data", tmp_path / "preds"
    writer(data)
    _gt_disparity_predictions(data, bench, preds, **kwargs)
    res = evaluate(
        PrecomputedPredictions(preds, "disparity"), bench, data, dataset_kwargs=kwargs, allow_missing=True
    )
    assert res.num_samples == 2 and not [f for f in res.failures if f.name != "(layout)"]
    assert res.meta["alignment"] == "least_square_disparity"
    assert res.metrics["abs_rel"] == pytest.approx(0.0, abs=1e-6)
    assert res.metrics["delta1"] == 1.0
    assert res.metrics["rmse"] < 1e-3
    # NYU has a list file (a short list is only warned about); the others are scanned and have fewer samples
    # than the official split, which marks them incomplete
    assert res.complete == (bench == "nyuv2")
    for row in res.per_sample:
        assert row["scale"] == pytest.approx(1 / 0.37, rel=1e-5)
        assert row["n_valid"] > 0 and row["fit_pixels"] == row["n_valid"]


def test_kitti_crop_mask_and_perfect_depth_predictions(tmp_path: Path) -> None:
    write_kitti(tmp_path / "data")
    ds = open_dataset("kitti", tmp_path / "data")
    seen = []

    def predict(img: np.ndarray) -> np.ndarray:
        seen.append(img.shape)
        i = (len(seen) - 1) % len(ds)
        gt, _ = ds.load_depth(i)
        return (gt[23:375, 13:1229] * 2.0 + 1.0).astype(np.float32)  # affine depth of the cropped GT

    res = evaluate(predict, "kitti", tmp_path / "data", pred_space="depth")
    assert seen == [(352, 1216, 3), (352, 1216, 3)]
    assert res.meta["alignment"] == "least_square" and res.meta["crop"] == "kb"
    assert res.metrics["abs_rel"] == pytest.approx(0.0, abs=1e-5) and res.metrics["delta1"] == 1.0
    assert res.meta["input_sizes"] == [[352, 1216]]
    assert res.complete is True and res.meta["split_source"].startswith(
        "list:"
    )  # list given: count warned only
    # the evaluation mask restricts the scored pixels to the Eigen box of the cropped frame
    gt, valid = ds.load_depth(0)
    crop_valid = valid[23:375, 13:1229] & (gt[23:375, 13:1229] < 80)
    inside = np.zeros_like(crop_valid)
    inside[117:321, 43:1172] = True
    assert res.per_sample[0]["n_valid"] == int((crop_valid & inside).sum())
    full = evaluate(
        predict_fn=FunctionPredictor(lambda im: predict(im), "depth"),
        spec=get_benchmark("kitti").replace(kitti_mask="none"),
        data_root=tmp_path / "data",
    )
    assert full.per_sample[0]["n_valid"] == int(crop_valid.sum())


def test_missing_prediction_fails_loudly_unless_allowed(tmp_path: Path) -> None:
    data, preds = tmp_path / "data", tmp_path / "preds"
    write_nyu(data, n=3)
    _gt_disparity_predictions(data, "nyuv2", preds)
    victim = preds / "test/kitchen_0000/rgb_0003.npy"
    victim.unlink()
    with pytest.raises(IncompleteBenchmarkError, match="rgb_0003.npy") as ei:
        evaluate(PrecomputedPredictions(preds, "disparity"), "nyuv2", data)
    assert ei.value.result.num_samples == 2 and len(ei.value.result.failures) == 1
    res = evaluate(PrecomputedPredictions(preds, "disparity"), "nyuv2", data, allow_missing=True)
    assert res.num_samples == 2 and not res.complete
    assert "prediction not found" in res.failures[0].error and str(victim) in res.failures[0].error


def test_wrong_prediction_size_and_corrupt_gt_are_sample_failures(tmp_path: Path) -> None:
    data = tmp_path / "data"
    rows = write_nyu(data, n=2)
    (data / rows[1][1]).write_bytes(b"\x89PNG broken")

    res = evaluate(
        lambda im: np.ones(im.shape[:2]), "nyuv2", data, pred_space="disparity", allow_missing=True
    )
    assert res.num_samples == 1 and "cannot decode depth PNG" in res.failures[0].error
    with pytest.raises(IncompleteBenchmarkError, match="expected the input size"):
        evaluate(lambda im: np.ones((3, 3), np.float32), "nyuv2", data, pred_space="disparity")


def test_scanned_layout_with_fewer_samples_than_official_is_incomplete(tmp_path: Path) -> None:
    write_scannet(tmp_path)
    with pytest.raises(IncompleteBenchmarkError, match="official split scores 800"):
        evaluate(lambda im: np.ones(im.shape[:2], np.float32), "scannet", tmp_path, pred_space="disparity")


def test_limit_alignment_override_and_metadata(tmp_path: Path) -> None:
    data, preds = tmp_path / "data", tmp_path / "preds"
    write_nyu(data, n=3)
    _gt_disparity_predictions(data, "nyuv2", preds)
    res = evaluate(
        PrecomputedPredictions(preds, "disparity"),
        "nyuv2",
        data,
        limit=1,
        alignment="median",
        allow_missing=True,
    )
    assert res.num_samples == 1 and res.meta["limit"] == 1 and not res.complete
    assert res.meta["alignment"] == "median" and res.per_sample[0]["shift"] == 0.0
    assert res.meta["eval_mask"] == "nyu_eigen" and res.meta["depth_range"] == [1e-3, 10.0]
    assert res.meta["predictor"]["kind"] == "predictions"
    d = res.to_dict(per_sample=True)
    assert d["benchmark"] == "nyuv2" and len(d["per_sample"]) == 1


def test_marigold_prediction_naming(tmp_path: Path) -> None:
    nyu = PrecomputedPredictions(tmp_path, "depth", naming="marigold", benchmark="nyuv2")
    assert nyu.path_for("test/kitchen_0004/rgb_0001.png") == tmp_path / "test/kitchen_0004/pred_0001.npy"
    sc = PrecomputedPredictions(tmp_path, "depth", naming="marigold", benchmark="scannet")
    assert sc.path_for("scene0406_02/color/000300.jpg") == tmp_path / "scene0406_02/color/pred_000300.npy"
    ours = PrecomputedPredictions(tmp_path, "depth")
    assert ours.path_for("rgb/office/images/dslr_images/DSC_0219.JPG") == tmp_path / (
        "rgb/office/images/dslr_images/DSC_0219.npy"
    )
    with pytest.raises(ValueError, match="naming"):
        PrecomputedPredictions(tmp_path, "depth", naming="lotus")
    with pytest.raises(FileNotFoundError):
        PrecomputedPredictions(tmp_path / "missing", "depth")


def test_parse_space_and_predictor_contracts() -> None:
    assert parse_space("disparity") == DepthSpace.DISPARITY_AFFINE_INVARIANT
    assert parse_space("depth_metric") == DepthSpace.DEPTH_METRIC
    with pytest.raises(ValueError, match="unknown prediction space"):
        parse_space("inverse")
    with pytest.raises(ValueError, match="pred_space is required"):
        evaluate(lambda im: im, "nyuv2", "/nonexistent")


class _Planted(torch.nn.Module):
    """A fake DepthModel: outputs the mean image brightness + column index, records input sizes."""

    patch_size = 16
    output_space = DepthSpace.DISPARITY_AFFINE_INVARIANT

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))
        self.sizes: list[tuple[int, int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append((int(x.shape[-2]), int(x.shape[-1])))
        cols = torch.arange(x.shape[-1], dtype=x.dtype).expand(x.shape[0], 1, x.shape[-2], x.shape[-1])
        return self.w * (x.mean(1, keepdim=True) + cols)


def test_model_predictor_resizes_restores_and_flips() -> None:
    m = _Planted()
    img = np.zeros((30, 50, 3), np.uint8)
    pred = ModelPredictor(m, processing_res=0)(img, "x")
    assert m.sizes[-1] == (32, 48) and pred.shape == (30, 50)  # native size rounded to the patch multiple
    ModelPredictor(m, processing_res=96)(img, "x")
    assert m.sizes[-1] == (64, 96)  # longest side 96
    flip = ModelPredictor(m, processing_res=0, flip_tta=True)
    out = flip(img, "x")
    # the column ramp flipped back and averaged is constant (W'-1)/2 -> restored stays constant
    assert np.allclose(out, (48 - 1) / 2, atol=1e-4)
    assert flip.last_info() == {"proc_h": 32, "proc_w": 48}
    d = flip.describe()
    assert d["flip_tta"] is True and d["space"] == "disparity_affine_invariant" and d["patch_size"] == 16


def test_model_predictor_in_evaluate(tmp_path: Path) -> None:
    write_nyu(tmp_path, n=2, hw=(40, 56))
    res = evaluate(ModelPredictor(_Planted(), processing_res=48), "nyuv2", tmp_path)
    assert res.num_samples == 2 and all(math.isfinite(v) for v in res.metrics.values())
    assert res.meta["processing_sizes"] == [[32, 48]] and res.meta["input_sizes"] == [[40, 56]]
    assert res.per_sample[0]["proc_w"] == 48
