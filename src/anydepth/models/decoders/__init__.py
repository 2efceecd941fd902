"""Decoders: ``EncoderOutput`` -> ``[B,1,H,W]``. Importing this package registers ``"sdt"``, ``"dpt"`` and ``"dpt_vggt"``."""

from __future__ import annotations

from anydepth.models.decoders.base import Decoder
from anydepth.models.decoders.dpt import DPTDecoder
from anydepth.models.decoders.dpt_vggt import VGGTDPTDecoder
from anydepth.models.decoders.sdt import SDTDecoder

__all__ = ["Decoder", "DPTDecoder", "SDTDecoder", "VGGTDPTDecoder"]
