"""Depth Anything V2 checkpoints (``depth_anything_v2_vit{s,b,l}.pth``) -> ``DepthModel``.

An original file is the flat ``state_dict`` of ``DepthAnythingV2``: ``pretrained.*`` (the DINOv2 ViT, Meta
names, including the unused ``mask_token``) and ``depth_head.*`` (its DPT head, whose names our ``dpt_dav2``
decoder keeps). Both load whole: every key is used or is an error. The model: ``dinov2_vit{s,b,l}14`` tapped at
the DAv2 blocks with the final LayerNorm (DAv2's ``get_intermediate_layers`` default) + ``dpt_dav2``; it predicts
affine-invariant disparity (``relu`` output) at the input size, exactly as ``DepthAnythingV2.forward``.
Licences of the weights: ViT-S Apache-2.0, ViT-B/L CC-BY-NC-4.0 (Depth-Anything-V2 README).

Also home of the helpers the Depth Anything 3 loader shares (``checkpoint_keys``, ``check_decoder_state_dict``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from anydepth.models.weights.layers import ENCODER_LAYERS

__all__ = [
    "checkpoint_keys",
    "check_decoder_state_dict",
    "is_dav2_state_dict",
    "convert_dav2_state_dict",
    "load_dav2_checkpoint",
]

log = logging.getLogger(__name__)

HEAD_PREFIX = "depth_head."
ENCODER_PREFIX = "pretrained."
_SIZES = {384: "vits", 768: "vitb", 1024: "vitl"}


def checkpoint_keys(path: str | os.PathLike[str]) -> list[str]:
    """Tensor names of a checkpoint without reading its tensors (safetensors header, memory-mapped ``.pth``).

    Nesting (``state_dict``/``model``/``module``) is unwrapped, prefixes are kept. Unreadable files give ``[]``.
    """
    p = Path(path)
    try:
        if p.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(os.fspath(p), framework="pt") as f:
                return list(f.keys())
        obj: Any = torch.load(os.fspath(p), map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not ours to judge: the caller falls back to the other loaders and their errors
        return []
    from anydepth.models.weights.official import unwrap_state_dict

    try:
        return list(unwrap_state_dict(obj)[0])
    except ValueError:
        return []


def check_decoder_state_dict(
    decoder: str, in_dims: tuple[int, ...], kwargs: dict[str, Any], sd: Mapping[str, torch.Tensor], what: str
) -> None:
    """Build ``decoder`` on the meta device and require exactly its keys and shapes in ``sd``.

    Raises:
        ValueError: the decoder rejects the inferred options, or keys / shapes differ (listed).
    """
    from anydepth.registry import DECODERS

    try:
        with torch.device("meta"):
            ref = DECODERS.get(decoder)(in_dims, **kwargs).state_dict()
    except ValueError as e:
        raise ValueError(f"{what}: head does not fit the {decoder} decoder: {e}") from None
    missing = sorted(set(ref) - set(sd))
    unexpected = sorted(set(sd) - set(ref))
    bad = [
        f"{k}: {tuple(sd[k].shape)} vs {tuple(v.shape)}"
        for k, v in ref.items()
        if k in sd and sd[k].shape != v.shape
    ]
    if missing or unexpected or bad:
        raise ValueError(
            f"{what}: head (inferred {decoder} {kwargs}) does not match: missing {missing[:8]}, unexpected "
            f"{unexpected[:8]}, shapes {bad[:8]}"
        )


def resolve_config(preset: Any, default: str, decoder: str, path: Path) -> Any:
    """``ModelConfig`` of ``preset`` (name or config) or of the ``default`` preset; its decoder must be ``decoder``."""
    from anydepth.models.config import ModelConfig
    from anydepth.models.factory import get_model_config

    if isinstance(preset, ModelConfig):
        cfg = preset
    else:
        name = preset or default
        try:
            cfg = get_model_config(name)
        except KeyError:
            raise ValueError(
                f"{path}: no anydepth preset {name!r} for this checkpoint; pass preset="
            ) from None
    if cfg.decoder != decoder:
        raise ValueError(
            f"{path}: preset {cfg.name!r} uses decoder {cfg.decoder!r}, the file holds a {decoder!r} head"
        )
    return cfg


def read_whole_model(
    path: str | os.PathLike[str], encoder_weights: Any, convert: Any, family: str
) -> tuple[Path, dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, Any]]:
    """Check the arguments of a whole-model loader, read ``path`` and ``convert`` its state dict (errors name it)."""
    from anydepth.models.weights.loading import read_state_dict

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    if encoder_weights is not None:
        raise ValueError(f"{p} is a whole {family} model (encoder included); do not pass encoder_weights")
    try:
        head, enc, info = convert(read_state_dict(p))
    except ValueError as e:
        raise ValueError(f"{p}: {e}") from None
    if enc is None:
        raise ValueError(f"{p}: holds no encoder weights")
    return p, head, enc, info


def assemble_model(cfg: Any, head: dict[str, torch.Tensor], enc: dict[str, torch.Tensor], path: Path) -> Any:
    """Build ``cfg``, load the (DINOv2-named) backbone and the head whole, record the file as encoder source."""
    from anydepth.models.factory import build_model, load_encoder_weights

    model = build_model(cfg)
    try:
        report = load_encoder_weights(model, enc, path=path, layout="meta_dinov2")
    except ValueError as e:
        raise ValueError(f"{path}: encoder weights do not fit {cfg.encoder}: {e}") from None
    model.decoder.load_state_dict(head, strict=True)
    log.info("loaded %s + %s from %s (encoder: %s)", cfg.encoder, cfg.decoder, path, report)
    return model.eval()


def is_dav2_state_dict(keys: list[str] | Mapping[str, Any]) -> bool:
    """True for a Depth Anything V2 model state dict (its own DPT head under ``depth_head.scratch``)."""
    return any(k.startswith(HEAD_PREFIX + "scratch.") for k in keys) and any(
        k.startswith(HEAD_PREFIX + "projects.") for k in keys
    )


def convert_dav2_state_dict(
    obj: Any,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None, dict[str, Any]]:
    """Split a Depth Anything V2 state dict into ``dpt_dav2`` decoder and DINOv2 encoder weights.

    Args:
        obj: the loaded file (flat, or nested under ``state_dict``/``model``/``module``).

    Returns:
        ``(decoder_sd, encoder_sd, info)``: ``decoder_sd`` loads into ``DAv2DPTDecoder(info["in_dims"],
        **info["decoder_kwargs"])`` with ``strict=True``; ``encoder_sd`` has Meta DINOv2 names (None for a head-only
        dict); ``info``: ``size`` (``vits``/``vitb``/``vitl``), ``encoder`` (registry name), ``layer_indices``,
        ``in_dims``, ``decoder_kwargs``, ``unwrapped``.

    Raises:
        ValueError: not a DAv2 state dict, unknown keys, or a head that does not fit.
    """
    from anydepth.models.weights.official import unwrap_state_dict

    flat, steps = unwrap_state_dict(obj)
    if not is_dav2_state_dict(flat):
        raise ValueError(
            "not a Depth Anything V2 state dict: no depth_head.projects.* / depth_head.scratch.* keys"
        )
    head = {k[len(HEAD_PREFIX) :]: v for k, v in flat.items() if k.startswith(HEAD_PREFIX)}
    enc = {k[len(ENCODER_PREFIX) :]: v for k, v in flat.items() if k.startswith(ENCODER_PREFIX)}
    stray = sorted(k for k in flat if not k.startswith((HEAD_PREFIX, ENCODER_PREFIX)))
    if stray:
        raise ValueError(f"unknown key(s) outside depth_head.* and pretrained.*: {stray[:8]}")
    dim = int(head["projects.0.weight"].shape[1])
    size = _SIZES.get(dim, f"width{dim}")  # other widths load only with an explicit preset
    kwargs = {
        "features": int(head["scratch.layer1_rn.weight"].shape[0]),
        "out_channels": [int(head[f"projects.{i}.weight"].shape[0]) for i in range(4)],
        "use_clstoken": any(k.startswith("readout_projects.") for k in head),
    }
    in_dims = (dim,) * 4
    check_decoder_state_dict("dpt_dav2", in_dims, kwargs, head, "Depth Anything V2 depth_head")
    info = {
        "size": size,
        "encoder": f"dinov2_{size}14",
        "layer_indices": ENCODER_LAYERS.get(f"dinov2_{size}14"),  # DAv2's intermediate_layer_idx
        "in_dims": in_dims,
        "decoder_kwargs": kwargs,
        "unwrapped": steps,
    }
    return head, (enc or None), info


def load_dav2_checkpoint(
    path: str | os.PathLike[str],
    *,
    encoder_weights: str | os.PathLike[str] | None = None,
    preset: Any = None,
) -> Any:
    """Load ``depth_anything_v2_vit{s,b,l}.pth`` as a ``DepthModel`` (eval mode, CPU).

    Args:
        path: the original file (``.pth`` read with ``weights_only=True``, or ``.safetensors``).
        encoder_weights: must be None (the file holds its encoder).
        preset: preset name or ``ModelConfig`` whose encoder and tapped blocks to use instead of the ones the
            file implies (e.g. the tiny ``*_test`` presets); its decoder must be the file's. Decoder options always
            come from the file.

    Returns:
        The model; ``config.name`` is the matching preset (``dpt_dav2_vitb14`` ...), ``encoder_source`` the file,
        so ``save_model`` writes the decoder only and ``load_model(..., encoder_weights=path)`` restores it.

    Raises:
        FileNotFoundError: missing file. ValueError: not a DAv2 file, unknown keys, shape mismatches.
    """
    p, head, enc, info = read_whole_model(path, encoder_weights, convert_dav2_state_dict, "Depth Anything V2")
    cfg = resolve_config(preset, f"dpt_dav2_{info['size']}14", "dpt_dav2", p).replace(
        decoder_kwargs=info["decoder_kwargs"]
    )
    return assemble_model(cfg, head, enc, p)
