"""``anydepth convert``: encoder files and official checkpoints into the project's format."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import anydepth
from anydepth.cli.main import main
from anydepth.models.encoders.convert import detect_layout


def test_convert_encoder_file_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    src_model = anydepth.create_model("sdt_test")
    pth = tmp_path / "enc.pth"
    torch.save({"model": src_model.encoder.backbone.state_dict()}, pth)  # nested, as training scripts save
    dst = tmp_path / "enc.safetensors"
    assert main(["convert", str(pth), str(dst), "--encoder", "dinov3_test"]) == 0
    from safetensors.torch import load_file

    assert detect_layout(load_file(dst)) == "meta_dinov3"
    a = anydepth.create_model("sdt_test", encoder_weights=pth)
    b = anydepth.create_model("sdt_test", encoder_weights=dst)
    for (ka, va), (kb, vb) in zip(
        a.encoder.backbone.state_dict().items(), b.encoder.backbone.state_dict().items(), strict=True
    ):
        assert ka == kb and torch.equal(va, vb)
    # no overwrite without the flag; a file that does not fit the named encoder fails clearly
    assert main(["convert", str(pth), str(dst)]) == 2
    assert main(["convert", str(pth), str(tmp_path / "x.safetensors"), "--encoder", "dinov2_test"]) == 2


def test_convert_official_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # a Depth-Anything-V2-style official release file: DINOv2 under ``pretrained.``, SDT head under ``depth_head.``
    from anydepth.models.decoders.sdt import SDTDecoder
    from anydepth.models.official import load_official_checkpoint, to_official_state_dict
    from anydepth.registry import ENCODERS

    torch.manual_seed(0)
    backbone = ENCODERS.get("dinov2_test")()
    head = SDTDecoder([32] * 4, fusion_channels=16, head_channels=(8, 8))
    with torch.no_grad():
        for p in head.parameters():
            p.normal_(0, 0.1)
    sd = {f"pretrained.{k}": v for k, v in backbone.state_dict().items()}
    sd.update({f"depth_head.{k}": v for k, v in to_official_state_dict(head.state_dict(), "sdt").items()})
    src = tmp_path / "dav2_sdt_tiny.pth"
    torch.save({"model": sd}, src)
    dst = tmp_path / "model.safetensors"
    assert main(["convert", str(src), str(dst), "--preset", "sdt_dinov2_test"]) == 0
    assert "official AnyDepth checkpoint" in capsys.readouterr().out
    ref = load_official_checkpoint(src, preset="sdt_dinov2_test")
    got = anydepth.load_model(dst)  # self-contained: the encoder came from the source file itself
    x = torch.rand(1, 3, 56, 84, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(ref(x), got(x))


def test_convert_rejects_unknown_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk.pth"
    torch.save({"foo.weight": torch.zeros(3)}, junk)
    assert main(["convert", str(junk), str(tmp_path / "o.safetensors")]) == 2
    assert "not a recognised checkpoint" in capsys.readouterr().err
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00\x01garbage")
    assert main(["convert", str(garbage), str(tmp_path / "o.safetensors")]) == 2
    assert main(["convert", str(tmp_path / "missing.pth"), str(tmp_path / "o.safetensors")]) == 2
