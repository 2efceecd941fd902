"""Numerical parity of our DINOv3/DINOv2 backbones with Hugging Face transformers, through every file layout.

Random-weight transformers models (small configs, non-zero biases and layer scales) are written to disk as
transformers ``save_pretrained`` directories, raw safetensors with the 5.x in-memory names, Meta ``.pth``
(through our converter), timm-layout ``.pth`` (built here following timm's ``checkpoint_filter_fn``) and a
Depth-Anything-V2 ``.pth``; each file is loaded into our module and final + per-block tokens are compared at a
non-square size.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch

transformers = pytest.importorskip("transformers")

from safetensors.torch import save_file  # noqa: E402

import anydepth.models.encoders  # noqa: E402,F401
from anydepth.models.encoders.convert import detect_layout, to_meta  # noqa: E402
from anydepth.models.encoders.loading import load_backbone_weights  # noqa: E402
from anydepth.registry import ENCODERS  # noqa: E402

ATOL = 1e-4
DEPTH = 4


def _randomize(model: torch.nn.Module, seed: int) -> None:
    """Moderate random values everywhere (biases, layer scales and norms included)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or "layernorm" in name:
                base = 1.0 if name.endswith("weight") else 0.0
                p.copy_(base + 0.1 * torch.randn(p.shape, generator=g))
            elif "lambda1" in name:
                p.copy_(0.5 + 0.2 * torch.randn(p.shape, generator=g))
            elif p.ndim == 1:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p[0].numel() if p.ndim >= 2 and p.shape[0] > 1 else p.shape[-1]
                p.copy_(torch.randn(p.shape, generator=g) / fan_in**0.5)


# --- reference models ---------------------------------------------------------------------------------------


def _hf_dinov3(gated: bool) -> torch.nn.Module:
    cfg = transformers.DINOv3ViTConfig(
        hidden_size=64,
        intermediate_size=96 if gated else 256,
        num_hidden_layers=DEPTH,
        num_attention_heads=4,
        num_register_tokens=4,
        use_gated_mlp=gated,
        hidden_act="silu" if gated else "gelu",
        image_size=64,
    )
    m = transformers.DINOv3ViTModel(cfg)
    _randomize(m, seed=3 if gated else 2)
    return m.eval()


def _hf_dinov2(registers: bool, swiglu: bool = False) -> torch.nn.Module:
    kw: dict[str, Any] = dict(hidden_size=64, num_hidden_layers=DEPTH, num_attention_heads=4, image_size=112)
    kw["patch_size"] = 14
    if registers:
        m = transformers.Dinov2WithRegistersModel(transformers.Dinov2WithRegistersConfig(**kw))
    else:
        m = transformers.Dinov2Model(transformers.Dinov2Config(use_swiglu_ffn=swiglu, **kw))
    _randomize(m, seed=4 + 2 * registers + swiglu)
    return m.eval()


# Our backbones with the same architecture. transformers resamples DINOv2 positions to an explicit size
# (offset 0): Dinov2Model without antialias, Dinov2WithRegistersModel with antialias (= Meta's _reg models).
CASES: dict[str, tuple[Any, str, dict[str, Any], tuple[int, int]]] = {
    "dinov3": (lambda: _hf_dinov3(False), "dinov3_test", dict(embed_dim=64, num_heads=4), (64, 96)),
    "dinov3_swiglu": (
        lambda: _hf_dinov3(True),
        "dinov3_test",
        dict(embed_dim=64, num_heads=4, ffn_layer="swiglu", ffn_ratio=2.25),  # 64 * 2.25 * 2/3 = 96
        (64, 96),
    ),
    "dinov2": (
        lambda: _hf_dinov2(False),
        "dinov2_test",
        dict(embed_dim=64, num_heads=4, interpolate_offset=0.0),
        (56, 84),
    ),
    "dinov2_swiglu": (
        lambda: _hf_dinov2(False, swiglu=True),
        "dinov2_test",
        dict(embed_dim=64, num_heads=4, interpolate_offset=0.0, ffn_layer="swiglu"),
        (56, 84),
    ),
    "dinov2_reg": (
        lambda: _hf_dinov2(True),
        "dinov2_test",
        dict(
            embed_dim=64,
            num_heads=4,
            num_register_tokens=4,
            interpolate_offset=0.0,
            interpolate_antialias=True,
        ),
        (56, 84),
    ),
}

_REF_CACHE: dict[str, Any] = {}


