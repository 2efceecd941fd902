"""``load_official_checkpoint``: official files (tiny encoders) -> ready ``DepthModel``s."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

import anydepth.models  # noqa: F401  (registers encoders, decoders and presets)
from anydepth.models.decoders import SDTDecoder
from anydepth.models.official import load_official_checkpoint, to_official_state_dict
from anydepth.registry import ENCODERS

pytestmark = pytest.mark.skipif("dinov2_test" not in ENCODERS, reason="tiny test encoders not registered")


def _head(c: int = 32, **kwargs) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    dec = SDTDecoder([c] * 4, fusion_channels=16, head_channels=(8, 8), **kwargs)
    with torch.no_grad():
        for p in dec.parameters():
            p.normal_(0, 0.1)
    return to_official_state_dict(dec.state_dict(), "sdt")


def test_dav2_style_file_loads_into_a_model(tmp_path: Path) -> None:
    backbone = ENCODERS.get("dinov2_test")()
    enc_sd = {f"pretrained.{k}": v for k, v in backbone.state_dict().items()}
    head = _head()
    path = tmp_path / "dav2_sdt_tiny.pth"
    torch.save({"model": {**enc_sd, **{f"depth_head.{k}": v for k, v in head.items()}}}, path)

    model = load_official_checkpoint(path, preset="sdt_dinov2_test")
    assert model.config.decoder == "sdt" and model.config.use_backbone_norm is True
    assert model.decoder.min_output == 0.0 and model.decoder.resize_align_corners is True  # release script
    for k, v in backbone.state_dict().items():
        assert torch.equal(model.encoder.backbone.state_dict()[k], v), k
    ours = model.decoder.state_dict()
    assert torch.equal(ours["fusion.readouts.2.weight"], head["weighted_fusion.readout_projects.2.0.weight"])
    assert model.encoder_source is not None and model.encoder_source["path"] == str(path)
    with torch.no_grad():
        out = model(torch.rand(1, 3, 56, 84))  # patch 14 -> 4x6 tokens -> x16 path resized to the input
    assert out.shape == (1, 1, 56, 84) and torch.isfinite(out).all() and out.min() >= 0


def test_head_only_file_with_preset(tmp_path: Path) -> None:
    path = tmp_path / "head.pth"
    torch.save(_head(), path)
    model = load_official_checkpoint(path, preset="sdt_test")
    assert model.config.encoder == "dinov3_test" and model.config.use_backbone_norm is False
    assert model.decoder.min_output == 0.001
    assert model(torch.rand(1, 3, 64, 96)).shape == (1, 1, 64, 96)


def test_load_model_dispatches_official_files(tmp_path: Path) -> None:
    from anydepth.models.checkpoint import load_model

    path = tmp_path / "head.pth"
    torch.save(_head(), path)
    with pytest.raises(ValueError, match="pass preset="):  # width 32 has no default preset
        load_model(path)


def test_wrong_preset_or_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "head.pth"
    torch.save(_head(), path)
    with pytest.raises(ValueError, match="uses decoder 'dpt'"):
        load_official_checkpoint(path, preset="dpt_test")
    pickled = tmp_path / "pickled.pth"
    torch.save({"model": _head(), "args": argparse.Namespace(lr=1.0)}, pickled)
    with pytest.raises(ValueError, match="weights-only"):
        load_official_checkpoint(pickled, preset="sdt_test")
    with pytest.raises(FileNotFoundError):
        load_official_checkpoint(tmp_path / "missing.pth")


@pytest.mark.skipif("da3_test" not in ENCODERS, reason="tiny DA3 encoder not registered")
def test_da3_style_file_with_config(tmp_path: Path) -> None:
    from anydepth.models.config import ModelConfig

    backbone = ENCODERS.get("da3_test")()  # any-view: tapped features are 2 x 32 wide
    width = int(backbone.embed_dim)
    sd = {f"model.backbone.pretrained.{k}": v for k, v in backbone.state_dict().items()}
    sd |= {f"model.head.{k}": v for k, v in _head(width, use_cls_token=False, use_sde=False).items()}
    path = tmp_path / "da3_sdt_tiny.pth"
    torch.save(sd, path)
    cfg = ModelConfig(encoder="da3_test", decoder="sdt", layer_indices=(0, 1, 2, 3))
    model = load_official_checkpoint(path, preset=cfg)
    assert model.config.decoder_kwargs["use_cls_token"] is False and model.config.use_backbone_norm is True
    for k, v in backbone.state_dict().items():
        assert torch.equal(model.encoder.backbone.state_dict()[k], v), k
    with torch.no_grad():
        out = model(torch.rand(1, 3, 56, 70))
    assert out.shape == (1, 1, 56, 70) and out.min() >= 0.001
