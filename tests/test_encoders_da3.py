"""Depth Anything 3 backbones: structure, 2D RoPE, camera token, concatenated features, loading."""

from __future__ import annotations

import pytest
import torch

import anydepth.models.encoders  # noqa: F401
from anydepth.models.encoders.base import EncoderWrapper
from anydepth.models.encoders.da3 import DA3ViT, _rope2d, rope2d_tables
from anydepth.models.encoders.loading import load_backbone_weights
from anydepth.registry import ENCODERS


def _x(h: int = 56, w: int = 84) -> torch.Tensor:
    return torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(0))


def _da3(**kw: object) -> DA3ViT:
    torch.manual_seed(0)
    m = ENCODERS.get("da3_test")(layerscale_init=1.0, **kw).eval()
    with torch.no_grad():  # non-trivial q/k norms so that they matter
        for name, p in m.named_parameters():
            if "q_norm" in name or "k_norm" in name:
                p.normal_(1.0 if name.endswith("weight") else 0.0, 0.3)
    return m


def test_parameter_names_and_counts() -> None:
    with torch.device("meta"):
        big = ENCODERS.get("da3_vitl14")()
        mono = ENCODERS.get("da3mono_vitl14")()
        plain = ENCODERS.get("dinov2_vitl14")()
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    # DINOv2 ViT-L + camera_token [1,2,1024] + q/k LayerNorms (2 x 2 x 64) in blocks 8..23
    assert n(big) == n(plain) + 2 * 1024 + 16 * 2 * 2 * 64 == 304_374_784
    assert n(mono) == n(plain) == 304_368_640
    sd = big.state_dict()
    assert (
        "camera_token" in sd
        and "blocks.8.attn.q_norm.weight" in sd
        and "blocks.7.attn.q_norm.weight" not in sd
    )
    assert (
        big.embed_dim == 2048
        and mono.embed_dim == 1024
        and big.norm.eps == 1e-5
        and big.blocks[0].norm1.eps == 1e-6
    )


def test_rope2d_tables_known_values() -> None:
    pos = torch.tensor([[0, 0], [2, 3]])
    sin, cos = rope2d_tables(pos, head_dim=8, base=100.0)
    # half = 4 channels per axis, frequencies 1 and 100**-0.5 = 0.1, each duplicated
    f = torch.tensor([1.0, 0.1, 1.0, 0.1])
    torch.testing.assert_close(sin[1], torch.cat([torch.sin(2 * f), torch.sin(3 * f)]))
    torch.testing.assert_close(cos[0], torch.ones(8))
    # the rotation pairs channel j with j + 2 inside each half
    x = torch.arange(8.0).view(1, 1, 1, 8).expand(1, 1, 2, 8)
    y = _rope2d(x, sin, cos)[0, 0, 1]
    a = 2 * 1.0
    torch.testing.assert_close(y[0], 0.0 * torch.cos(torch.tensor(a)) - 2.0 * torch.sin(torch.tensor(a)))
    torch.testing.assert_close(y[2], 2.0 * torch.cos(torch.tensor(a)) + 0.0 * torch.sin(torch.tensor(a)))
    b = 3 * 0.1
    torch.testing.assert_close(y[5], 5.0 * torch.cos(torch.tensor(b)) - 7.0 * torch.sin(torch.tensor(b)))


def test_without_da3_features_it_is_dinov2() -> None:
    torch.manual_seed(0)
    ref = ENCODERS.get("dinov2_test")().eval()
    m = ENCODERS.get("da3_test")(
        alt_start=-1, qknorm_start=-1, rope_start=-1, cat_token=False, final_norm_eps=1e-6
    )
    load_backbone_weights(m, ref.state_dict())
    x = _x()
    with torch.no_grad():
        a = ref.get_intermediate_layers(x, n=[1, 3], norm=True)
        b = m.eval().get_intermediate_layers(x, n=[1, 3], norm=True)
    for (fa, ca), (fb, cb) in zip(a, b, strict=True):
        torch.testing.assert_close(fa, fb)
        torch.testing.assert_close(ca, cb)


def test_cat_token_features_and_norm_halves() -> None:
    m = _da3()
    x = _x()
    with torch.no_grad():
        raw = m.get_intermediate_layers(x, n=[2, 3], norm=False)
        normed = m.get_intermediate_layers(x, n=[2, 3], norm=True)
        tokens = m.get_intermediate_layers(x, n=[2, 3], norm=False, reshape=False)
    assert raw[0][0].shape == (2, 64, 4, 6) and raw[0][1].shape == (2, 64)
    # block 2 is a frame block (even): both halves equal; block 3 is global: first half = block 2's output
    torch.testing.assert_close(raw[0][0][:, :32], raw[0][0][:, 32:])
    torch.testing.assert_close(tokens[1][0][..., :32], tokens[0][0][..., 32:])
    # norm=True normalises only the second half
    torch.testing.assert_close(normed[1][0][:, :32], raw[1][0][:, :32])
    assert (normed[1][0][:, 32:] - raw[1][0][:, 32:]).abs().max() > 1e-3
    enc = EncoderWrapper(m, layer_indices=[1, 2, 3], use_backbone_norm=True)
    out = enc(x)
    assert enc.embed_dims == (64, 64, 64) and out.features[2].shape == (2, 64, 4, 6)


def test_camera_token_replaces_class_token_at_alt_start() -> None:
    m = _da3()
    x = _x()
    with torch.no_grad():
        base = m.get_intermediate_layers(x, n=[1, 3], norm=False)
        g = torch.Generator().manual_seed(1)
        m.camera_token[:, 1].add_(torch.randn(32, generator=g))  # the source-view row: unused for one image
        same = m.get_intermediate_layers(x, n=[1, 3], norm=False)
        m.camera_token[:, 0].add_(torch.randn(32, generator=g))  # reference row: replaces cls before block 2
        moved = m.get_intermediate_layers(x, n=[1, 3], norm=False)
    torch.testing.assert_close(same[1][0], base[1][0])
    torch.testing.assert_close(moved[0][0], base[0][0])  # block 1 is before alt_start
    assert (moved[1][0] - base[1][0]).abs().max() > 1e-4


def test_rope_and_qk_norm_are_used() -> None:
    x = _x()
    with torch.no_grad():
        full = _da3().get_intermediate_layers(x, n=[3])[0][0]
        no_rope = _da3(rope_start=-1).get_intermediate_layers(x, n=[3])[0][0]
        no_qk = _da3(qknorm_start=-1)
    assert (full - no_rope).abs().max() > 1e-4
    assert "blocks.2.attn.q_norm.weight" not in no_qk.state_dict()


def test_da3_weights_need_a_da3_backbone() -> None:
    sd = _da3().state_dict()
    with pytest.raises(
        ValueError, match=r"unknown keys \(\d+\): \['blocks.2.attn.k_norm.bias'.*camera_token"
    ):
        load_backbone_weights(ENCODERS.get("dinov2_test")(), sd)
    target = ENCODERS.get("da3_test")()
    report = load_backbone_weights(target, {f"pretrained.{k}": v for k, v in sd.items() if k != "mask_token"})
    assert report["layout"] == "dav2" and report["kept_default"] == ["mask_token"]
    with torch.no_grad():
        torch.testing.assert_close(target.camera_token, sd["camera_token"])
