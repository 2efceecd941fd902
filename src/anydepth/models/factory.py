"""Building models from presets or configs: ``list_models``, ``create_model``, ``build_model``."""

from __future__ import annotations

import fnmatch
import logging
import os
from collections.abc import Mapping
from typing import Any

from torch import nn

from anydepth.hub import resolve_weights
from anydepth.models.config import ModelConfig
from anydepth.models.decoders.base import Decoder
from anydepth.models.depth_model import DepthModel
from anydepth.models.encoders.base import EncoderWrapper
from anydepth.models.weights.loading import encoder_hash, load_backbone_weights
from anydepth.registry import DECODERS, ENCODERS, MODELS

__all__ = [
    "list_models",
    "get_model_config",
    "build_model",
    "create_model",
    "load_encoder_weights",
    "count_parameters",
]

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
        # a local path, an hf://ORG/REPO/FILE[@REV] name or an alias (anydepth.hub); the name is recorded
        report = load_encoder_weights(model, resolve_weights(encoder_weights), path=encoder_weights)
        log.info("loaded encoder weights from %s (%s)", encoder_weights, report)
    return model.eval()


def load_encoder_weights(
    model: DepthModel,
    source: str | os.PathLike[str] | Mapping[str, Any],
    *,
    path: str | os.PathLike[str] | None = None,
    layout: str = "auto",
) -> dict[str, Any]:
    """Load encoder weights into ``model``'s backbone (exactly, see ``weights.loading.load_backbone_weights``) and
    record where they came from in ``model.encoder_source`` (``{"path", "sha256"}``: the file and the content hash
    that decoder-only checkpoints are checked against).

    Args:
        model: the model (modified in place).
        source: weights file, or an in-memory state dict (then ``path`` names the file it came from).
        path: the file recorded in ``encoder_source`` (default: ``source``).
        layout: ``"auto"`` or one of ``weights.backbones.LAYOUTS``.

    Returns:
        The loading report of ``load_backbone_weights``.

    Raises:
        ValueError: the weights do not fit the backbone (unknown, missing or mis-shaped tensors are listed).
    """
    report = load_backbone_weights(model.encoder.backbone, source, layout=layout)
    where = path if path is not None else source
    if isinstance(where, Mapping):
        raise ValueError("load_encoder_weights: pass path= (the file) with an in-memory state dict")
    model.encoder_source = {"path": os.fspath(where), "sha256": encoder_hash(model)}
    return report


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
