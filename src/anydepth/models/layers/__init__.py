"""Reusable layers of the decoders: DySample, token fusion and conv blocks."""

from __future__ import annotations

from anydepth.models.layers.conv_blocks import ConvBNReLU, SpatialDetailEnhancer, kaiming_init_conv
from anydepth.models.layers.dysample import (
    BilinearUpsample,
    DySample,
    UpsampleBlock,
    UpsampleStage,
    dysample_init_pos,
)
from anydepth.models.layers.fusion import ProjectReadout, WeightedTokenFusion

__all__ = [
    "BilinearUpsample",
    "ConvBNReLU",
    "DySample",
    "ProjectReadout",
    "SpatialDetailEnhancer",
    "UpsampleBlock",
    "UpsampleStage",
    "WeightedTokenFusion",
    "dysample_init_pos",
    "kaiming_init_conv",
]
