"""VGGT-1B rows of the model matrix: aggregator encoder, VGGT's DPT head, file loading, presets and recipes.

``tests/data/vggt_tiny.safetensors`` was written by ``scripts/parity/vggt.py --write-refs tests/data`` from VGGT's
own code (commit in the file metadata) with random weights: the state dict in ``model.pt``'s names
(``state_dict/*``), the input image (``input/image``) and VGGT's outputs (``output/*``) for the ``dpt_vggt_test``
architecture.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import anydepth
from anydepth.cli.main import main
from anydepth.config import load_config
from anydepth.engine.config import TrainConfig
from anydepth.models.factory import count_parameters, get_model_config
from anydepth.models.weights import vggt as wv
from anydepth.registry import DECODERS, ENCODERS
from anydepth.types import DepthSpace

DATA = Path(__file__).resolve().parent / "data"
REPO = Path(__file__).resolve().parents[1]
TOL = 1e-5  # the parity bar (fp32, CPU)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Any:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _refs() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, str]]:
    path = DATA / "vggt_tiny.safetensors"
    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
    sd = {k.removeprefix("state_dict/"): v for k, v in tensors.items() if k.startswith("state_dict/")}
    return sd, tensors, meta


def _tiny_original() -> anydepth.ModelConfig:
    """The tiny architecture of the reference file, as VGGT's original depth model (depth output space)."""
    return get_model_config("dpt_vggt_test").replace(
        output_space=wv.VGGT_1B.output_space, name="tiny_original"
    )


