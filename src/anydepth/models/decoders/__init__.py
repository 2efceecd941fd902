"""Decoders: ``EncoderOutput`` -> ``[B,1,H,W]``. Importing this package registers ``"sdt"``, ``"dpt"``,
``"dpt_vggt"`` and the Depth Anything heads ``"dpt_dav2"``, ``"dpt_da3"`` and ``"dualdpt"``."""

from __future__ import annotations

from anydepth.models.decoders.base import Decoder
from anydepth.models.decoders.dpt import DPTDecoder
from anydepth.models.decoders.dpt_da3 import DA3DPTDecoder
from anydepth.models.decoders.dpt_dav2 import DAv2DPTDecoder
from anydepth.models.decoders.dpt_vggt import VGGTDPTDecoder
from anydepth.models.decoders.dualdpt import DualDPTDecoder
from anydepth.models.decoders.sdt import SDTDecoder

__all__ = [
    "Decoder",
    "DPTDecoder",
    "SDTDecoder",
    "VGGTDPTDecoder",
    "DAv2DPTDecoder",
    "DA3DPTDecoder",
    "DualDPTDecoder",
]
