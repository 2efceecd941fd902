"""ViT encoders: our own DINOv3 / DINOv2 modules (Meta parameter names), weight converters and loaders.

Importing this package registers every encoder builder in ``anydepth.registry.ENCODERS``
(``dinov3_vits16``, ``dinov2_vitl14_reg``, ``da3_vitl14``, ..., and the tiny ``dinov3_test`` / ``dinov2_test`` /
``da3_test``; ``vggt_1b`` / ``vggt_test``: VGGT's aggregator).
"""

from __future__ import annotations

from anydepth.models.encoders import da3, dinov2, dinov3, efficientnet, vggt  # noqa: F401  (registration side effect)
from anydepth.models.encoders.base import EncoderWrapper
from anydepth.models.encoders.da3 import DA3Config, DA3ViT
from anydepth.models.encoders.dinov2 import DinoV2Config, DinoV2ViT
from anydepth.models.encoders.dinov3 import DinoV3Config, DinoV3ViT

__all__ = ["EncoderWrapper", "DinoV3Config", "DinoV3ViT", "DinoV2Config", "DinoV2ViT", "DA3Config", "DA3ViT"]
