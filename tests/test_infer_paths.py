"""One path per flow: the shared forward path (``ops.runner``), the shared runner builder and vocabulary
(``cli.runner``) and the shared point-cloud builder (``data.pointcloud.prediction_cloud``)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

import anydepth
from anydepth.cli.main import build_parser
from anydepth.cli.runner import DTYPES, build_runner, canonical_dtype, resolve_device, resolve_dtype
from anydepth.data.pointcloud import encode_ply, prediction_cloud, read_ply, write_ply
from anydepth.eval.evaluate import ModelPredictor
from anydepth.inference import TorchRunner, predict
from anydepth.ops.runner import predict_resized, runner_forward
from anydepth.types import DepthSpace, Intrinsics, Prediction


class RampRunner:
    """Known-answer runner: the output is the column index (so a flipped-back average is constant)."""

    patch_size = 16
    output_space = DepthSpace.DISPARITY_AFFINE_INVARIANT
    device = torch.device("cpu")

    def __init__(self, bad_shape: bool = False) -> None:
        self.calls: list[tuple[int, ...]] = []
        self.bad_shape = bad_shape

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(x.shape))
        b, _, h, w = x.shape
        y = torch.arange(w, dtype=torch.float32).expand(b, 1, h, w).clone()
        return torch.cat([y, y], 1) if self.bad_shape else y  # 2 channels: not the contract


@pytest.fixture(scope="module")
def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return anydepth.create_model("sdt_test").eval()


# ------------------------------------------------------------------------------------------ forward path


def test_predict_resized_batches_tta_in_one_call_and_restores_each_size() -> None:
    runner = RampRunner()
    imgs = [torch.rand(3, 30, 50), torch.rand(3, 34, 46)]
    out = predict_resized(runner, imgs, (32, 48), flip_tta=True)
    assert runner.calls == [(4, 3, 32, 48)]  # 2 images + their flips in one forward pass
    assert [tuple(o.shape) for o in out] == [(1, 30, 50), (1, 34, 46)]
    for o in out:  # the column ramp flipped back and averaged is the constant (W' - 1) / 2
        np.testing.assert_allclose(o.numpy(), (48 - 1) / 2, atol=1e-5)
    plain = predict_resized(RampRunner(), torch.rand(2, 3, 32, 48), (32, 48))
    assert torch.equal(plain[0][0, 0], torch.arange(48, dtype=torch.float32))  # no resize at the proc size
    with pytest.raises(ValueError, match=r"runner returned shape .*expected \[1,1,H,W\]"):
        runner_forward(RampRunner(bad_shape=True), torch.rand(1, 3, 32, 48))
    with pytest.raises(ValueError, match="at least one image"):
        predict_resized(runner, [], (32, 48))


@pytest.mark.parametrize("flip", [False, True])
def test_eval_and_inference_give_identical_predictions(tiny_model: torch.nn.Module, flip: bool) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, size=(40, 70, 3), dtype=np.uint8)
    from_eval = ModelPredictor(tiny_model, processing_res=64, flip_tta=flip)(rgb, "x")
    from_infer = predict(tiny_model, rgb, resolution="long:64", flip_tta=flip).value
    assert from_eval.shape == from_infer.shape == (40, 70)
    assert np.array_equal(from_eval, from_infer)  # one path: bit-identical
    # a runner (here a bfloat16 TorchRunner) is accepted as is, and its dtype is recorded
    p = ModelPredictor(TorchRunner(tiny_model, dtype=torch.bfloat16), processing_res=64)
    assert p.describe()["autocast_dtype"] == "bfloat16" and p(rgb, "x").shape == (40, 70)


# ------------------------------------------------------------------------------------ runner construction


def test_dtype_vocabulary_accepts_old_spellings_with_a_deprecation(caplog: pytest.LogCaptureFixture) -> None:
    assert DTYPES == ("float32", "bfloat16", "float16")
    assert canonical_dtype("bfloat16") == "bfloat16" and not caplog.records
    with caplog.at_level(logging.WARNING, logger="anydepth.cli.runner"):
        assert canonical_dtype("fp16") == "float16"
    assert "--dtype fp16 is deprecated; use --dtype float16" in caplog.text
    assert resolve_dtype("bf16") is torch.bfloat16 and resolve_dtype("float32") is torch.float32
    with pytest.raises(ValueError, match="unknown dtype 'int8'; expected one of float32, bfloat16, float16"):
        canonical_dtype("int8")


def test_device_vocabulary() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="--device cuda:1: CUDA is not available"):
            resolve_device("cuda:1")


def test_every_command_takes_the_same_runtime_flags() -> None:
    parser = build_parser()
    common = ["--device", "cpu", "--dtype", "bf16", "--fast"]
    cmds = {
        "infer": ["infer", "x.png", "-o", "out", "--model", "sdt_test"],
        "serve": ["serve", "--model", "sdt_test"],
        "eval": ["eval", "--model", "sdt_test", "--benchmark", "nyuv2", "--data-root", "d", "--output", "o"],
    }
    for name, argv in cmds.items():
        args = parser.parse_args(argv + common)
        assert (args.device, args.dtype, args.fast) == ("cpu", "bf16", True), name
        defaults = parser.parse_args(argv)
        assert (defaults.device, defaults.dtype, defaults.fast) == ("auto", "float32", False), name


def _ns(**kw: object) -> argparse.Namespace:
    base = {"checkpoint": None, "model": None, "encoder_weights": None, "device": "cpu", "dtype": "float32"}
    return argparse.Namespace(**{**base, **kw})


def test_build_runner_from_choices(tmp_path: Path, tiny_model: torch.nn.Module) -> None:
    built = build_runner(_ns(model="sdt_test", dtype="bf16"))
    assert isinstance(built.runner, TorchRunner) and built.runner.dtype is torch.bfloat16
    assert built.dtype == "bfloat16" and built.device == torch.device("cpu") and built.random_decoder
    assert built.source() == {"preset": "sdt_test"}
    ckpt = anydepth.save_model(tiny_model, tmp_path / "sub" / "m.safetensors")
    built = build_runner(_ns(checkpoint=str(ckpt), fast=True))
    assert not built.random_decoder and built.fast and built.runner.dtype is torch.float32
    assert built.source() == {"checkpoint": str(ckpt), "fast": True}
    assert built.source(basenames=True) == {"checkpoint": "m.safetensors", "fast": True}
    with pytest.raises(ValueError, match="either --checkpoint or --model"):
        build_runner(_ns(checkpoint=str(ckpt), model="sdt_test"))
    with pytest.raises(ValueError, match="no model"):
        build_runner(_ns())
    with pytest.raises(ValueError, match="ONNX inference takes --backend onnxruntime --onnx FILE"):
        build_runner(_ns(model="sdt_test", backend="onnxruntime", onnx="m.onnx"))
    with pytest.raises(ValueError, match="--fast applies to the torch backend"):
        build_runner(_ns(backend="onnxruntime", onnx="m.onnx", fast=True))


# ------------------------------------------------------------------------------------------- point clouds


def _pred(metric: bool) -> Prediction:
    depth = np.full((6, 8), 2.0, np.float32)
    depth[0, 0] = np.nan
    depth[5, 7] = 50.0
    meta = {"intrinsics_source": "fov", "depth": {"mapping": "nominal", "near": 1.0, "far": 10.0}}
    return Prediction(
        value=1.0 / depth,
        space=DepthSpace.DISPARITY_AFFINE_INVARIANT,
        intrinsics=Intrinsics(8.0, 8.0, 3.5, 2.5),
        metric=metric,
        depth=depth,
        meta=meta,
    )


def test_prediction_cloud_masks_describes_and_encodes_like_the_file(tmp_path: Path) -> None:
    rgb = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)
    cloud = prediction_cloud(_pred(False), rgb, stride=1, header=["generated by test"], max_depth=10.0,
                             unaligned_hint="; use --align-to")  # fmt: skip
    assert len(cloud.points) == 6 * 8 - 2  # the NaN pixel and the one beyond max_depth are dropped
    np.testing.assert_allclose(cloud.points[:, 2], 2.0)
    assert cloud.comments[0] == "generated by test"
    assert cloud.comments[1].startswith("metric: NO") and cloud.comments[1].endswith("; use --align-to)")
    assert cloud.comments[-1].endswith("(fov) image 8x6 stride 1")
    path = write_ply(tmp_path / "c.ply", cloud.points, cloud.colors, comments=cloud.comments)
    assert path.read_bytes() == encode_ply(cloud.points, cloud.colors, comments=cloud.comments)
    pts, cols, comments = read_ply(path)
    assert np.array_equal(pts, cloud.points) and np.array_equal(cols, cloud.colors)
    assert comments == cloud.comments
    metric = prediction_cloud(_pred(True), rgb, stride=2, intrinsics_source=False)
    assert metric.comments[0] == "metric: yes; units: metres (metric model output)"
    assert metric.comments[-1].endswith("image 8x6 stride 2") and len(metric.points) == 12 - 1
    with pytest.raises(ValueError, match="needs a prediction with depth and intrinsics"):
        prediction_cloud(Prediction(value=np.zeros((2, 2), np.float32), space=DepthSpace.DEPTH_METRIC), rgb,
                         stride=1)  # fmt: skip
