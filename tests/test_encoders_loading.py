"""Checkpoint reading, layout detection, conversion and exact loading (no transformers needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import anydepth.models.encoders  # noqa: F401
from anydepth.models.encoders.base import EncoderWrapper
from anydepth.models.encoders.convert import (
    LAYOUTS,
    detect_layout,
    to_meta,
    to_meta_with_dropped,
    unwrap_state_dict,
)
from anydepth.models.encoders.loading import load_backbone_weights, read_state_dict
from anydepth.registry import ENCODERS


def _v3(**kw: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return ENCODERS.get("dinov3_test")(**kw).eval()


def _v2(**kw: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return ENCODERS.get("dinov2_test")(**kw).eval()


def _randomized_sd(model: torch.nn.Module, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in model.state_dict().items():
        out[k] = (
            v.clone() if k.endswith(("bias_mask", "periods")) else 0.1 * torch.randn(v.shape, generator=g)
        )
    return out


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module) -> None:
    x = torch.randn(1, 3, 2 * a.patch_size, 3 * a.patch_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(a.forward_features(x)["x_prenorm"], b.forward_features(x)["x_prenorm"])


def test_meta_round_trip_pth_and_safetensors(tmp_path: Path) -> None:
    src = _v3()
    sd = _randomized_sd(src)
    src.load_state_dict(sd)
    torch.save(sd, tmp_path / "w.pth")
    save_file(sd, str(tmp_path / "w.safetensors"))
    for f in ("w.pth", "w.safetensors"):
        dst = _v3()
        rep = load_backbone_weights(dst, tmp_path / f)
        assert rep["layout"] == "meta_dinov3" and rep["family"] == "dinov3"
        assert rep["loaded"] == len(sd) and rep["dropped"] == [] and rep["kept_default"] == []
        _same_outputs(src, dst)


def test_nesting_and_module_prefix_are_unwrapped(tmp_path: Path) -> None:
    src = _v2()
    sd = _randomized_sd(src)
    src.load_state_dict(sd)
    nested = {"epoch": 3, "model": {f"module.{k}": v for k, v in sd.items()}}
    torch.save(nested, tmp_path / "ckpt.pt")
    dst = _v2()
    assert load_backbone_weights(dst, tmp_path / "ckpt.pt")["layout"] == "meta_dinov2"
    _same_outputs(src, dst)
    # an in-memory dict and an EncoderWrapper work too
    wrapped = EncoderWrapper(_v2(), layer_indices=[3])
    load_backbone_weights(wrapped, {"state_dict": sd})
    _same_outputs(src, wrapped.backbone)
    assert unwrap_state_dict({"teacher": {"a": torch.zeros(1)}}) == {"a": torch.zeros(1)}


def test_optional_keys_may_be_absent() -> None:
    src = _v3()
    sd = _randomized_sd(src)
    src.load_state_dict(sd)
    trimmed = {k: v for k, v in sd.items() if not k.endswith(("bias_mask", "periods")) and k != "mask_token"}
    dst = _v3()
    rep = load_backbone_weights(dst, trimmed)
    expected = ["mask_token", "rope_embed.periods"] + [f"blocks.{i}.attn.qkv.bias_mask" for i in range(4)]
    assert sorted(rep["kept_default"]) == sorted(expected)
    _same_outputs(src, dst)


def test_missing_unknown_and_shape_errors() -> None:
    sd = _randomized_sd(_v3())
    missing = {k: v for k, v in sd.items() if k != "blocks.2.mlp.fc1.weight"}
    with pytest.raises(ValueError, match=r"missing keys \(1\): \['blocks.2.mlp.fc1.weight'\]"):
        load_backbone_weights(_v3(), missing)
    unknown = {**sd, "blocks.0.attn.extra": torch.zeros(3)}
    with pytest.raises(ValueError, match=r"unknown keys \(1\): \['blocks.0.attn.extra'\]"):
        load_backbone_weights(_v3(), unknown)
    wrong = {**sd, "norm.weight": torch.zeros(33)}
    with pytest.raises(ValueError, match=r"norm.weight: file \(33,\) vs backbone \(32,\)"):
        load_backbone_weights(_v3(), wrong)
    # a bigger model's file into a smaller backbone lists the surplus blocks
    deeper = _randomized_sd(_v3(depth=5))
    with pytest.raises(ValueError, match=r"unknown keys \(\d+\): \['blocks.4"):
        load_backbone_weights(_v3(), deeper)


def test_failed_load_leaves_the_backbone_untouched() -> None:
    dst = _v3()
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    bad = {**_randomized_sd(_v3()), "junk": torch.zeros(1)}
    with pytest.raises(ValueError):
        load_backbone_weights(dst, bad)
    for k, v in dst.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_pos_embed_grid_mismatch_names_img_size() -> None:
    sd = _randomized_sd(_v2(img_size=56))  # 4 x 4 grid
    with pytest.raises(
        ValueError, match=r"pos_embed: file \(1, 17, 32\).*build the backbone with img_size=56"
    ):
        load_backbone_weights(_v2(), sd)
    load_backbone_weights(_v2(img_size=56), sd)


def test_family_mismatch_is_rejected() -> None:
    with pytest.raises(ValueError, match="holds dinov2 weights but the backbone is dinov3"):
        load_backbone_weights(_v3(), _randomized_sd(_v2()))
    with pytest.raises(ValueError, match="unknown layout 'meta'"):
        load_backbone_weights(_v3(), _randomized_sd(_v3()), layout="meta")
    with pytest.raises(TypeError, match="not a DINOv3/DINOv2 backbone"):
        load_backbone_weights(torch.nn.Linear(2, 2), {})


def test_unreadable_and_unrecognised_files(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00\x01not a checkpoint" * 10)
    with pytest.raises(ValueError, match=r"junk.pth: not a readable PyTorch checkpoint"):
        read_state_dict(junk)
    bad_st = tmp_path / "junk.safetensors"
    bad_st.write_bytes(b"garbage" * 10)
    with pytest.raises(ValueError, match="junk.safetensors: not a readable safetensors file"):
        load_backbone_weights(_v3(), bad_st)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        read_state_dict(tmp_path / "absent.pth")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        read_state_dict(tmp_path / "empty_dir")
    (tmp_path / "w.npz").write_bytes(b"x")
    with pytest.raises(ValueError, match="unsupported checkpoint extension '.npz'"):
        read_state_dict(tmp_path / "w.npz")
    torch.save({"fc.weight": torch.zeros(2, 2), "fc.bias": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="unrecognised checkpoint layout.*fc.bias"):
        load_backbone_weights(_v3(), tmp_path / "other.pth")
    torch.save({"epoch": 1, "note": "x"}, tmp_path / "notensors.pth")
    with pytest.raises(ValueError, match="no tensors found"):
        read_state_dict(tmp_path / "notensors.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="expected a state dict"):
        read_state_dict(tmp_path / "list.pth")


def test_bias_mask_pattern_is_checked() -> None:
    sd = _randomized_sd(_v3())
    sd["blocks.1.attn.qkv.bias_mask"] = torch.ones(96)  # would unmask the K bias
    with pytest.raises(ValueError, match="blocks.1.attn.qkv.bias_mask does not have the expected pattern"):
        load_backbone_weights(_v3(), sd)


def test_meta_k_bias_is_masked_not_rejected() -> None:
    """Meta's files may hold anything in the masked K third: it is loaded and ignored, as in Meta's code."""
    src = _v3()
    sd = _randomized_sd(src)
    zero_k = {k: v.clone() for k, v in sd.items()}
    zero_k["blocks.0.attn.qkv.bias"][32:64] = 0.0
    sd["blocks.0.attn.qkv.bias"][32:64] = 5.0
    dst, ref = _v3(), _v3()
    load_backbone_weights(dst, sd)
    load_backbone_weights(ref, zero_k)
    assert torch.equal(dst.blocks[0].attn.qkv.bias[32:64], torch.full((32,), 5.0))  # loaded as in the file
    _same_outputs(dst, ref)  # ... and ignored: the same outputs as with a zero K bias
    ref.blocks[0].attn.qkv.bias.data[:32] += 1.0  # the Q third is used: the comparison can fail
    with pytest.raises(AssertionError):
        _same_outputs(dst, ref)


def test_zero_qkv_bias_dropped_for_bias_free_backbone() -> None:
    src = _v3(qkv_bias=False)
    sd = _randomized_sd(src)
    src.load_state_dict(sd)
    with_zero = {**sd, **{f"blocks.{i}.attn.qkv.bias": torch.zeros(96) for i in range(4)}}
    dst = _v3(qkv_bias=False)
    rep = load_backbone_weights(dst, with_zero)
    assert rep["dropped"] == [f"blocks.{i}.attn.qkv.bias" for i in range(4)]
    _same_outputs(src, dst)
    with_zero["blocks.0.attn.qkv.bias"] = torch.ones(96)
    with pytest.raises(ValueError, match=r"unknown keys \(1\): \['blocks.0.attn.qkv.bias'\]"):
        load_backbone_weights(_v3(qkv_bias=False), with_zero)


def test_local_cls_norm_dropped_or_loaded() -> None:
    sd = _randomized_sd(_v3(untie_global_and_local_cls_norm=True))
    rep = load_backbone_weights(_v3(), sd)
    assert rep["dropped"] == ["local_cls_norm.bias", "local_cls_norm.weight"]
    rep = load_backbone_weights(_v3(untie_global_and_local_cls_norm=True), sd)
    assert rep["dropped"] == []


def test_timm_dinov3_without_qv_bias_means_zero_bias() -> None:
    src = _v3()
    sd = _randomized_sd(src)
    timm = {}
    for k, v in sd.items():
        if k.endswith(("bias_mask", "periods", "qkv.bias")) or k == "mask_token":
            continue
        k = (
            k.replace("storage_tokens", "reg_token")
            .replace("ls1.gamma", "gamma_1")
            .replace("ls2.gamma", "gamma_2")
        )
        timm[k] = v
    assert detect_layout(timm) == "timm_dinov3"
    meta = to_meta(timm)
    for i in range(4):
        assert torch.equal(meta[f"blocks.{i}.attn.qkv.bias"], torch.zeros(96))
    for k in sd:
        if k.endswith("qkv.bias"):
            sd[k] = torch.zeros(96)
    src.load_state_dict(sd)
    dst = _v3()
    load_backbone_weights(dst, timm)
    _same_outputs(src, dst)


def test_timm_q_v_biases_are_kept() -> None:
    q, v = torch.randn(32), torch.randn(32)
    sd = {
        "blocks.0.attn.qkv.weight": torch.zeros(96, 32),
        "blocks.0.attn.q_bias": q,
        "blocks.0.attn.v_bias": v,
    }
    sd["blocks.0.gamma_1"] = torch.ones(32)
    meta = to_meta(sd, "timm_dinov3")
    torch.testing.assert_close(meta["blocks.0.attn.qkv.bias"], torch.cat([q, torch.zeros(32), v]))
    assert meta["blocks.0.ls1.gamma"].shape == (32,)


def test_chunked_meta_dinov2_blocks_are_flattened() -> None:
    src = _v2()
    sd = _randomized_sd(src)
    src.load_state_dict(sd)
    # Meta's block_chunks=2 naming: blocks.<chunk>.<global index>.*
    chunked = {}
    for k, v in sd.items():
        if k.startswith("blocks."):
            i = int(k.split(".")[1])
            k = f"blocks.{i // 2}.{i}." + k.split(".", 2)[2]
        chunked[k] = v
    assert detect_layout(chunked) == "meta_dinov2"
    dst = _v2()
    load_backbone_weights(dst, chunked)
    _same_outputs(src, dst)


def test_dav2_head_is_dropped_and_foreign_keys_are_errors() -> None:
    src = _v2()
    sd = _randomized_sd(src)
    dav2 = {f"pretrained.{k}": v for k, v in sd.items()}
    dav2["depth_head.scratch.output_conv2.0.weight"] = torch.zeros(1)
    meta, dropped = to_meta_with_dropped(dav2)
    assert dropped == ["depth_head.scratch.output_conv2.0.weight"] and set(meta) == set(sd)
    dav2["extra_head.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"unknown keys \(1\): \['extra_head.weight'\]"):
        load_backbone_weights(_v2(), dav2)


def test_hf_dir_config_is_cross_checked(tmp_path: Path) -> None:
    """A transformers directory whose config.json disagrees with the backbone is rejected."""
    src = _v3()
    sd = _randomized_sd(src)
    # write the weights with transformers' on-disk DINOv3 names (no transformers import needed)
    hf = {
        "embeddings.cls_token": sd["cls_token"],
        "embeddings.mask_token": sd["mask_token"][:, None],
        "embeddings.register_tokens": sd["storage_tokens"],
        "embeddings.patch_embeddings.weight": sd["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.bias": sd["patch_embed.proj.bias"],
        "norm.weight": sd["norm.weight"],
        "norm.bias": sd["norm.bias"],
    }
    for i in range(4):
        b, l = f"blocks.{i}", f"layer.{i}"
        qw, kw, vw = sd[f"{b}.attn.qkv.weight"].chunk(3)
        qb, _, vb = sd[f"{b}.attn.qkv.bias"].chunk(3)
        hf.update(
            {
                f"{l}.attention.q_proj.weight": qw,
                f"{l}.attention.k_proj.weight": kw,
                f"{l}.attention.v_proj.weight": vw,
                f"{l}.attention.q_proj.bias": qb,
                f"{l}.attention.v_proj.bias": vb,
                f"{l}.attention.o_proj.weight": sd[f"{b}.attn.proj.weight"],
                f"{l}.attention.o_proj.bias": sd[f"{b}.attn.proj.bias"],
                f"{l}.layer_scale1.lambda1": sd[f"{b}.ls1.gamma"],
                f"{l}.layer_scale2.lambda1": sd[f"{b}.ls2.gamma"],
                f"{l}.mlp.up_proj.weight": sd[f"{b}.mlp.fc1.weight"],
                f"{l}.mlp.up_proj.bias": sd[f"{b}.mlp.fc1.bias"],
                f"{l}.mlp.down_proj.weight": sd[f"{b}.mlp.fc2.weight"],
                f"{l}.mlp.down_proj.bias": sd[f"{b}.mlp.fc2.bias"],
            }
        )
        for n in ("norm1", "norm2"):
            hf[f"{l}.{n}.weight"], hf[f"{l}.{n}.bias"] = sd[f"{b}.{n}.weight"], sd[f"{b}.{n}.bias"]
    d = tmp_path / "hf"
    d.mkdir()
    save_file({k: v.contiguous() for k, v in hf.items()}, str(d / "model.safetensors"))
    cfg = {"model_type": "dinov3_vit", "layer_norm_eps": 1e-5, "rope_theta": 100.0, "patch_size": 16}
    (d / "config.json").write_text(json.dumps({**cfg, "hidden_act": "gelu"}))
    for i in range(4):
        sd[f"blocks.{i}.attn.qkv.bias"][32:64] = 0.0  # HF has no K bias
    src.load_state_dict(sd)
    dst = _v3()
    assert load_backbone_weights(dst, d)["layout"] == "hf_dinov3"
    _same_outputs(src, dst)
    (d / "config.json").write_text(json.dumps({**cfg, "layer_norm_eps": 1e-6}))
    with pytest.raises(ValueError, match=r"config.json does not match the backbone: layer_norm_eps=1e-06"):
        load_backbone_weights(_v3(), d)


def test_sharded_safetensors_directory(tmp_path: Path) -> None:
    sd = _randomized_sd(_v2())
    keys = sorted(sd)
    half = len(keys) // 2
    shards = {"a.safetensors": keys[:half], "b.safetensors": keys[half:]}
    weight_map = {}
    for fname, ks in shards.items():
        save_file({k: sd[k].contiguous() for k in ks}, str(tmp_path / fname))
        weight_map.update({k: fname for k in ks})
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    got = read_state_dict(tmp_path)
    assert set(got) == set(sd) and all(torch.equal(got[k], sd[k]) for k in sd)


def test_layout_names_and_detection_errors() -> None:
    assert LAYOUTS == (
        "meta_dinov3",
        "meta_dinov2",
        "hf_dinov3",
        "hf_dinov2",
        "timm_dinov3",
        "timm_dinov2",
        "dav2",
        "da3",
    )
    with pytest.raises(ValueError, match="unknown checkpoint layout 'xyz'"):
        to_meta({"a": torch.zeros(1)}, "xyz")
    with pytest.raises(ValueError, match="unrecognised checkpoint layout"):
        detect_layout({"encoder.weight": torch.zeros(1)})
