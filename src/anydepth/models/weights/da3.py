"""Depth Anything 3 checkpoints (hub ``model.safetensors`` of ``DA3MONO-LARGE`` / ``DA3-LARGE``) -> ``DepthModel``.

A hub file is the state dict of the ``DepthAnything3`` wrapper: ``model.backbone.pretrained.*`` (DA3's DINOv2 ViT,
Meta names plus ``camera_token`` / ``attn.q_norm`` / ``attn.k_norm`` for the any-view models),
``model.head.*`` (``DPT`` for DA3Mono/DA3Metric, ``DualDPT`` for DA3-Large; our ``dpt_da3`` / ``dualdpt``
decoders keep these names) and, for DA3-Large, ``model.cam_enc.*`` / ``model.cam_dec.*`` (camera encoder and
decoder). The backbone and the head load whole; the camera modules are out of scope (single-image depth) and are
dropped and listed (``info["dropped_keys"]``, logged at WARNING level). Other prefixes are errors.

Models: DA3Mono-Large -> ``da3mono_vitl14`` taps [4, 11, 17, 23] + ``dpt_da3`` (depth + sky); DA3-Large ->
``da3_vitl14`` taps [11, 15, 19, 23] (2048-d concatenated tokens) + ``dualdpt`` (depth + confidence + ray). Both
use the backbone's final LayerNorm (DA3's ``get_intermediate_layers``) and predict relative depth
(``DepthSpace.DEPTH_AFFINE_INVARIANT``; DA3's ``exp`` output is defined up to scale). ``pos_embed`` is not stored in
the weights: DA3's configs use ``False`` for ``DPT`` and ``True`` for ``DualDPT``, which these defaults repeat.
Licences (DA3 README): DA3Mono-Large and DA3Metric-Large Apache-2.0, DA3-Large CC-BY-NC-4.0.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from typing import Any

import torch

from anydepth.models.weights.dav2 import (
    assemble_model,
    check_decoder_state_dict,
    read_whole_model,
    resolve_config,
)
from anydepth.models.weights.layers import ENCODER_LAYERS

__all__ = ["is_da3_state_dict", "convert_da3_state_dict", "load_da3_checkpoint"]

log = logging.getLogger(__name__)

HEAD_PREFIX = "head."
ENCODER_PREFIX = "backbone.pretrained."
DROPPED_PREFIXES = ("cam_enc.", "cam_dec.")


def _strip_model(keys: Any) -> dict[str, Any]:
    d = dict(keys) if isinstance(keys, Mapping) else dict.fromkeys(keys)
    if d and all(k.startswith("model.") for k in d):
        d = {k[len("model.") :]: v for k, v in d.items()}
    return d


def is_da3_state_dict(keys: list[str] | Mapping[str, Any]) -> bool:
    """True for a Depth Anything 3 model with a DPT / Dual-DPT head (``[model.]head.scratch.*``)."""
    d = _strip_model(keys)
    return any(k.startswith(HEAD_PREFIX + "scratch.refinenet") for k in d) and any(
        k.startswith(ENCODER_PREFIX) for k in d
    )


def _fill_shared_ray_norm(head: dict[str, torch.Tensor]) -> None:
    """Dual-DPT shares one LayerNorm between its ray levels; a file written without duplicates may list it once."""
    rx = re.compile(r"scratch\.output_conv2_aux\.(\d+)\.2\.(weight|bias)\Z")
    found = {(int(m.group(1)), m.group(2)): v for k, v in head.items() if (m := rx.match(k))}
    levels = {int(m.group(1)) for k in head if (m := re.match(r"scratch\.output_conv2_aux\.(\d+)\.", k))}
    for p in ("weight", "bias"):
        src = next((v for (lvl, q), v in sorted(found.items()) if q == p), None)
        for lvl in levels:
            if src is not None and (lvl, p) not in found:
                head[f"scratch.output_conv2_aux.{lvl}.2.{p}"] = src


def convert_da3_state_dict(
    obj: Any,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, Any]]:
    """Split a Depth Anything 3 state dict into decoder and backbone weights.

    Args:
        obj: the loaded file (keys with or without the ``model.`` prefix; nesting is unwrapped).

    Returns:
        ``(decoder_sd, encoder_sd, info)``: ``decoder_sd`` loads into ``DECODERS.get(info["decoder"])(
        info["in_dims"], **info["decoder_kwargs"])`` strictly; ``encoder_sd`` has DA3's ViT names (below
        ``backbone.pretrained.``); ``info``: ``decoder`` (``dpt_da3`` / ``dualdpt``), ``encoder``
        (``da3mono_vitl14`` / ``da3_vitl14``; None for widths other than ViT-L's), ``encoder_width``,
        ``layer_indices``, ``in_dims``, ``decoder_kwargs``, ``dropped_keys``
        (the camera encoder/decoder keys, sorted, with the file's prefix removed), ``unwrapped``.

    Raises:
        ValueError: not a DA3 state dict, keys outside the known prefixes, a backbone that is not ViT-L, or a
            head that does not fit.
    """
    from anydepth.models.weights.official import unwrap_state_dict

    flat, steps = unwrap_state_dict(obj)
    flat = _strip_model(flat)
    if not is_da3_state_dict(flat):
        raise ValueError(
            "not a Depth Anything 3 state dict with a DPT/Dual-DPT head: expected [model.]head.scratch.* and "
            "[model.]backbone.pretrained.* keys"
        )
    head = {k[len(HEAD_PREFIX) :]: v for k, v in flat.items() if k.startswith(HEAD_PREFIX)}
    enc = {k[len(ENCODER_PREFIX) :]: v for k, v in flat.items() if k.startswith(ENCODER_PREFIX)}
    dropped = sorted(k for k in flat if k.startswith(DROPPED_PREFIXES))
    stray = sorted(k for k in flat if not k.startswith((HEAD_PREFIX, ENCODER_PREFIX, *DROPPED_PREFIXES)))
    if stray:
        raise ValueError(
            f"unknown key(s) outside head.*, backbone.pretrained.*, cam_enc.*, cam_dec.*: {stray[:8]} (sky/GS heads "
            "of other DA3 variants are not supported)"
        )
    width = int(enc["cls_token"].shape[-1]) if "cls_token" in enc else None
    anyview = "camera_token" in enc or any(".attn.q_norm." in k for k in enc)
    # only ViT-L has anydepth presets; other widths load with an explicit preset= (tiny test models)
    encoder = ("da3_vitl14" if anyview else "da3mono_vitl14") if width == 1024 else None
    dim = int(head["projects.0.weight"].shape[1])
    kwargs: dict[str, Any] = {
        "features": int(head["scratch.layer1_rn.weight"].shape[0]),
        "out_channels": [int(head[f"projects.{i}.weight"].shape[0]) for i in range(4)],
    }
    if any(k.startswith("scratch.refinenet1_aux.") for k in head):
        decoder = "dualdpt"
        _fill_shared_ray_norm(head)
        levels = {int(m.group(1)) for k in head if (m := re.match(r"scratch\.output_conv1_aux\.(\d+)\.", k))}
        convs = {
            int(m.group(1)) for k in head if (m := re.match(r"scratch\.output_conv1_aux\.0\.(\d+)\.", k))
        }
        kwargs.update(aux_pyramid_levels=len(levels), aux_out1_conv_num=len(convs), pos_embed=True)
    else:
        decoder = "dpt_da3"
        kwargs.update(
            output_dim=int(head["scratch.output_conv2.2.weight"].shape[0]),
            use_sky_head=any(k.startswith("scratch.sky_output_conv2.") for k in head),
            token_norm="norm.weight" in head,
            pos_embed=False,
        )
    in_dims = (dim,) * 4
    check_decoder_state_dict(decoder, in_dims, kwargs, head, f"Depth Anything 3 head ({decoder})")
    info = {
        "decoder": decoder,
        "encoder": encoder,
        "encoder_width": width,
        "layer_indices": ENCODER_LAYERS.get(encoder or ""),
        "in_dims": in_dims,
        "decoder_kwargs": kwargs,
        "dropped_keys": dropped,
        "unwrapped": steps,
    }
    return head, enc, info


def load_da3_checkpoint(
    path: str | os.PathLike[str],
    *,
    encoder_weights: str | os.PathLike[str] | None = None,
    preset: Any = None,
) -> Any:
    """Load a DA3Mono-Large / DA3-Large ``model.safetensors`` as a ``DepthModel`` (eval mode, CPU).

    Args:
        path: the hub file (``.safetensors``, or a ``.pth`` holding the same state dict).
        encoder_weights: must be None (the file holds its encoder).
        preset: preset name or ``ModelConfig`` whose encoder and tapped blocks to use instead of the ones the
            file implies (e.g. the tiny ``*_test`` presets); its decoder must be the file's. Decoder options always
            come from the file.

    Returns:
        The model (``output_space`` = relative depth; ``decoder.forward_outputs`` gives confidence, sky, ray);
        ``encoder_source`` is the file, so ``save_model`` writes the decoder only.

    Raises:
        FileNotFoundError: missing file. ValueError: not a DA3 file, unknown keys, shape mismatches.
    """
    from anydepth.types import DepthSpace

    p, head, enc, info = read_whole_model(path, encoder_weights, convert_da3_state_dict, "Depth Anything 3")
    if preset is None:
        if info["encoder"] is None:
            raise ValueError(
                f"{p}: Depth Anything 3 backbone of width {info['encoder_width']}: only ViT-L (1024) has an anydepth "
                "encoder (DA3-Small/Base/Giant are not supported); pass preset= for a custom one"
            )
        default = {"dualdpt": "dualdpt_da3_vitl14", "dpt_da3": "dpt_da3_vitl14"}[info["decoder"]]
        base = resolve_config(default, default, info["decoder"], p).replace(
            encoder=info["encoder"], layer_indices=info["layer_indices"]
        )
    else:
        base = resolve_config(preset, preset, info["decoder"], p)
    cfg = base.replace(
        decoder_kwargs=info["decoder_kwargs"],
        use_backbone_norm=True,
        output_space=DepthSpace.DEPTH_AFFINE_INVARIANT,
        name=f"da3:{'DA3-LARGE' if info['decoder'] == 'dualdpt' else 'DA3MONO-LARGE'}"
        if preset is None
        else base.name,
    )
    model = assemble_model(cfg, head, enc, p)
    if info["dropped_keys"]:
        roots = sorted({k.split(".", 1)[0] for k in info["dropped_keys"]})
        log.warning(
            "%s: dropped %d tensors of out-of-scope modules %s (camera encoder/decoder; single-image depth only)",
            p,
            len(info["dropped_keys"]),
            roots,
        )
    return model
