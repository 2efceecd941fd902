"""SDT decoder and its layers: shapes, output range, gradients, parameter counts, ablations, DySample."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from anydepth.models.decoders import SDTDecoder
from anydepth.models.layers import DySample, dysample_init_pos
from anydepth.registry import DECODERS
from anydepth.types import EncoderOutput

SMALL = {"fusion_channels": 16, "head_channels": (8, 8)}


def _enc(
    c: int = 24, grid: tuple[int, int] = (4, 6), b: int = 2, patch: int = 16, cls: bool = True
) -> EncoderOutput:
    g = torch.Generator().manual_seed(0)
    feats = tuple(torch.randn(b, c, *grid, generator=g) for _ in range(4))
    tokens = tuple(torch.randn(b, c, generator=g) for _ in range(4)) if cls else ()
    return EncoderOutput(feats, tokens, patch)


def _n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_registered() -> None:
    assert DECODERS.get("sdt") is SDTDecoder


@pytest.mark.parametrize(("c", "expected"), [(384, 5_517_381), (768, 9_451_077), (1024, 13_384_261)])
def test_parameter_counts_match_paper(c: int, expected: int) -> None:
    with torch.device("meta"):
        dec = SDTDecoder([c] * 4)
    assert _n_params(dec) == expected


@pytest.mark.parametrize(
    ("grid", "patch", "out_hw"),
    [((4, 4), 16, (64, 64)), ((4, 6), 16, (64, 96)), ((4, 6), 14, (56, 84)), ((5, 3), 16, (80, 48))],
)
def test_output_shape_and_range(grid: tuple[int, int], patch: int, out_hw: tuple[int, int]) -> None:
    dec = SDTDecoder([24] * 4, **SMALL).eval()
    enc = _enc(grid=grid, patch=patch)
    with torch.no_grad():
        raw = dec.forward_raw(enc)
        out = dec(enc, out_hw)
    assert raw.shape == (2, 1, 16 * grid[0], 16 * grid[1])  # native x16 path, also for patch 14
    assert out.shape == (2, 1, *out_hw)
    assert torch.isfinite(out).all()
    assert out.min() >= 0.001 - 1e-7
    if out_hw == raw.shape[-2:]:
        torch.testing.assert_close(out, torch.relu(raw) + 0.001)
    else:  # resize of the raw output, then the activation
        ref = torch.relu(F.interpolate(raw, size=out_hw, mode="bilinear", align_corners=False)) + 0.001
        torch.testing.assert_close(out, ref)


def test_gradients_reach_every_parameter() -> None:
    dec = SDTDecoder([24] * 4, **SMALL).train()
    with torch.no_grad():  # keep the output ReLU active everywhere (a tiny random head can start all < 0)
        dec.head.conv_out.bias.fill_(10.0)
    out = dec(_enc(), (64, 96))
    out.square().mean().backward()
    missing = [n for n, p in dec.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing


def test_state_dict_keys_are_readable() -> None:
    keys = set(SDTDecoder([24] * 4, **SMALL).state_dict())
    for k in (
        "fusion.readouts.0.weight",
        "fusion.projections.3.weight",
        "fusion.layer_weights",
        "sde.dwconv.weight",
        "sde.bn.running_var",
        "upsample1.block1.up.offset.weight",
        "upsample2.block2.up.scope.weight",
        "upsample1.block2.conv.weight",
        "refine2.conv.bias",
        "head.conv1.weight",
        "head.conv_out.bias",
    ):
        assert k in keys
    assert not any("init_pos" in k for k in keys)  # constant grid: non-persistent buffer
    assert "fusion.projections.0.bias" not in keys and "upsample1.block1.conv.bias" not in keys


def test_ablation_use_sde() -> None:
    full, off = SDTDecoder([24] * 4, **SMALL), SDTDecoder([24] * 4, use_sde=False, **SMALL)
    assert off.sde is None and not any(k.startswith("sde.") for k in off.state_dict())
    assert _n_params(full) - _n_params(off) == 16 * 9 + 2 * 16
    assert off(_enc(), (64, 96)).shape == (2, 1, 64, 96)


def test_ablation_bilinear_upsampler_keeps_conv_blocks() -> None:
    dec = SDTDecoder([24] * 4, upsampler="bilinear", **SMALL)
    keys = set(dec.state_dict())
    assert not any(".up." in k for k in keys)
    assert "upsample1.block1.conv.weight" in keys and "upsample2.block2.bn.weight" in keys
    per_dysample = (16 * 32 + 32) + 16 * 32  # offset (with bias) + scope
    assert _n_params(SDTDecoder([24] * 4, **SMALL)) - _n_params(dec) == 4 * per_dysample
    assert dec(_enc(), (64, 96)).shape == (2, 1, 64, 96)


def test_ablation_uniform_fusion_weights() -> None:
    dec = SDTDecoder([24] * 4, fusion_weights="uniform", **SMALL).eval()
    assert "fusion.layer_weights" not in dec.state_dict()
    learned = SDTDecoder([24] * 4, **SMALL).eval()
    learned.load_state_dict(dec.state_dict(), strict=False)  # softmax(ones) == uniform
    enc = _enc()
    with torch.no_grad():
        torch.testing.assert_close(dec(enc, (64, 96)), learned(enc, (64, 96)))


def test_ablation_no_cls_token() -> None:
    dec = SDTDecoder([24] * 4, use_cls_token=False, **SMALL)
    assert not any(k.startswith("fusion.readouts") for k in dec.state_dict())
    assert dec(_enc(cls=False), (64, 96)).shape == (2, 1, 64, 96)
    with pytest.raises(ValueError, match="class tokens"):
        SDTDecoder([24] * 4, **SMALL)(_enc(cls=False), (64, 96))


def test_widths_and_min_output() -> None:
    dec = SDTDecoder([24, 32, 40, 48], fusion_channels=8, head_channels=(4, 6), min_output=0.5)
    sd = dec.state_dict()
    assert sd["fusion.projections.2.weight"].shape == (8, 40)
    assert sd["fusion.readouts.3.weight"].shape == (48, 96)
    assert sd["head.conv1.weight"].shape == (4, 8, 3, 3) and sd["head.conv2.weight"].shape == (6, 4, 3, 3)
    g = torch.Generator().manual_seed(1)
    feats = tuple(torch.randn(1, c, 2, 3, generator=g) for c in (24, 32, 40, 48))
    cls = tuple(torch.randn(1, c, generator=g) for c in (24, 32, 40, 48))
    assert dec.eval()(EncoderOutput(feats, cls, 16), (32, 48)).min() >= 0.5


def test_config_round_trip() -> None:
    dec = SDTDecoder([24] * 4, use_sde=False, fusion_weights="uniform", **SMALL)
    again = SDTDecoder([24] * 4, **dec.config())
    assert again.config() == dec.config()
    assert set(again.state_dict()) == set(dec.state_dict())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fusion_chanels": 16}, "unknown SDT decoder option"),
        ({"upsampler": "nearest"}, "upsampler"),
        ({"fusion_weights": "random"}, "fusion_weights"),
        ({"fusion_channels": 18}, "multiple of"),
        ({"head_channels": (8,)}, "head_channels"),
        ({"min_output": -1.0}, "min_output"),
    ],
)
def test_bad_options_are_rejected(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SDTDecoder([24] * 4, **kwargs)


def test_bad_features_are_rejected() -> None:
    dec = SDTDecoder([24] * 4, **SMALL)
    enc = _enc()
    with pytest.raises(ValueError, match="expected 4 feature maps"):
        dec(EncoderOutput(enc.features[:3], enc.cls_tokens[:3], 16), (64, 96))
    with pytest.raises(ValueError, match="feature 1"):
        dec(
            EncoderOutput((enc.features[0], enc.features[1][:, :8], *enc.features[2:]), enc.cls_tokens, 16),
            (64, 96),
        )


# ----------------------------------------------------------------------------------------------------- DySample
def test_dysample_init() -> None:
    torch.manual_seed(0)
    ds = DySample(256, scale=2, groups=4, dyscope=True)
    assert ds.offset.weight.shape == (32, 256, 1, 1) and ds.scope is not None
    assert ds.scope.bias is None and torch.all(ds.scope.weight == 0)
    assert torch.all(ds.offset.bias == 0)
    assert abs(float(ds.offset.weight.detach().std()) - 0.001) < 1e-4
    pos = ds.init_pos.view(2, 4, 2, 2)  # (xy, group, row, col)
    expected_x = torch.tensor([[-0.25, 0.25], [-0.25, 0.25]])
    for g in range(4):
        torch.testing.assert_close(pos[0, g], expected_x)  # x varies along columns
        torch.testing.assert_close(pos[1, g], expected_x.T)  # y varies along rows
    assert "init_pos" not in ds.state_dict()
    torch.testing.assert_close(dysample_init_pos(2, 4), ds.init_pos)


def test_dysample_with_zero_offsets_is_bilinear_x2() -> None:
    ds = DySample(8, groups=4)
    torch.nn.init.zeros_(ds.offset.weight)
    x = torch.randn(2, 8, 3, 5)
    with torch.no_grad():
        out = ds(x)
    ref = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-6)


def test_dysample_offsets_move_samples_per_group() -> None:
    # a constant x-offset of +1 input pixel on group 0 only shifts group 0's channels one pixel left
    ds = DySample(8, groups=4)
    torch.nn.init.zeros_(ds.offset.weight)
    with torch.no_grad():
        ds.offset.bias.zero_()
        ds.offset.bias[0:4] = 4.0  # x offsets of group 0 (4 sub-pixels); gated by sigmoid(0) * 0.5 = 0.25
    x = torch.arange(5.0).view(1, 1, 1, 5).expand(1, 8, 4, 5).contiguous()
    with torch.no_grad():
        out = ds(x)
    base = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(out[:, 2:], base[:, 2:])
    # output column u samples input position (u + 0.5) / 2 - 0.5 (+1 for group 0), clamped at the border
    u = torch.arange(10.0)
    expected = ((u + 0.5) / 2 - 0.5 + 1.0).clamp(0.0, 4.0)
    torch.testing.assert_close(out[0, :2], expected.expand(2, 8, 10))
    torch.testing.assert_close(out[0, 2], ((u + 0.5) / 2 - 0.5).clamp(0.0, 4.0).expand(8, 10))
