"""Building models from presets or configs: ``list_models``, ``create_model``, ``build_model``."""

from __future__ import annotations

import fnmatch
import logging
import os
from typing import Any

from torch import nn

from anydepth.hub import resolve_weights
from anydepth.models.config import ModelConfig
from anydepth.models.decoders.base import Decoder
from anydepth.models.depth_model import DepthModel
from anydepth.models.encoders.base import EncoderWrapper
from anydepth.registry import DECODERS, ENCODERS, MODELS

__all__ = ["list_models", "get_model_config", "build_model", "create_model", "count_parameters"]

log = logging.getLogger(__name__)


def list_models(pattern: str | None = None) -> list[str]:
    """Names of the registered presets, optionally filtered by a glob ``pattern`` (e.g. ``"sdt_dinov3_*"``)."""
    names = MODELS.names()
    return [n for n in names if pattern is None or fnmatch.fnmatchcase(n, pattern)]


def get_model_config(name: str) -> ModelConfig:
    """The ``ModelConfig`` of preset ``name``. Raises ``KeyError`` with close matches for unknown names."""
    cfg: ModelConfig = MODELS.get(name)
    return cfg


def build_model(config: ModelConfig) -> DepthModel:
    """Instantiate a randomly initialised ``DepthModel`` from ``config`` (the encoder is frozen unless configured)."""
    enc_builder = ENCODERS.get(config.encoder)
    backbone: nn.Module = enc_builder(**config.encoder_kwargs)
    encoder = EncoderWrapper(
        backbone,
        config.layer_indices,
        use_backbone_norm=config.use_backbone_norm,
        frozen=config.freeze_encoder,
    )
    dec_cls = DECODERS.get(config.decoder)
    decoder: Decoder = dec_cls(encoder.embed_dims, **config.decoder_kwargs)
    return DepthModel(encoder, decoder, config)


def create_model(
    name: str | ModelConfig,
    *,
    encoder_weights: str | os.PathLike[str] | None = None,
    **overrides: Any,
) -> DepthModel:
    """Create a model from a preset name (or a ``ModelConfig``), optionally loading encoder weights.

    Args:
        name: preset name from ``list_models()`` or a ``ModelConfig``.
        encoder_weights: pretrained encoder weights in any supported layout (Meta ``.pth``, Hugging Face
            safetensors or directory, timm, Depth-Anything-V2): a local path, or ``hf://ORG/REPO/FILE[@REVISION]``
            (downloaded into the Hugging Face cache; see ``anydepth.hub``). Local paths never touch the network.
        **overrides: ``ModelConfig`` fields to change (``decoder_kwargs``/``encoder_kwargs`` are merged).
            ``None`` values are ignored so unset CLI flags keep preset defaults.

    Returns:
        The model in eval mode (call ``.train()`` to train the decoder; the encoder stays frozen).

    Raises:
        KeyError: unknown preset. ValueError: unknown override or bad weights file.
    """
    cfg = name if isinstance(name, ModelConfig) else get_model_config(name)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if overrides:
        cfg = cfg.replace(**overrides)
    model = build_model(cfg)
    if encoder_weights is not None:
        from anydepth.models.checkpoint import encoder_hash
        from anydepth.models.encoders.loading import load_backbone_weights

        local = resolve_weights(encoder_weights)  # local path, hf:// name or alias (anydepth.hub)
        report = load_backbone_weights(model.encoder.backbone, local)
        model.encoder_source = {"path": os.fspath(encoder_weights), "sha256": encoder_hash(model)}
        log.info("loaded encoder weights from %s (%s)", encoder_weights, report)
    return model.eval()


def count_parameters(model: str | ModelConfig | nn.Module) -> dict[str, int]:
    """Encoder / decoder / total parameter counts. Presets are built on the ``meta`` device (no memory)."""
    if not isinstance(model, nn.Module):
        import torch

        cfg = model if isinstance(model, ModelConfig) else get_model_config(model)
        with torch.device("meta"):
            model = build_model(cfg)
    parts: dict[str, nn.Module] = dict(model.named_children())
    enc = sum(p.numel() for p in parts["encoder"].parameters())
    dec = sum(p.numel() for p in parts["decoder"].parameters())
    return {"encoder": enc, "decoder": dec, "total": enc + dec}