def _reference(case: str) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
    """(hf model, input [2,3,H,W], final normed tokens [2,N,C], per-block tokens) for a case (cached)."""
    if case not in _REF_CACHE:
        make, _, _, (h, w) = CASES[case]
        hf = make()
        x = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(7))
        with torch.no_grad():
            out = hf(pixel_values=x, output_hidden_states=True)
        hidden = tuple(out.hidden_states[-DEPTH:])  # outputs of blocks 0..DEPTH-1
        assert len(out.hidden_states) == DEPTH + 1  # embeddings + one per block
        _REF_CACHE[case] = (hf, x, out.last_hidden_state, hidden)
    return _REF_CACHE[case]


def _ours(case: str) -> torch.nn.Module:
    _, name, kw, _ = CASES[case]
    torch.manual_seed(123)  # different random init than the reference: everything must come from the file
    return ENCODERS.get(name)(**kw).eval()


def _compare(model: torch.nn.Module, case: str) -> None:
    _, x, last, hidden = _reference(case)
    p = model.num_prefix_tokens
    with torch.no_grad():
        f = model.forward_features(x)
        taps = model.get_intermediate_layers(x, n=list(range(DEPTH)), reshape=False, norm=False)
        maps = model.get_intermediate_layers(x, n=[1, DEPTH - 1], reshape=True, norm=True)
    regs = f["x_storage_tokens"] if "x_storage_tokens" in f else f["x_norm_regtokens"]
    tokens = torch.cat([f["x_norm_clstoken"][:, None], regs, f["x_norm_patchtokens"]], dim=1)
    assert tokens.shape == last.shape
    torch.testing.assert_close(tokens, last, atol=ATOL, rtol=0)
    for i, (patches, cls) in enumerate(taps):
        torch.testing.assert_close(patches, hidden[i][:, p:], atol=ATOL, rtol=0)
        torch.testing.assert_close(cls, hidden[i][:, 0], atol=ATOL, rtol=0)
    h, w = x.shape[-2] // model.patch_size, x.shape[-1] // model.patch_size
    fmap, cls = maps[1]
    assert fmap.shape == (2, model.embed_dim, h, w)
    torch.testing.assert_close(fmap.flatten(2).transpose(1, 2), last[:, p:], atol=ATOL, rtol=0)
    torch.testing.assert_close(cls, last[:, 0], atol=ATOL, rtol=0)
    assert (last.abs().max() > 0.5) and (hidden[-1].abs().max() < 1e3)  # non-degenerate magnitudes


# --- layout writers ------------------------------------------------------------------------------------------


