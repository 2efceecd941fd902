"""Depth Anything V2 / 3 rows of the model matrix: original heads, original checkpoints, presets, recipes, CLI.

Reference outputs in ``tests/data/{dav2_dpt,da3_dpt,da3_dualdpt}_tiny.safetensors`` were written by
``scripts/parity/dav2_da3_heads.py --write-refs tests/data`` from the original ``DPTHead`` (Depth-Anything-V2) and
``DPT`` / ``DualDPT`` (Depth-Anything-3) with random weights (original-named head state dict, inputs, outputs).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import anydepth
from anydepth.cli.main import main
from anydepth.models.factory import count_parameters
from anydepth.models.weights.da3 import convert_da3_state_dict, load_da3_checkpoint
from anydepth.models.weights.dav2 import convert_dav2_state_dict, load_dav2_checkpoint
from anydepth.registry import DECODERS, ENCODERS
from anydepth.types import DepthSpace, EncoderOutput
from test_eval_datasets import write_nyu

DATA = Path(__file__).resolve().parent / "data"
REPO = Path(__file__).resolve().parents[1]


def _n(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_head_parameter_counts_equal_the_originals() -> None:
    # counts of the original code (docs/model_matrix.md; scripts/parity/dav2_da3_heads.py checks them too)
    with torch.device("meta"):
        for size, c, want in (
            ("vits", 384, 2_728_513),
            ("vitb", 768, 10_890_305),
            ("vitl", 1024, 30_947_009),
        ):
            name = f"dpt_dav2_{size}14"
            assert count_parameters(name)["decoder"] == want
            cfg = anydepth.models.factory.get_model_config(name)
            assert _n(DECODERS.get("dpt_dav2")([c] * 4, **cfg.decoder_kwargs)) == want
        assert _n(DECODERS.get("dpt_da3")([1024] * 4)) == 29_803_778
        assert _n(DECODERS.get("dualdpt")([2048] * 4)) == 47_229_246
    assert count_parameters("dpt_da3_vitl14")["decoder"] == 29_803_778
    assert count_parameters("dualdpt_da3_vitl14")["decoder"] == 47_229_246
    assert (
        count_parameters("dualdpt_da3_vitl14")["encoder"] == 304_374_784
    )  # DA3-Large ViT-L (camera token, q/k norms)


def _ref(name: str) -> tuple[dict[str, torch.Tensor], EncoderOutput, dict[str, torch.Tensor], dict[str, str]]:
    path = DATA / f"{name}.safetensors"
    t = load_file(str(path))
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
    sd = {k.removeprefix("state_dict/"): v for k, v in t.items() if k.startswith("state_dict/")}
    enc = EncoderOutput(
        tuple(t[f"input/features.{i}"] for i in range(4)),
        tuple(t[f"input/cls.{i}"] for i in range(4)),
        int(meta["patch_size"]),
    )
    outs = {k.removeprefix("output/"): v for k, v in t.items() if k.startswith("output/")}
    return sd, enc, outs, meta


@pytest.mark.parametrize("name", ["dav2_dpt_tiny", "da3_dpt_tiny", "da3_dualdpt_tiny"])
def test_matches_original_heads(name: str) -> None:
    sd, enc, ref, meta = _ref(name)
    assert (DATA / f"{name}.safetensors").stat().st_size < 250_000
    if name.startswith("dav2"):  # the real file layouts: depth_head.* / model.head.* (+ the backbone)
        dec_sd, _, info = convert_dav2_state_dict({f"depth_head.{k}": v for k, v in sd.items()})
        decoder = "dpt_dav2"
    else:
        full = {f"model.head.{k}": v for k, v in sd.items()}
        full["model.backbone.pretrained.cls_token"] = torch.zeros(1, 1, 8)
        dec_sd, _, info = convert_da3_state_dict(full)
        decoder = info["decoder"]
    assert meta["original_class"].endswith(
        {"dpt_dav2": "DPTHead", "dpt_da3": "DPT", "dualdpt": "DualDPT"}[decoder]
    )
    head = DECODERS.get(decoder)(info["in_dims"], **info["decoder_kwargs"])
    head.load_state_dict(dec_sd, strict=True)
    head.eval()
    hw = tuple(ref["depth"].shape[-2:])
    with torch.no_grad():
        outs = head.forward_outputs(enc, hw)
        depth = head(enc, hw)
    assert sorted(outs) == sorted(ref)
    for k, v in ref.items():
        assert outs[k].shape == v.shape, k
        assert float((outs[k] - v).abs().max()) <= 1e-5, k  # the tolerance (bit-exact when written)
    assert torch.equal(depth, outs["depth"])


def _tiny_head(decoder: str, in_dim: int, seed: int, **kw: object) -> torch.nn.Module:
    torch.manual_seed(seed)
    head = DECODERS.get(decoder)([in_dim] * 4, features=16, out_channels=(8, 8, 16, 16), **kw)
    with torch.no_grad():
        for p in head.parameters():
            p.add_(0.05 * torch.randn(p.shape))  # non-default biases / norms
    return head


def test_dav2_checkpoint_loads_whole(tmp_path: Path) -> None:
    torch.manual_seed(0)
    enc = ENCODERS.get("dinov2_test")()
    head = _tiny_head("dpt_dav2", 32, 1)
    sd = {f"pretrained.{k}": v for k, v in enc.state_dict().items()}
    sd.update({f"depth_head.{k}": v for k, v in head.state_dict().items()})
    path = tmp_path / "depth_anything_v2_tiny.pth"
    torch.save(sd, path)
    model = load_dav2_checkpoint(path, preset="dpt_dav2_test")
    assert model.output_space is DepthSpace.DISPARITY_AFFINE_INVARIANT and model.config.use_backbone_norm
    for k, v in head.state_dict().items():
        assert torch.equal(model.decoder.state_dict()[k], v)
    for k, v in enc.state_dict().items():
        assert torch.equal(model.encoder.backbone.state_dict()[k], v)
    x = torch.rand(1, 3, 56, 70)
    with torch.no_grad():
        y = model(x)
        # DepthAnythingV2.forward: relu(head(get_intermediate_layers(norm=True, taps))) on the normalised image
        xn = (x - model.image_mean) / model.image_std
        feats = enc.eval().get_intermediate_layers(
            xn, n=(0, 1, 2, 3), reshape=True, return_class_token=True, norm=True
        )
        want = head.eval()(
            EncoderOutput(tuple(f for f, _ in feats), tuple(c for _, c in feats), 14), (56, 70)
        )
    assert y.shape == (1, 1, 56, 70) and torch.equal(y, want) and (y >= 0).all()
    # load_model dispatches DAv2 files; without a preset a ViT of width 32 has none
    with pytest.raises(ValueError, match="no anydepth preset"):
        anydepth.load_model(path)
    sd["depth_head.extra.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"bad\.pth.*unexpected \['extra\.weight'\]"):
        load_dav2_checkpoint(tmp_path / "bad.pth", preset="dpt_dav2_test")


def _da3_file(tmp_path: Path, decoder: str, dedupe_ray_norm: bool = False) -> tuple[Path, dict, dict]:
    torch.manual_seed(0)
    enc = ENCODERS.get("da3_test")(layerscale_init=1.0)
    head = _tiny_head(decoder, enc.embed_dim, 2)
    sd = {f"model.backbone.pretrained.{k}": v for k, v in enc.state_dict().items()}
    sd.update({f"model.head.{k}": v.clone() for k, v in head.state_dict().items()})
    if dedupe_ray_norm:  # a writer that stores the shared LayerNorm once
        for lvl in (1, 2, 3):
            for p in ("weight", "bias"):
                del sd[f"model.head.scratch.output_conv2_aux.{lvl}.2.{p}"]
    sd["model.cam_enc.pose_branch.fc1.weight"] = torch.zeros(4, 9)
    sd["model.cam_dec.fc_qvec.weight"] = torch.zeros(4, 4)
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return path, enc.state_dict(), head.state_dict()


@pytest.mark.parametrize(
    ("decoder", "preset"), [("dualdpt", "dualdpt_da3_test"), ("dpt_da3", "dpt_da3_test")]
)
def test_da3_checkpoint_loads_whole_and_lists_dropped_keys(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, decoder: str, preset: str
) -> None:
    path, enc_sd, head_sd = _da3_file(tmp_path, decoder, dedupe_ray_norm=decoder == "dualdpt")
    _, _, info = convert_da3_state_dict(load_file(str(path)))
    assert info["dropped_keys"] == ["cam_dec.fc_qvec.weight", "cam_enc.pose_branch.fc1.weight"]
    with caplog.at_level(logging.WARNING):
        model = load_da3_checkpoint(path, preset=preset)
    assert "dropped 2 tensors" in caplog.text and "cam_enc" in caplog.text
    assert model.output_space is DepthSpace.DEPTH_AFFINE_INVARIANT and model.config.decoder == decoder
    for k, v in head_sd.items():
        assert torch.equal(model.decoder.state_dict()[k], v), k
    for k, v in enc_sd.items():
        assert torch.equal(model.encoder.backbone.state_dict()[k], v), k
    x = torch.rand(1, 3, 42, 70)
    with torch.no_grad():
        outs = model.forward_outputs(x)
        y = model(x)
    assert torch.equal(outs["depth"], y) and (y > 0).all()
    want = {"dualdpt": {"depth", "depth_conf", "ray", "ray_conf"}, "dpt_da3": {"depth", "sky"}}[decoder]
    assert set(outs) == want
    if decoder == "dualdpt":
        assert outs["ray"].shape == (1, 6, 24, 40) and (outs["depth_conf"] > 1).all()
    # the depth pipeline takes the relative-depth output as it is (no disparity inversion)
    img = torch.rand(3, 42, 70)
    (pred,) = anydepth.predict(model, [img], resolution="56")
    assert pred.space is DepthSpace.DEPTH_AFFINE_INVARIANT and pred.value.shape[-2:] == (42, 70)
    # load_model dispatches DA3 files; a tiny backbone has no preset of its own
    with pytest.raises(ValueError, match=r"only ViT-L \(1024\)"):
        anydepth.load_model(path)
    # the same file serves as encoder weights (layout "da3") and restores decoder-only checkpoints
    m2 = anydepth.create_model(preset, encoder_weights=path)
    assert torch.equal(m2.encoder.backbone.state_dict()["camera_token"], enc_sd["camera_token"])
    anydepth.save_model(model, tmp_path / "dec.safetensors")
    m3 = anydepth.load_model(tmp_path / "dec.safetensors", encoder_weights=path)
    with torch.no_grad():
        assert torch.equal(m3(x), y)


def test_forward_outputs_of_a_single_output_decoder() -> None:
    model = anydepth.create_model("sdt_test")
    x = torch.rand(1, 3, 32, 48)
    with torch.no_grad():
        outs = model.forward_outputs(x)
        assert list(outs) == ["depth"] and torch.equal(outs["depth"], model(x))


def _png(path: Path, h: int, w: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
    return path


# tiny preset -> the recipe of its Table 3 row
ROWS = {
    "dpt_dav2_test": "dpt_dav2_vitb14",
    "sdt_dinov2_test": "sdt_dav2_vitb14",
    "dpt_da3_test": "dpt_da3_vitl14",
    "dualdpt_da3_test": "dualdpt_da3_vitl14",
    "sdt_da3_test": "sdt_da3_vitl14",
}


@pytest.mark.parametrize("preset", list(ROWS))
def test_row_end_to_end_through_the_cli(tmp_path: Path, preset: str) -> None:
    """Build, train (the row's recipe on procedural data), save, reload, infer and evaluate (ONNX: below)."""
    run = tmp_path / "run"
    sets = [
        f"model.preset={preset}", "model.encoder_weights=null",
        "data.train=[{name: synthetic, kwargs: {length: 4, size: [56, 56]}}]", "data.val=[]",
        "data.size=[56,56]", "data.num_workers=0", "train.batch_size=2", "train.epochs=1",
        "train.precision=fp32", "train.tensorboard=false", "train.log_every=1", "train.ckpt_every=100",
    ]  # fmt: skip
    argv = [
        "train",
        "--config",
        str(REPO / "configs" / "train" / f"{ROWS[preset]}.yaml"),
        "--output",
        str(run),
    ]
    assert main([*argv, *[a for s in sets for a in ("--set", s)], "--no-progress"]) == 0
    ckpt = run / "model_final.safetensors"
    model = anydepth.load_model(ckpt)
    assert model.config.decoder == anydepth.models.factory.get_model_config(preset).decoder
    assert model.output_space is DepthSpace.DISPARITY_AFFINE_INVARIANT  # what anydepth training supervises
    x = torch.rand(1, 3, 42, 56)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (1, 1, 42, 56) and torch.isfinite(y).all()

    img = _png(tmp_path / "a.png", 40, 60, 0)
    assert (
        main(["infer", str(img), "-o", str(tmp_path / "pred"), "--checkpoint", str(ckpt), "--size", "56"])
        == 0
    )
    assert any((tmp_path / "pred").iterdir())
    write_nyu(tmp_path / "data" / "nyuv2", n=2, hw=(48, 64))
    out = tmp_path / "eval"
    rc = main(
        ["eval", "--checkpoint", str(ckpt), "--benchmark", "nyuv2", "--data-root", str(tmp_path / "data")]
        + ["--output", str(out), "--processing-res", "56", "--device", "cpu", "--no-progress"]
    )
    assert rc == 0
    doc = json.loads((out / "metrics.json").read_text())
    assert np.isfinite(doc["benchmarks"]["nyuv2"]["metrics"]["abs_rel"])


@pytest.mark.slow  # the ONNX export (torch.export + translation) takes 15-40 s per model on 2 cores
@pytest.mark.parametrize("preset", list(ROWS))
def test_row_exports_to_onnx(tmp_path: Path, preset: str) -> None:
    pytest.importorskip("onnxruntime")
    from anydepth.export.onnx_runtime import OnnxRunner

    torch.manual_seed(0)
    model = anydepth.create_model(preset)
    ckpt = anydepth.save_model(model, tmp_path / "m.safetensors")
    onnx = tmp_path / "m.onnx"
    # the CLI checks onnxruntime against PyTorch at other sizes too (the graph keeps H and W dynamic)
    assert main(["export", "--checkpoint", str(ckpt), "-o", str(onnx), "--size", "42x56"]) == 0
    x = torch.rand(1, 3, 70, 98)
    with torch.no_grad():
        assert float((OnnxRunner(onnx)(x) - model(x)).abs().max()) <= 1e-4


def test_bench_paper_table3_and_timing_any_preset(capsys: pytest.CaptureFixture[str]) -> None:
    from anydepth.bench.efficiency import TABLE3_PRESETS, format_paper_tables, table3_decoders

    rows = table3_decoders({k: v for k, v in TABLE3_PRESETS.items() if "DA3" in k}, resolutions=(256,))
    assert [r["params"] for r in rows] == [
        29_803_778,
        47_229_246,
        count_parameters("sdt_da3_vitl14")["decoder"],
    ]
    assert all(r["size_256"] == 252 and r["gflops_256"] > 0 for r in rows)
    assert "DA3 ViT-L + Dual-DPT" in format_paper_tables({"params": [], "flops": [], "table3": rows})
    argv = [
        "bench",
        "--models",
        "dualdpt_da3_test,dpt_dav2_test",
        "--resolutions",
        "56",
        "--variants",
        "eager",
    ]
    assert main([*argv, "--warmup", "0", "--repeats", "1", "--no-memory", "--no-plot"]) == 0
    out = capsys.readouterr().out
    assert "dualdpt_da3_test" in out and "dpt_dav2_test" in out


def test_da3_rope_positions_unchanged_by_the_export_friendly_form() -> None:
    # DA3 frame attention: (row + 1, col + 1) per patch in raster order, class token at (0, 0)
    enc = ENCODERS.get("da3_test")()
    h, w = 3, 5
    rows = torch.arange(h).repeat_interleave(w)
    cols = torch.arange(w).repeat(h)
    pos = torch.cat([torch.zeros(1, 2, dtype=torch.long), torch.stack([rows, cols], -1) + 1])
    from anydepth.models.encoders.da3 import rope2d_angles

    want = rope2d_angles(pos, enc.config.embed_dim // enc.config.num_heads, enc.config.rope_freq)
    got = enc._rope(h, w, torch.device("cpu"), frame=True)
    assert torch.equal(got, want)


def test_da3_anyview_encoder_matches_original() -> None:
    # tiny DA3 any-view ViT (camera token, q/k norm and RoPE from block 2, 2C taps), weights in the hub layout
    path = DATA / "da3_vit_tiny.safetensors"
    t = load_file(str(path))
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
    assert meta["original_class"].endswith("DinoVisionTransformer")
    sd = {k.removeprefix("state_dict/"): v for k, v in t.items() if k.startswith("state_dict/")}
    from anydepth.models.encoders.base import EncoderWrapper
    from anydepth.models.weights.loading import load_backbone_weights

    backbone = ENCODERS.get("da3_test")()
    assert load_backbone_weights(backbone, sd)["layout"] == "da3"
    enc = EncoderWrapper(backbone, json.loads(meta["taps"]), use_backbone_norm=True)
    x = t["input/image"]
    with torch.no_grad():
        feats = enc(x).features
    h, w = x.shape[-2] // 14, x.shape[-1] // 14
    for i, f in enumerate(feats):
        ref = t[f"output/features.{i}"].reshape(1, h, w, -1).permute(0, 3, 1, 2)
        assert f.shape == ref.shape and float((f - ref).abs().max()) <= 1e-5
