"""``ModelConfig``: everything needed to rebuild a ``DepthModel`` (stored inside every checkpoint)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from anydepth.atomic import json_text
from anydepth.types import DepthSpace

__all__ = ["ModelConfig", "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a depth model: encoder + tapped layers + decoder + output space.

    Attributes:
        encoder: ``ENCODERS`` registry name, e.g. ``"dinov3_vits16"``.
        decoder: ``DECODERS`` registry name, ``"sdt"`` or ``"dpt"``.
        layer_indices: 0-based encoder blocks whose outputs feed the decoder (explicit, never computed).
        encoder_kwargs: overrides passed to the encoder builder (e.g. tiny sizes for tests).
        decoder_kwargs: keyword arguments of the decoder class (ablation switches live here).
        use_backbone_norm: apply the encoder's final LayerNorm to tapped tokens (official AnyDepth: False).
        freeze_encoder: keep the encoder frozen (no grads, always eval mode). False only for fine-tuning.
        output_space: meaning of the raw output.
        image_mean, image_std: input normalisation applied inside the model to RGB in [0, 1].
        name: preset name this config came from (informational).
    """

    encoder: str
    decoder: str
    layer_indices: tuple[int, ...]
    encoder_kwargs: dict[str, Any] = field(default_factory=dict)
    decoder_kwargs: dict[str, Any] = field(default_factory=dict)
    use_backbone_norm: bool = False
    freeze_encoder: bool = True
    output_space: DepthSpace = DepthSpace.DISPARITY_AFFINE_INVARIANT
    image_mean: tuple[float, float, float] = IMAGENET_MEAN
    image_std: tuple[float, float, float] = IMAGENET_STD
    name: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "layer_indices", tuple(int(i) for i in self.layer_indices))
        object.__setattr__(self, "output_space", DepthSpace(self.output_space))
        object.__setattr__(self, "image_mean", tuple(float(v) for v in self.image_mean))
        object.__setattr__(self, "image_std", tuple(float(v) for v in self.image_std))
        if not self.layer_indices:
            raise ValueError("ModelConfig.layer_indices must name at least one encoder block")

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with ``changes`` applied; ``encoder_kwargs``/``decoder_kwargs`` are merged, not replaced."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig field(s) {unknown}; valid: {sorted(known)}")
        for key in ("encoder_kwargs", "decoder_kwargs"):
            if key in changes:
                changes[key] = {**getattr(self, key), **changes[key]}
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["output_space"] = self.output_space.value
        d["layer_indices"] = list(self.layer_indices)
        d["image_mean"] = list(self.image_mean)
        d["image_std"] = list(self.image_std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig field(s) {unknown}; valid: {sorted(known)}")
        return cls(**d)

    def to_json(self) -> str:
        return json_text(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, s: str) -> ModelConfig:
        return cls.from_dict(json.loads(s))