def _with_other_heads(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    extra = {
        "camera_head.trunk.0.norm1.weight": torch.ones(4),
        "point_head.norm.weight": torch.ones(4),
        "point_head.norm.bias": torch.zeros(4),
        "track_head.feature_extractor.norm.weight": torch.ones(4),
    }
    return {**sd, **extra}


def test_parameter_counts_equal_vggt() -> None:
    with torch.device("meta"):
        agg = ENCODERS.get("vggt_1b")()
        head = DECODERS.get("dpt_vggt")((2048,) * 4)
    assert sum(p.numel() for p in agg.parameters()) == 909_112_320
    assert sum(p.numel() for p in head.parameters()) == 32_654_562
    assert len(agg.state_dict()) == 1210 and len(head.state_dict()) == 62  # + 525 of the other heads = 1797
    assert agg.embed_dim == 2048 and agg.patch_size == 14 and agg.n_blocks == 24
    assert agg.frame_blocks[0].norm1.eps == 1e-5 and agg.patch_embed.blocks[0].norm1.eps == 1e-6
    assert count_parameters("dpt_vggt_1b") == {"encoder": 909_112_320, "decoder": 32_654_562,
                                               "total": 941_766_882}  # fmt: skip
    assert count_parameters("sdt_vggt_1b")["encoder"] == 909_112_320


def test_matches_vggt_reference_outputs() -> None:
    sd, t, meta = _refs()
    assert meta["vggt_commit"].startswith("44b3afb") and meta["preset"] == "dpt_vggt_test"
    assert (DATA / "vggt_tiny.safetensors").stat().st_size < 500_000
    model, report = wv.load_vggt(sd, config=_tiny_original())
    assert report["loaded"] == len(sd) and report["dropped"] == []
    x = t["input/image"]
    assert x.shape[-2] != x.shape[-1]  # non-square
    with torch.no_grad():
        xn = (x - model.image_mean) / model.image_std
        tokens = model.encoder.backbone(xn)
        out = model.decoder.forward_outputs(model.encoder(xn), tuple(x.shape[-2:]))
        depth = model(x)
    for i, tok in enumerate(tokens):
        assert float((tok - t[f"output/tokens.{i}"]).abs().max()) <= TOL
    assert depth.shape == t["output/depth"].shape == (2, 1, *x.shape[-2:])
    assert float((depth - t["output/depth"]).abs().max()) <= TOL
    assert float((out["depth_conf"] - t["output/conf"]).abs().max()) <= TOL
    assert torch.equal(out["depth"], depth) and depth.std() > 0.1


@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_real_file_layout_loads_whole_and_lists_dropped_heads(
    tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sd, t, _ = _refs()
    full = _with_other_heads(sd)
    path = tmp_path / f"model.{fmt}"
    if fmt == "pt":
        torch.save(full, path)
    else:
        save_file(full, str(path))
    assert wv.is_vggt_checkpoint(path) and wv.is_vggt_checkpoint(tmp_path)
    model, report = wv.load_vggt(path, config=_tiny_original())
    assert report["dropped_heads"] == {"camera_head": 1, "point_head": 2, "track_head": 1}
    assert report["dropped"] == sorted(k for k in full if not k.startswith(("aggregator.", "depth_head.")))
    # anydepth.load_model dispatches VGGT files (the default architecture is VGGT-1B; tiny here)
    monkeypatch.setattr(wv, "VGGT_1B", _tiny_original())
    loaded = anydepth.load_model(path)
    assert loaded.output_space == DepthSpace.DEPTH_AFFINE_INVARIANT and loaded.encoder_source is not None
    x = t["input/image"]
    with torch.no_grad():
        assert float((loaded(x) - t["output/depth"]).abs().max()) <= TOL
    with pytest.raises(ValueError, match="do not pass encoder_weights"):
        anydepth.load_model(path, encoder_weights=path)
    # half precision, converted while reading
    half, _ = wv.load_vggt(path, dtype=torch.bfloat16, config=_tiny_original())
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    with torch.no_grad():
        y = half(x.to(torch.bfloat16)).float()
    assert float(((y - t["output/depth"]).abs() / t["output/depth"]).max()) < 0.1


def test_create_model_takes_the_aggregator_from_a_vggt_file(tmp_path: Path) -> None:
    sd, _, _ = _refs()
    path = tmp_path / "model.pt"
    torch.save(_with_other_heads(sd), path)
    model = anydepth.create_model("sdt_vggt_test", encoder_weights=path)
    got = model.encoder.backbone.state_dict()
    assert all(
        torch.equal(got[k[len("aggregator.") :]], v) for k, v in sd.items() if k.startswith("aggregator.")
    )
    assert model.encoder_source is not None and model.encoder_source["path"] == str(path)
    from anydepth.models.encoders.loading import load_backbone_weights

    report = load_backbone_weights(model.encoder, path)
    assert report["family"] == "vggt" and any(k.startswith("depth_head.") for k in report["dropped"])
    assert report["dropped_heads"] == {"camera_head": 1, "point_head": 2, "track_head": 1}


def test_bad_files_and_options_are_clear_errors(tmp_path: Path) -> None:
    sd, _, _ = _refs()
    cfg = _tiny_original()
    with pytest.raises(ValueError, match=r"unexpected keys \(1\).*'mystery.weight'"):
        wv.load_vggt({**sd, "mystery.weight": torch.ones(1)}, config=cfg)
    bad = dict(sd)
    bad["depth_head.norm.weight"] = torch.ones(3)
    with pytest.raises(ValueError, match=r"shape mismatches.*depth_head|norm.weight: file \(3,\)"):
        wv.load_vggt(bad, config=cfg)
    missing = {k: v for k, v in sd.items() if k != "aggregator.camera_token"}
    with pytest.raises(ValueError, match=r"missing keys \(1\): \['camera_token'\]"):
        wv.load_vggt(missing, config=cfg)
    with pytest.raises(ValueError, match="dpt_vggt decoder"):
        wv.load_vggt(sd, config=get_model_config("sdt_vggt_test"))
    with pytest.raises(FileNotFoundError, match="not found"):
        wv.load_vggt(tmp_path / "nope.pt", config=cfg)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    assert not wv.is_vggt_checkpoint(junk)
    with pytest.raises(ValueError, match="junk.pt: not a readable PyTorch checkpoint"):
        wv.read_vggt_state_dict(junk)
    with pytest.raises(ValueError, match="no final LayerNorm"):
        ENCODERS.get("vggt_test")().get_intermediate_layers(torch.rand(1, 3, 28, 28), n=[0], norm=True)
    with pytest.raises(ValueError, match="output_dim must be 2"):
        DECODERS.get("dpt_vggt")((32,) * 4, output_dim=4)
    with pytest.raises(ValueError, match="unknown dpt_vggt decoder option"):
        DECODERS.get("dpt_vggt")((32,) * 4, channels=3)
    with pytest.raises(ValueError, match="4 tapped layers of one width"):
        DECODERS.get("dpt_vggt")((32, 32, 32, 16))


def test_single_image_is_one_view_and_taps_are_concatenated() -> None:
    torch.manual_seed(0)
    m = ENCODERS.get("vggt_test")().eval()
    x = torch.randn(2, 3, 28, 42)
    with torch.no_grad():
        layers = m(x)
        taps = m.get_intermediate_layers(x, n=[1, 3])
        one = m.get_intermediate_layers(x[1:], n=[3])
    assert len(layers) == 4 and layers[0].shape == (2, 1 + 4 + 2 * 3, 32)
    for (patches, cam), i in zip(taps, [1, 3], strict=True):
        assert patches.shape == (2, 32, 2, 3) and cam.shape == (2, 32)
        assert torch.equal(cam, layers[i][:, 0])
        assert torch.equal(patches.flatten(2).transpose(1, 2), layers[i][:, 5:])
    # images of a batch do not see each other (each is its own sequence)
    assert float((one[0][0] - taps[1][0][1:]).abs().max()) < 1e-5


RECIPE_TINY = [
    "data.train=[{name: synthetic, kwargs: {length: 4, size: [28, 42], seed: 0}}]",
    "data.val=[]",
    "data.size=[28, 42]",
    "data.num_workers=0",
    "train.batch_size=2",
    "train.epochs=0",
    "train.max_steps=2",
    "train.log_every=1",
    "train.ckpt_every=0",
    "train.keep_last=0",
    "train.tensorboard=false",
    "train.precision=fp32",
    "schedule.warmup_steps=1",
    "model.encoder_weights=null",
]


def test_recipes_encode_table3() -> None:
    for row in ("dpt", "sdt"):
        cfg = load_config(TrainConfig, [REPO / "configs" / "train" / f"{row}_vggt_1b.yaml"])
        assert cfg.model.preset == f"{row}_vggt_1b" and cfg.model.freeze_encoder
        assert {d.name for d in cfg.data.train} == {"hypersim", "vkitti2"}
        assert cfg.data.size == (518, 518) and cfg.optim.lr == 1e-3 and cfg.train.epochs == 5
        assert cfg.loss.gradient_weight == 2.0 and cfg.schedule.power == 0.9


@pytest.mark.parametrize("row", ["dpt", "sdt"])
def test_row_trains_saves_reloads_infers_and_evaluates(row: str, tmp_path: Path) -> None:
    from anydepth.engine.trainer import fit
    from test_eval_datasets import write_nyu

    recipe = REPO / "configs" / "train" / f"{row}_vggt_1b.yaml"
    cfg = load_config(TrainConfig, [recipe], [f"model.preset={row}_vggt_test", *RECIPE_TINY])
    res = fit(cfg, tmp_path / "run", progress=False)
    assert res.step == 2 and math.isfinite(res.last_loss)
    ckpt = tmp_path / "run" / "model_final.safetensors"
    model = anydepth.load_model(ckpt)
    assert (
        model.config.name == f"{row}_vggt_test"
        and model.output_space == DepthSpace.DISPARITY_AFFINE_INVARIANT
    )
    x = torch.rand(1, 3, 28, 42)
    with torch.no_grad():
        assert torch.equal(model(x), res.model.eval()(x))

    from PIL import Image

    img = (torch.rand(30, 40, 3) * 255).to(torch.uint8).numpy()
    Image.fromarray(img).save(tmp_path / "a.png")
    assert main(["infer", str(tmp_path / "a.png"), "-o", str(tmp_path / "pred"), "--checkpoint", str(ckpt),
                 "--size", "native", "--save", "npy", "--device", "cpu", "-q"]) == 0  # fmt: skip
    assert list((tmp_path / "pred").rglob("*.npy"))

    write_nyu(tmp_path / "data", n=2, hw=(28, 42))
    out = tmp_path / "eval"
    assert main(["eval", "--checkpoint", str(ckpt), "--benchmark", "nyuv2", "--data-root", str(tmp_path / "data"),
                 "--output", str(out), "--processing-res", "42", "--device", "cpu", "--no-progress"]) == 0  # fmt: skip
    assert (out / "metrics.json").is_file()


@pytest.mark.slow  # the dynamo ONNX export of the tiny VGGT takes ~1 min on CPU
@pytest.mark.parametrize("row", ["dpt", "sdt"])
def test_row_exports_to_onnx(row: str, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    torch.manual_seed(0)
    ckpt = anydepth.save_model(anydepth.create_model(f"{row}_vggt_test"), tmp_path / "m.safetensors")
    onnx = tmp_path / "m.onnx"
    # the command verifies onnxruntime against PyTorch at other sizes (max abs diff <= 1e-4)
    assert main(["export", "--checkpoint", str(ckpt), "-o", str(onnx), "--threads", "1", "-q"]) == 0
    assert onnx.is_file()


def test_bench_paper_gains_the_vggt_rows() -> None:
    from anydepth.bench.efficiency import TABLE3_PRESETS, format_paper_tables, table3_decoders

    assert {"dpt_vggt_1b", "sdt_vggt_1b"} <= set(TABLE3_PRESETS.values())
    rows = table3_decoders({"VGGT-1B + DPT": "dpt_vggt_1b"})
    (dpt,) = rows
    assert dpt["params"] == 32_654_562 and (dpt["size_256"], dpt["size_512"]) == (252, 504)
    assert 0 < dpt["gflops_256"] < dpt["gflops_512"]
    assert "| VGGT-1B + DPT | `dpt_vggt_1b` | 32,654,562 |" in format_paper_tables(
        {"params": [], "flops": [], "table3": rows}
    )
