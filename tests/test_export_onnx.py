"""ONNX export (dynamo exporter, dynamic batch/H/W), ``OnnxRunner`` and ``anydepth infer --backend onnxruntime``."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import anydepth
from anydepth.cli.main import main

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def _nontrivial(model: nn.Module, seed: int = 0) -> nn.Module:
    """He-scaled decoder convs so the tiny model's output varies (default init gives a constant map)."""
    g = torch.Generator().manual_seed(seed)
    for name, m in model.decoder.named_modules():
        if isinstance(m, nn.Conv2d) and ".up." not in f".{name}.":
            m.weight.data.normal_(0, math.sqrt(2.0 / m.weight[0].numel()), generator=g)
            if m.bias is not None:
                m.bias.data.normal_(0, 0.1, generator=g)
    return model.eval()


def test_runner_rejects_missing_and_foreign_files(tmp_path: Path) -> None:
    from anydepth.export.onnx_runtime import OnnxRunner

    with pytest.raises(FileNotFoundError, match="does not exist"):
        OnnxRunner(tmp_path / "missing.onnx")
    # a valid ONNX graph without anydepth metadata
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    path = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    with pytest.raises(ValueError, match="no anydepth metadata"):
        OnnxRunner(path)


def test_export_refuses_to_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    out.write_bytes(b"user data")
    assert main(["export", "--model", "sdt_test", "-o", str(out), "--no-verify"]) == 2
    assert out.read_bytes() == b"user data"


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, nn.Module]:
    from anydepth.export.onnx import export_onnx

    torch.manual_seed(0)
    model = _nontrivial(anydepth.create_model("sdt_test"))
    path = tmp_path_factory.mktemp("onnx") / "sdt_test.onnx"
    report = export_onnx(model, path, export_hw=(64, 64), verify_hw=[(96, 48), (48, 112)], threads=1)
    assert report.max_abs_diff is not None and report.max_abs_diff <= 1e-4
    assert [c["shape"] for c in report.checks] == [[1, 3, 96, 48], [2, 3, 48, 112]]
    assert (
        report.tensorrt == [] and report.static_shape is None
    )  # nothing TensorRT 10 documents as unsupported
    return path, model


@pytest.mark.parametrize("grid", ["stored", pytest.param("other", marks=pytest.mark.slow)])
def test_dinov2_export_is_dynamic_even_at_the_stored_position_grid(tmp_path: Path, grid: str) -> None:
    """DINOv2 returns its stored position table at the stored grid and resamples otherwise; an export whose
    example input has the stored grid must not bake that shortcut in (it failed at every other size)."""
    from anydepth.export.onnx import export_onnx

    torch.manual_seed(0)
    model = _nontrivial(anydepth.create_model("sdt_dinov2_test"))
    side = math.isqrt(model.encoder.backbone.pos_embed.shape[1] - 1) * model.patch_size
    hw = (side, side) if grid == "stored" else (side + 28, side - 14)
    report = export_onnx(
        model, tmp_path / "d2.onnx", export_hw=hw, verify_hw=[(side, side), (side - 28, side + 42)], threads=1
    )
    assert report.max_abs_diff is not None and report.max_abs_diff <= 1e-4


def test_onnx_round_trip_dynamic_sizes(exported: tuple[Path, nn.Module]) -> None:
    from anydepth.export.onnx_runtime import OnnxRunner

    path, model = exported
    runner = OnnxRunner(path, threads=1)
    assert runner.patch_size == 16 and runner.output_space == model.output_space
    assert runner.model_config is not None and runner.model_config["name"] == "sdt_test"
    # sizes and batch sizes different from the 2x3x64x64 export example
    for shape in ((1, 3, 80, 32), (3, 3, 32, 96)):
        x = torch.rand(*shape, generator=torch.Generator().manual_seed(shape[0]))
        with torch.no_grad():
            ref = model(x)
        got = runner(x)
        assert got.shape == ref.shape == (shape[0], 1, shape[2], shape[3])
        assert ref.std() > 1e-3  # the comparison is not between two constants
        assert (got - ref).abs().max() <= 1e-4
    with pytest.raises(ValueError, match="multiple of the patch size"):
        runner(torch.rand(1, 3, 40, 32))


def test_infer_cli_with_onnxruntime(exported: tuple[Path, nn.Module], tmp_path: Path) -> None:
    from PIL import Image

    path, model = exported
    img = (np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "a.png")
    out = tmp_path / "out"
    rc = main(
        ["infer", str(tmp_path / "a.png"), "-o", str(out), "--backend", "onnxruntime", "--onnx", str(path),
         "--size", "native", "--save", "npy", "-q"]
    )  # fmt: skip
    assert rc == 0
    npys = list(out.rglob("*.npy"))
    assert npys, list(out.rglob("*"))
    # --onnx without the onnxruntime backend is rejected
    assert main(["infer", str(tmp_path / "a.png"), "-o", str(tmp_path / "o2"), "--onnx", str(path)]) == 2


@pytest.mark.slow
def test_fp16_export_has_half_weights_and_float32_io(tmp_path: Path) -> None:
    import onnx

    from anydepth.export.onnx import export_onnx

    torch.manual_seed(0)
    model = _nontrivial(anydepth.create_model("sdt_test"))
    path = tmp_path / "m16.onnx"
    report = export_onnx(model, path, fp16=True, export_hw=(32, 32), verify_hw=[(48, 32)], threads=1)
    assert report.fp16 and path.is_file() and report.tensorrt == []
    m = onnx.load(str(path))
    meta = {p.key: p.value for p in m.metadata_props}
    assert meta["anydepth.precision"] == "float16"
    f32 = onnx.TensorProto.FLOAT
    assert m.graph.input[0].type.tensor_type.elem_type == f32
    assert m.graph.output[0].type.tensor_type.elem_type == f32
    # the weights are float16 (a few small folded index/grid constants may stay float32/int64)
    sizes = {t.name: (t.data_type, math.prod(t.dims)) for t in m.graph.initializer}
    half = sum(n for dt, n in sizes.values() if dt == onnx.TensorProto.FLOAT16)
    single = sum(n for dt, n in sizes.values() if dt == onnx.TensorProto.FLOAT)
    assert half > 0.9 * sum(p.numel() for p in model.parameters()) and single < 0.01 * half
    # onnxruntime's CPU provider runs it here or reports why not; when it ran, fp16 stays close
    for check in report.checks:
        if "max_abs_diff" in check:
            assert check["max_abs_diff"] <= 5e-2
