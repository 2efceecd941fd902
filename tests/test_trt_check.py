"""TensorRT readiness of ONNX exports without TensorRT: the static parser-support check, static-shape exports
(``anydepth export --static``) run through ``OnnxRunner``, and half-precision DA3/VGGT encoders (RoPE tables in
q's dtype)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import anydepth
from anydepth.cli.main import main

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from onnx import TensorProto, helper  # noqa: E402

from anydepth.export.trt_check import check_tensorrt  # noqa: E402

F32 = TensorProto.FLOAT


def _model(nodes: list, inputs: list, outputs: list, inits: list = (), opset: int = 18, extra_domains=()):  # type: ignore[no-untyped-def]
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    ops = [helper.make_opsetid("", opset), *(helper.make_opsetid(d, 1) for d in extra_domains)]
    return helper.make_model(graph, opset_imports=ops)


def _vi(name: str, shape: list, t: int = F32):  # type: ignore[no-untyped-def]
    return helper.make_tensor_value_info(name, t, shape)


def _resize(**attrs: object):  # type: ignore[no-untyped-def]
    scales = helper.make_tensor("scales", F32, [4], [1.0, 1.0, 2.0, 2.0])
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], name="up", **attrs)
    return _model([node], [_vi("x", [1, 3, 8, 8])], [_vi("y", [1, 3, 16, 16])], [scales])


def test_clean_graph_has_no_findings() -> None:
    w = helper.make_tensor("w", F32, [4, 3, 3, 3], [0.1] * 108)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["y"], name="relu"),
    ]
    assert check_tensorrt(_model(nodes, [_vi("x", [1, 3, 8, 8])], [_vi("y", [1, 4, 8, 8])], [w])) == []
    assert check_tensorrt(_resize(mode="linear", coordinate_transformation_mode="pytorch_half_pixel")) == []


def test_resize_modes_tensorrt_cannot_import() -> None:
    issues = check_tensorrt(_resize(mode="cubic", antialias=1))
    msgs = [str(i) for i in issues]
    assert len(issues) == 2 and all(i.severity == "error" and i.node == "up" for i in issues), msgs
    assert any("cubic" in m for m in msgs) and any("antialias" in m for m in msgs)
    (bad,) = check_tensorrt(_resize(mode="linear", coordinate_transformation_mode="tf_crop_and_resize"))
    assert "tf_crop_and_resize" in bad.message


def test_axes_must_be_constant() -> None:
    sq = helper.make_node("Squeeze", ["x", "axes"], ["y"], name="sq")
    dynamic = _model(
        [sq], [_vi("x", [1, 3, 1, 8]), _vi("axes", [1], TensorProto.INT64)], [_vi("y", [1, 3, 8])]
    )
    (issue,) = check_tensorrt(dynamic)
    assert issue.op == "Squeeze" and "axes" in issue.message
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [2])
    assert check_tensorrt(_model([sq], [_vi("x", [1, 3, 1, 8])], [_vi("y", [1, 3, 8])], [axes])) == []
    const = helper.make_node("Constant", [], ["axes"], value=axes)
    assert check_tensorrt(_model([const, sq], [_vi("x", [1, 3, 1, 8])], [_vi("y", [1, 3, 8])])) == []


def test_unsupported_ops_domains_and_opsets() -> None:
    uniq = helper.make_node("Unique", ["x"], ["y"], name="u")
    (issue,) = check_tensorrt(_model([uniq], [_vi("x", [5])], [_vi("y", [None])]))
    assert issue.op == "Unique" and "not supported" in issue.message
    custom = helper.make_node("MyOp", ["x"], ["y"], name="c", domain="com.example")
    issues = check_tensorrt(_model([custom], [_vi("x", [5])], [_vi("y", [5])], extra_domains=["com.example"]))
    assert {i.node for i in issues} == {"<model>", "c"} and all(i.severity == "error" for i in issues)
    relu = helper.make_node("Relu", ["x"], ["y"])
    (old,) = check_tensorrt(_model([relu], [_vi("x", [5])], [_vi("y", [5])], opset=21))
    assert "opset 21" in old.message


def test_gridsample_rank_layernorm_outputs_scatternd_and_double() -> None:
    gs = helper.make_node("GridSample", ["x", "g"], ["y"], name="gs")
    m = _model([gs], [_vi("x", [1, 2, 3, 4, 5]), _vi("g", [1, 3, 4, 5, 3])], [_vi("y", [1, 2, 3, 4, 5])])
    (issue,) = check_tensorrt(m)
    assert "rank 5" in issue.message
    scale = helper.make_tensor("s", F32, [4], [1.0] * 4)
    ln = helper.make_node("LayerNormalization", ["x", "s"], ["y", "mean"], name="ln")
    add = helper.make_node("Add", ["y", "mean"], ["z"])
    m = _model([ln, add], [_vi("x", [2, 4])], [_vi("z", [2, 4])], [scale])
    assert [i.node for i in check_tensorrt(m)] == ["ln"]
    sc = helper.make_node("ScatterND", ["x", "i", "u"], ["y"], name="sc", reduction="none")
    m = _model([sc], [_vi("x", [4]), _vi("i", [1, 1], TensorProto.INT64), _vi("u", [1])], [_vi("y", [4])])
    assert [i.node for i in check_tensorrt(m)] == ["sc"]
    cast = helper.make_node("Cast", ["x"], ["y"], to=TensorProto.DOUBLE)
    (warn,) = check_tensorrt(_model([cast], [_vi("x", [4])], [_vi("y", [4], TensorProto.DOUBLE)]))
    assert warn.severity == "warning" and "DOUBLE" in warn.message


def test_half_precision_da3_and_vggt_encoders_run() -> None:
    """DA3/VGGT rotate q and k with tables in q's dtype: a ``.half()`` model keeps q, k and v in one dtype
    (the float32 tables made scaled_dot_product_attention refuse mixed dtypes, and the fp16 ONNX export fail)."""
    torch.manual_seed(0)
    x = torch.rand(1, 3, 56, 70)
    for name in ("dpt_da3_test", "sdt_vggt_test"):
        m = anydepth.create_model(name).eval()
        with torch.no_grad():
            ref = m(x)
            half = m.half()(x.half()).float()
        assert torch.isfinite(half).all()
        assert (half - ref).abs().max() <= 2e-2 * ref.abs().max() + 1e-3, name


def test_static_export_runs_any_input_through_its_one_shape(tmp_path: Path, nontrivial) -> None:  # type: ignore[no-untyped-def]
    from anydepth.export.onnx import export_onnx
    from anydepth.export.onnx_runtime import OnnxRunner

    torch.manual_seed(0)
    model = nontrivial(anydepth.create_model("sdt_test"))
    path = tmp_path / "static.onnx"
    report = export_onnx(model, path, export_hw=(64, 96), static=True, batch_size=2, threads=1)
    assert report.static_shape == [2, 3, 64, 96] and report.tensorrt == []
    assert [c["shape"] for c in report.checks] == [[2, 3, 64, 96]] and report.max_abs_diff <= 1e-4
    m = onnx.load(str(path))
    dims = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [2, 3, 64, 96]
    assert {p.key: p.value for p in m.metadata_props}["anydepth.static_shape"] == "2x3x64x96"
    runner = OnnxRunner(path, threads=1)
    assert runner.static_shape == (2, 64, 96)
    # 3 images at another size: resized to 64x96, run as 2 + (1 padded to 2), resized back
    x = torch.rand(3, 3, 48, 80, generator=torch.Generator().manual_seed(1))
    got = runner(x)
    with torch.no_grad():
        ref = model(F.interpolate(x, size=(64, 96), mode="bilinear", align_corners=False))
    ref = F.interpolate(ref, size=(48, 80), mode="bilinear", align_corners=False)
    assert got.shape == (3, 1, 48, 80) and ref.std() > 1e-3
    assert (got - ref).abs().max() <= 1e-4
    with pytest.raises(ValueError, match="B >= 1"):
        runner(torch.rand(0, 3, 64, 96))
    with pytest.raises(ValueError, match="verify_hw"):
        export_onnx(model, tmp_path / "s2.onnx", export_hw=(64, 64), static=True, verify_hw=[(32, 32)])


def test_export_cli_static_flags(tmp_path: Path) -> None:
    out = str(tmp_path / "m.onnx")
    assert main(["export", "--model", "sdt_test", "-o", out, "--static"]) == 2
    assert main(["export", "--model", "sdt_test", "-o", out, "--batch", "4"]) == 2
    assert not Path(out).exists()


@pytest.mark.slow
def test_vggt_needs_a_static_export_for_tensorrt(tmp_path: Path, nontrivial) -> None:  # type: ignore[no-untyped-def]
    """VGGT resamples its position table with an antialiased bicubic resize (as the original): TensorRT 10
    cannot import it, so the dynamic export is flagged and a static one folds it into a constant."""
    from anydepth.export.onnx import export_onnx

    torch.manual_seed(0)
    model = nontrivial(anydepth.create_model("sdt_vggt_test"))
    dyn = export_onnx(model, tmp_path / "d.onnx", export_hw=(56, 70), verify=False)
    assert any("cubic" in t for t in dyn.tensorrt) and any("antialias" in t for t in dyn.tensorrt)
    st = export_onnx(model, tmp_path / "s.onnx", export_hw=(56, 70), static=True, threads=1)
    assert not [t for t in st.tensorrt if t.startswith("error")], st.tensorrt
    assert st.max_abs_diff is not None and st.max_abs_diff <= 1e-4
