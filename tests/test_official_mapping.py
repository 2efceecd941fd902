"""Official AnyDepth checkpoint import: exact key mapping, layouts, nesting, encoder description, errors."""

from __future__ import annotations

import pytest
import torch

from anydepth.models.decoders import DPTDecoder, SDTDecoder
from anydepth.models.official import (
    convert_official_state_dict,
    detect_official,
    to_official_state_dict,
    unwrap_state_dict,
)

SDT_SMALL = {"fusion_channels": 16, "head_channels": (8, 8)}
DPT_SMALL = {"channels": 8, "post_process_channels": (8, 8, 16, 16)}

# Every official SDTHead key (in_channels [C]*4), from model/sdt_head.py @ 8603751.
_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _official_sdt_keys() -> set[str]:
    keys = {f"weighted_fusion.projections.{i}.0.weight" for i in range(4)}
    keys |= {f"weighted_fusion.readout_projects.{i}.0.{p}" for i in range(4) for p in ("weight", "bias")}
    keys |= {"weighted_fusion.layer_weights", "detail_enhancer.dwconv.weight"}
    keys |= {f"detail_enhancer.norm.{b}" for b in _BN}
    for k in (1, 2):
        for j in (1, 2):
            pre = f"upsample_{k}.dysample{j}"
            keys |= {
                f"{pre}.0.offset.weight",
                f"{pre}.0.offset.bias",
                f"{pre}.0.scope.weight",
                f"{pre}.0.init_pos",
            }
            keys |= {f"{pre}.1.weight"} | {f"{pre}.2.{b}" for b in _BN}
        keys |= {f"refinement_{k}.0.weight", f"refinement_{k}.0.bias"} | {
            f"refinement_{k}.1.{b}" for b in _BN
        }
    keys |= {f"output_conv.{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias")}
    return keys


def _random_sd(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    out = {}
    for k, v in module.state_dict().items():
        out[k] = v.clone() if v.dtype == torch.long else torch.randn(v.shape, generator=g)
    return out


def _sdt_official(c: int = 24, **kwargs) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    ours = _random_sd(SDTDecoder([c] * 4, **{**SDT_SMALL, **kwargs}))
    return ours, to_official_state_dict(ours, "sdt")


def _fake_encoder(dim: int, patch: int, depth: int, family: str) -> dict[str, torch.Tensor]:
    sd = {
        "cls_token": torch.zeros(1, 1, dim),
        "mask_token": torch.zeros(1, dim),
        "patch_embed.proj.weight": torch.zeros(dim, 3, patch, patch),
        "patch_embed.proj.bias": torch.zeros(dim),
        "norm.weight": torch.ones(dim),
    }
    if family == "dinov2":
        sd["pos_embed"] = torch.zeros(1, 1 + 37 * 37, dim)
    else:
        sd["storage_tokens"] = torch.zeros(1, 4, dim)
        sd["rope_embed.periods"] = torch.ones(dim // 16)
    for i in range(depth):
        sd[f"blocks.{i}.norm1.weight"] = torch.ones(dim)
        sd[f"blocks.{i}.mlp.fc1.weight"] = torch.zeros(1, 1)
    return sd


def test_official_sdt_key_set_is_exact() -> None:
    ours, official = _sdt_official()
    assert set(official) == _official_sdt_keys()
    assert len(ours) == len(official) - 4  # the four init_pos constants are not ours


def test_round_trip_sdt() -> None:
    ours, official = _sdt_official()
    dec_sd, enc_sd, info = convert_official_state_dict(official)
    assert enc_sd is None
    assert dec_sd.keys() == ours.keys()
    assert all(torch.equal(dec_sd[k], ours[k]) for k in ours)
    assert info["decoder"] == "sdt" and info["in_dims"] == (24,) * 4 and info["embed_dim"] == 24
    assert info["decoder_kwargs"] == {
        "fusion_channels": 16,
        "head_channels": (8, 8),
        "use_cls_token": True,
        "use_sde": True,
    }
    assert info["layout"] == "head" and info["n_output_channels"] == 1
    assert len(info["dropped_keys"]) == 4 and all(k.endswith("init_pos") for k in info["dropped_keys"])
    dec = SDTDecoder(info["in_dims"], **info["decoder_kwargs"])
    dec.load_state_dict(dec_sd, strict=True)
    assert to_official_state_dict(dec_sd, "sdt").keys() == official.keys()


@pytest.mark.parametrize("kwargs", [{}, {"use_batchnorm": False}, {"readout": "ignore"}])
def test_round_trip_dpt(kwargs: dict) -> None:
    ours = _random_sd(DPTDecoder([24] * 4, **{**DPT_SMALL, **kwargs}))
    official = to_official_state_dict(ours, "dpt")
    assert "reassemble_blocks.projects.0.conv.weight" in official
    assert "fusion_blocks.1.res_conv_unit1.conv2.conv.weight" in official
    assert "conv_depth.head.4.bias" in official and "convs.3.conv.weight" in official
    dec_sd, _, info = convert_official_state_dict(official)
    assert dec_sd.keys() == ours.keys() and all(torch.equal(dec_sd[k], ours[k]) for k in ours)
    expected = {
        "channels": 8,
        "post_process_channels": (8, 8, 16, 16),
        "readout": kwargs.get("readout", "project"),
        "use_batchnorm": kwargs.get("use_batchnorm", True),
    }
    assert info["decoder"] == "dpt" and info["decoder_kwargs"] == expected


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: {"state_dict": sd},
        lambda sd: {"model": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3},
        lambda sd: {f"module.model.{k}": v for k, v in sd.items()},
        lambda sd: {f"0.decoder.{k}": v for k, v in sd.items()},
        lambda sd: {"model": {f"head.sdt_head.{k}": v for k, v in sd.items()}},
    ],
)
def test_nesting_and_prefixes(wrap) -> None:
    ours, official = _sdt_official()
    wrapped = wrap(official)
    assert detect_official(wrapped)
    dec_sd, _, info = convert_official_state_dict(wrapped)
    assert dec_sd.keys() == ours.keys()
    flat, steps = unwrap_state_dict(wrapped)
    assert info["unwrapped"] == steps and all(k.endswith(tuple(official)) for k in flat)


