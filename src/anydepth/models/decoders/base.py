"""Decoder base class: ``EncoderOutput`` -> one-channel dense prediction at the input resolution."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from anydepth.types import EncoderOutput

__all__ = ["Decoder"]


class Decoder(nn.Module):
    """Base class of every registered decoder.

    Subclasses are constructed as ``cls(in_dims, **kwargs)`` where ``in_dims`` holds the channel count of
    each tapped encoder block, and implement ``forward(enc, out_hw) -> [B,1,H,W]`` (output activation
    included). When the decoder's native output size differs from ``out_hw`` (e.g. patch 14 encoders with
    a x16 upsampling path) the subclass resizes bilinearly to ``out_hw``.
    """

    in_dims: tuple[int, ...]

    def __init__(self, in_dims: Sequence[int]) -> None:
        super().__init__()
        if not in_dims:
            raise ValueError("decoder needs at least one input feature dimension")
        self.in_dims = tuple(int(c) for c in in_dims)

    def forward(self, enc: EncoderOutput, out_hw: tuple[int, int]) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError
