"""The public model API: presets, create/save/load round trips, frozen encoder, parameter counts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import anydepth
from anydepth.models.checkpoint import read_checkpoint_metadata
from anydepth.types import DepthSpace


def _x(h: int = 64, w: int = 96, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(2, 3, h, w, generator=g)


def test_list_models_has_paper_presets() -> None:
    names = anydepth.list_models()
    for n in (
        "sdt_dinov3_vits16",
        "sdt_dinov3_vitb16",
        "sdt_dinov3_vitl16",
        "dpt_dinov3_vits16",
        "dpt_dinov3_vitb16",
        "dpt_dinov3_vitl16",
        "sdt_dinov2_vitb14",
        "sdt_test",
        "dpt_test",
    ):
        assert n in names
    assert anydepth.list_models("sdt_dinov3_*") == [n for n in names if n.startswith("sdt_dinov3_")]
    with pytest.raises(KeyError, match="sdt_dinov3_vits16"):
        anydepth.create_model("sdt_dinov3_vits61")


@pytest.mark.parametrize("name", ["sdt_test", "dpt_test", "sdt_dinov2_test"])
def test_forward_shape_space_and_frozen_encoder(name: str) -> None:
    torch.manual_seed(0)
    model = anydepth.create_model(name)
    p = model.patch_size
    x = _x(4 * p, 6 * p)
    y = model(x)
    assert y.shape == (2, 1, 4 * p, 6 * p)
    assert torch.isfinite(y).all() and (y >= 0.001 - 1e-7).all()
    assert model.output_space is DepthSpace.DISPARITY_AFFINE_INVARIANT
    # frozen encoder: no grads, and train() cannot switch it to training mode
    model.train()
    assert model.decoder.training and not model.encoder.backbone.training
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert all(p.requires_grad for p in model.decoder.parameters())
    y = model(x)
    y.mean().backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    # every decoder parameter takes part in the graph (values may be 0 where the output ReLU is inactive)
    assert all(p.grad is not None for p in model.decoder.parameters())
    if (y > 0.001).any():
        assert any(p.grad.abs().sum() > 0 for p in model.decoder.parameters())


def test_input_must_be_patch_multiple() -> None:
    model = anydepth.create_model("sdt_test")
    with pytest.raises(ValueError, match="multiple of the patch size 16"):
        model(torch.rand(1, 3, 60, 64))


def test_overrides_and_unknown_override() -> None:
    m = anydepth.create_model("sdt_test", decoder_kwargs={"use_sde": False}, freeze_encoder=None)
    assert m.config.decoder_kwargs["use_sde"] is False and m.config.decoder_kwargs["fusion_channels"] == 32
    assert m.config.freeze_encoder is True  # None means "keep the preset's value"
    with pytest.raises(ValueError, match="unknown ModelConfig field"):
        anydepth.create_model("sdt_test", colour="red")


def test_full_checkpoint_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = anydepth.create_model("sdt_test")
    # make BN statistics non-trivial so they must round-trip too
    model.train()
    with torch.no_grad():
        model(_x())
    model.eval()
    path = anydepth.save_model(model, tmp_path / "m.safetensors", metadata={"step": 3})
    meta = read_checkpoint_metadata(path)
    assert meta["contents"] == "full" and meta["encoder_name"] == "dinov3_test"
    loaded = anydepth.load_model(path)
    assert not loaded.training
    x = _x(seed=5)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    with pytest.raises(FileExistsError):
        anydepth.save_model(model, path)


def test_decoder_only_checkpoint_needs_matching_encoder(tmp_path: Path) -> None:
    torch.manual_seed(2)
    enc_src = anydepth.create_model("sdt_test")
    enc_file = tmp_path / "encoder.pth"
    torch.save(enc_src.encoder.backbone.state_dict(), enc_file)
    model = anydepth.create_model("sdt_test", encoder_weights=enc_file)
    assert model.encoder_source is not None
    for a, b in zip(
        model.encoder.backbone.state_dict().values(),
        enc_src.encoder.backbone.state_dict().values(),
        strict=True,
    ):
        assert torch.equal(a, b)
    ckpt = anydepth.save_model(model, tmp_path / "dec.safetensors")
    assert read_checkpoint_metadata(ckpt)["contents"] == "decoder"
    from safetensors.torch import load_file

    assert all(k.startswith("decoder.") for k in load_file(ckpt))
    with pytest.raises(ValueError, match="decoder weights only"):
        anydepth.load_model(ckpt)
    loaded = anydepth.load_model(ckpt, encoder_weights=enc_file)
    x = _x(seed=7)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    # other encoder weights -> refuse (the decoder was trained on a different encoder)
    other = tmp_path / "other.pth"
    torch.manual_seed(3)
    torch.save(anydepth.create_model("sdt_test").encoder.backbone.state_dict(), other)
    with pytest.raises(ValueError, match="differ from those the checkpoint"):
        anydepth.load_model(ckpt, encoder_weights=other)
    anydepth.load_model(ckpt, encoder_weights=other, check_encoder_hash=False)


def test_load_model_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        anydepth.load_model(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError):
        anydepth.load_model(junk)


def test_paper_parameter_counts() -> None:
    expected_sdt = {"s": 5_517_381, "b": 9_451_077, "l": 13_384_261}
    expected_dpt = {"s": 50_825_153, "b": 76_047_425, "l": 99_579_713}
    for size in "sbl":
        assert anydepth.count_parameters(f"sdt_dinov3_vit{size}16")["decoder"] == expected_sdt[size]
        assert anydepth.count_parameters(f"dpt_dinov3_vit{size}16")["decoder"] == expected_dpt[size]


def test_cli_models_lists_presets(capsys: pytest.CaptureFixture[str]) -> None:
    from anydepth.cli.main import main

    assert main(["models", "sdt_dinov3_*"]) == 0
    out = capsys.readouterr().out.split()
    assert "sdt_dinov3_vits16" in out and "dpt_dinov3_vits16" not in out