def test_detect_official_rejects_other_state_dicts() -> None:
    assert not detect_official(SDTDecoder([24] * 4, **SDT_SMALL).state_dict())  # our own names
    assert not detect_official({"weight": torch.zeros(2)})
    assert not detect_official({"config": "x"})
    assert not detect_official([1, 2])


def test_unknown_key_in_head_is_an_error() -> None:
    _, official = _sdt_official()
    official["weighted_fusion.extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="unknown official SDT head key.*weighted_fusion.extra.weight"):
        convert_official_state_dict(official)


def test_unknown_key_outside_head_is_an_error() -> None:
    _, official = _sdt_official()
    official["optimizer_state.lr"] = torch.zeros(1)
    with pytest.raises(ValueError, match="unknown key.*optimizer_state.lr"):
        convert_official_state_dict(official)


def test_missing_key_is_an_error() -> None:
    _, official = _sdt_official()
    del official["refinement_1.0.bias"]
    with pytest.raises(ValueError, match="missing.*refine1.conv.bias"):
        convert_official_state_dict(official)


def test_missing_num_batches_tracked_is_filled() -> None:
    _, official = _sdt_official()
    del official["refinement_1.1.num_batches_tracked"]
    dec_sd, _, info = convert_official_state_dict(official)
    assert int(dec_sd["refine1.bn.num_batches_tracked"]) == 0 and "num_batches_tracked" in info["notes"][0]


def test_wrong_shape_and_init_pos_are_errors() -> None:
    _, official = _sdt_official()
    bad = dict(official)
    bad["upsample_1.dysample1.1.weight"] = torch.zeros(16, 16, 1, 1)
    with pytest.raises(ValueError, match="shapes"):
        convert_official_state_dict(bad)
    bad = dict(official)
    bad["upsample_2.dysample2.0.init_pos"] = official["upsample_2.dysample2.0.init_pos"] * 2
    with pytest.raises(ValueError, match="init_pos"):
        convert_official_state_dict(bad)


def test_multi_channel_head_is_rejected() -> None:
    _, official = _sdt_official()
    official["output_conv.4.weight"] = torch.zeros(256, 8, 1, 1)
    official["output_conv.4.bias"] = torch.zeros(256)
    with pytest.raises(ValueError, match="256 output channels"):
        convert_official_state_dict(official)


def test_not_official_is_an_error() -> None:
    with pytest.raises(ValueError, match="not an official AnyDepth checkpoint"):
        convert_official_state_dict({"a.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="state dict"):
        convert_official_state_dict({"model": 3})


def test_build_depther_layout_with_dinov3_encoder() -> None:
    _, official = _sdt_official(c=384)
    sd = {f"0.decoder.{k}": v for k, v in official.items()}
    enc = _fake_encoder(384, 16, 12, "dinov3")
    sd.update({f"0.encoder.backbone.{k}": v for k, v in enc.items()})
    dec_sd, enc_sd, info = convert_official_state_dict(sd)
    assert enc_sd is not None and enc_sd.keys() == enc.keys()
    assert info["layout"] == "build_depther" and info["encoder_prefix"] == "0.encoder.backbone."
    assert (info["encoder_family"], info["encoder_size"], info["encoder_name"]) == (
        "dinov3",
        "vits",
        "dinov3_vits16",
    )
    assert info["encoder_patch_size"] == 16 and info["encoder_depth"] == 12 and info["release"] is None


def test_dav2_release_layout() -> None:
    # dav2_sdt_vitb.pth: {"model"?: {"pretrained.*": DINOv2 ViT-B/14, "depth_head.*": SDTHead(fusion 128)}}
    _, official = _sdt_official(c=768)
    sd = {f"depth_head.{k}": v for k, v in official.items()}
    sd.update({f"pretrained.{k}": v for k, v in _fake_encoder(768, 14, 12, "dinov2").items()})
    dec_sd, enc_sd, info = convert_official_state_dict({"model": sd})
    assert enc_sd is not None and "pos_embed" in enc_sd and "mask_token" in enc_sd
    assert info["layout"] == "dav2" and info["release"] == "dav2_sdt_vitb"
    assert info["encoder_name"] == "dinov2_vitb14" and info["layer_indices"] == (2, 5, 8, 11)
    assert info["decoder_kwargs"]["use_cls_token"] and info["decoder_kwargs"]["use_sde"]


def test_da3_release_layout_without_readout_and_sde() -> None:
    # da3_sdt_vitl.pth as reported: "model.backbone.pretrained.*" + "model.head.*", head without readouts/SDE
    _, official = _sdt_official(c=1024, use_cls_token=False, use_sde=False)
    assert not any(k.startswith(("detail_enhancer", "weighted_fusion.readout")) for k in official)
    sd = {f"model.head.{k}": v for k, v in official.items()}
    sd.update({f"model.backbone.pretrained.{k}": v for k, v in _fake_encoder(1024, 14, 24, "dinov2").items()})
    dec_sd, enc_sd, info = convert_official_state_dict(sd)
    assert (
        info["layout"] == "da3"
        and info["release"] == "da3_sdt_vitl"
        and info["layer_indices"] == (4, 11, 17, 23)
    )
    assert info["encoder_family"] == "da3" and info["encoder_name"] == "da3mono_vitl14"
    assert info["decoder_kwargs"]["use_cls_token"] is False and info["decoder_kwargs"]["use_sde"] is False
    SDTDecoder(info["in_dims"], **info["decoder_kwargs"]).load_state_dict(dec_sd, strict=True)
    assert info["encoder_depth"] == 24 and info["unwrapped"] == ["strip:model."]


def test_encoder_width_must_match_head() -> None:
    _, official = _sdt_official(c=24)
    sd = {f"depth_head.{k}": v for k, v in official.items()}
    sd.update({f"pretrained.{k}": v for k, v in _fake_encoder(32, 14, 2, "dinov2").items()})
    with pytest.raises(ValueError, match="does not match"):
        convert_official_state_dict(sd)


def test_to_official_rejects_non_official_variants() -> None:
    for kwargs in ({"upsampler": "bilinear"}, {"fusion_weights": "uniform"}):
        sd = SDTDecoder([24] * 4, **SDT_SMALL, **kwargs).state_dict()
        with pytest.raises(ValueError, match="official SDTHead"):
            to_official_state_dict(sd, "sdt")
    with pytest.raises(ValueError, match="no official SDT counterpart"):
        to_official_state_dict({"foo.weight": torch.zeros(1)}, "sdt")


def test_da3_anyview_encoder_feeds_double_width() -> None:
    # DA3-Large's any-view ViT (camera token, q/k norms) taps [previous, current] concatenations: 2C wide
    _, official = _sdt_official(c=2048, use_cls_token=False)
    enc = _fake_encoder(1024, 14, 24, "dinov2")
    enc["camera_token"] = torch.zeros(1, 2, 1024)
    enc["blocks.8.attn.q_norm.weight"] = torch.ones(64)
    sd = {f"head.{k}": v for k, v in official.items()} | {
        f"backbone.pretrained.{k}": v for k, v in enc.items()
    }
    _, enc_sd, info = convert_official_state_dict({"model": sd})
    assert info["encoder_name"] == "da3_vitl14" and info["encoder_feature_dim"] == 2048
    assert info["in_dims"] == (2048,) * 4 and info["layer_indices"] == (11, 15, 19, 23)
    assert enc_sd is not None and "camera_token" in enc_sd