def _meta_from_hf(case: str) -> dict[str, torch.Tensor]:
    hf = _reference(case)[0]
    meta = to_meta(hf.state_dict())
    if case.startswith("dinov3"):
        # what Meta's files also carry: the K-mask buffer, RoPE periods and a (masked, hence unused) K bias
        g = torch.Generator().manual_seed(11)
        for k in [k for k in meta if k.endswith("attn.qkv.bias")]:
            d = meta[k].shape[0] // 3
            meta[k] = meta[k].clone()
            meta[k][d : 2 * d] = torch.randn(d, generator=g)
            mask = torch.ones(3 * d)
            mask[d : 2 * d] = 0
            meta[k + "_mask"] = mask
        head_dim = 16
        meta["rope_embed.periods"] = 100.0 ** (
            4 * torch.arange(head_dim // 4, dtype=torch.float32) / head_dim
        )
    return meta


def _timm_from_meta(meta: dict[str, torch.Tensor], family: str) -> dict[str, torch.Tensor]:
    """timm's ``checkpoint_filter_fn`` (Eva, DINOv3) / ``_convert_dinov2`` (VisionTransformer), re-stated."""
    out: dict[str, torch.Tensor] = {}
    if family == "dinov3":
        for k, v in meta.items():
            if k.endswith((".periods", ".bias_mask")) or k == "mask_token":
                continue
            if k.endswith("qkv.bias"):
                q, _, vb = v.chunk(3)
                out[k.replace("qkv.bias", "q_bias")] = q
                out[k.replace("qkv.bias", "v_bias")] = vb
                continue
            k = k.replace("ls1.gamma", "gamma_1").replace("ls2.gamma", "gamma_2")
            k = k.replace("storage_tokens", "reg_token")
            k = k.replace("mlp.w1", "mlp.fc1_g").replace("mlp.w2", "mlp.fc1_x").replace("mlp.w3", "mlp.fc2")
            out[k] = v
        return out
    meta = {k: v for k, v in meta.items() if k != "mask_token"}
    if "register_tokens" in meta:
        out["reg_token"] = meta.pop("register_tokens")
        out["cls_token"] = meta.pop("cls_token") + meta["pos_embed"][:, 0]
        out["pos_embed"] = meta.pop("pos_embed")[:, 1:]
    for k, v in meta.items():
        out[re.sub(r"mlp\.w12\.", "mlp.fc1.", re.sub(r"mlp\.w3\.", "mlp.fc2.", k))] = v
    return out


def _write(case: str, layout: str, tmp: Path) -> tuple[Path, str]:
    """Write the reference weights of ``case`` in ``layout``; return (path, layout expected by detection)."""
    hf = _reference(case)[0]
    family = "dinov3" if case.startswith("dinov3") else "dinov2"
    if layout == "hf_dir":
        hf.save_pretrained(tmp / "hf")  # on-disk names: layer.N.* / attention.attention.query (4.x style)
        return tmp / "hf", f"hf_{family}"
    if layout == "hf_memory":
        path = (
            tmp / "model.safetensors"
        )  # transformers 5.x in-memory names: model.layer.N.*, q_proj, gate_proj
        save_file({k: v.contiguous() for k, v in hf.state_dict().items()}, str(path))
        return path, f"hf_{family}"
    meta = _meta_from_hf(case)
    if layout == "meta":
        torch.save(meta, tmp / "meta.pth")
        return tmp / "meta.pth", f"meta_{family}"
    if layout == "timm":
        timm_sd = _timm_from_meta(meta, family)
        torch.save({"state_dict": timm_sd}, tmp / "timm.pth")  # nested, as many training scripts save
        expected = (
            "timm_dinov3"
            if family == "dinov3"
            else ("timm_dinov2" if "reg" in case or "swiglu" in case else "meta_dinov2")
        )
        return tmp / "timm.pth", expected
    if layout == "dav2":
        sd = {f"pretrained.{k}": v for k, v in meta.items()}
        sd["depth_head.projects.0.weight"] = torch.randn(8, 64, 1, 1)
        sd["depth_head.scratch.output_conv2.2.bias"] = torch.randn(1)
        torch.save(sd, tmp / "depth_anything_v2_vits.pth")
        return tmp / "depth_anything_v2_vits.pth", "dav2"
    raise AssertionError(layout)


LAYOUT_CASES = [
    (case, layout)
    for case in CASES
    for layout in ("hf_dir", "hf_memory", "meta", "timm", "dav2")
    if not (layout == "dav2" and not case.startswith("dinov2"))
]


@pytest.mark.parametrize(("case", "layout"), LAYOUT_CASES)
def test_parity_with_transformers(case: str, layout: str, tmp_path: Path) -> None:
    path, expected_layout = _write(case, layout, tmp_path)
    model = _ours(case)
    report = load_backbone_weights(model, path)
    assert report["layout"] == expected_layout
    assert report["loaded"] == len([k for k in model.state_dict() if k not in report["kept_default"]])
    if layout == "dav2":
        assert report["dropped"] == ["depth_head.projects.0.weight", "depth_head.scratch.output_conv2.2.bias"]
    _compare(model, case)


def test_meta_file_loads_with_plain_strict_load_state_dict() -> None:
    """Our parameter names are Meta's: a Meta-layout dict loads with torch's own strict loader."""
    meta = _meta_from_hf("dinov3")
    model = _ours("dinov3")
    model.load_state_dict({**meta, "mask_token": torch.zeros(1, 64)}, strict=True)
    _compare(model, "dinov3")


def test_detect_layout_on_hf_state_dicts() -> None:
    assert detect_layout(_reference("dinov3")[0].state_dict()) == "hf_dinov3"
    assert detect_layout(_reference("dinov2_reg")[0].state_dict()) == "hf_dinov2"


def test_hf_key_bias_is_not_silently_masked(tmp_path: Path) -> None:
    """A transformers DINOv3 with a learned K bias cannot load into a masked-K-bias backbone."""
    cfg = transformers.DINOv3ViTConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_register_tokens=4,
        key_bias=True,
    )
    hf = transformers.DINOv3ViTModel(cfg)
    _randomize(hf, seed=9)
    hf.eval()
    model = ENCODERS.get("dinov3_test")(embed_dim=64, num_heads=4, depth=2, ffn_ratio=2.0)
    with pytest.raises(ValueError, match="non-zero key bias.*mask_k_bias=False"):
        load_backbone_weights(model, hf.state_dict())
    model = ENCODERS.get("dinov3_test")(
        embed_dim=64, num_heads=4, depth=2, ffn_ratio=2.0, mask_k_bias=False
    ).eval()
    load_backbone_weights(model, hf.state_dict())
    x = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        ref = hf(pixel_values=x).last_hidden_state
        got = model.forward_features(x)["x_norm_patchtokens"]
    torch.testing.assert_close(got, ref[:, 5:], atol=ATOL, rtol=0)
