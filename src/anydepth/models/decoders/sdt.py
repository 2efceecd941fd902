"""SDT: AnyDepth's "Simple Depth Transformer" decoder (fuse-then-reassemble).

Structure (paper §3 and the official ``model/sdt_head.py``; D = ``fusion_channels`` = 256):

1. ``fusion``: per tapped layer, class-token readout (Linear 2C->C + GELU), projection Linear C->D (no bias)
   + GELU, softmax-weighted sum over layers (weights start at ones), reshape to ``[B,D,h,w]``.
2. ``sde``: Spatial Detail Enhancer ``ReLU(F + BN(DWConv3x3(F)))``.
3. ``upsample1`` (x4: two [DySample x2 -> Conv3x3 (no bias) -> BN -> ReLU] blocks), ``refine1``
   (Conv3x3 with bias -> BN -> ReLU), ``upsample2`` (x4), ``refine2``: h -> 4h -> 16h.
4. ``head``: Conv3x3 D->128 + ReLU, Conv3x3 128->32 + ReLU, Conv1x1 32->1.
5. Output activation ``ReLU(x) + min_output`` (official ``FeaturesToDepth``, min 0.001).

The native output is 16x the token grid, i.e. the input size for patch-16 encoders. For other patch
sizes (DINOv2: 14) the raw output is resized bilinearly to ``out_hw`` before the output activation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from anydepth.models.decoders.base import Decoder
from anydepth.models.layers.conv_blocks import ConvBNReLU, SpatialDetailEnhancer
from anydepth.models.layers.dysample import UPSAMPLERS, UpsampleStage
from anydepth.models.layers.fusion import FUSION_WEIGHTS, WeightedTokenFusion
from anydepth.models.layers.tracing import is_tracing
from anydepth.registry import DECODERS
from anydepth.types import EncoderOutput

__all__ = ["SDTDecoder", "SDTHead", "check_features", "finish_output", "is_tracing"]


class SDTHead(nn.Module):
    """SDT prediction head at full resolution: keys ``conv1``, ``conv2``, ``conv_out``.

    Args:
        in_channels: D.
        hidden: channels of the two 3x3 convs (official: ``(D // 2, 32)`` = (128, 32)).
        out_channels: 1.
    """

    def __init__(self, in_channels: int, hidden: Sequence[int] = (128, 32), out_channels: int = 1) -> None:
        super().__init__()
        c1, c2 = (int(c) for c in hidden)
        self.conv1 = nn.Conv2d(in_channels, c1, 3, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.conv_out = nn.Conv2d(c2, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B,D,H,W]`` -> ``[B,1,H,W]`` raw (pre-activation) prediction."""
        x = F.relu(self.conv1(x), inplace=True)
        x = F.relu(self.conv2(x), inplace=True)
        return self.conv_out(x)


def check_features(
    enc: EncoderOutput, in_dims: Sequence[int], need_cls: bool, who: str
) -> tuple[int, int, int]:
    """Validate an ``EncoderOutput`` against a decoder's expectations; return ``(B, h, w)``.

    Raises:
        ValueError: wrong number of layers, channel mismatch, differing grids, missing class tokens.
    """
    feats = enc.features
    if len(feats) != len(in_dims):
        raise ValueError(f"{who}: expected {len(in_dims)} feature maps, got {len(feats)}")
    b, _, h, w = feats[0].shape
    for i, (f, c) in enumerate(zip(feats, in_dims, strict=True)):
        if f.dim() != 4 or f.shape[1] != c or f.shape[0] != b or tuple(f.shape[-2:]) != (h, w):
            raise ValueError(
                f"{who}: feature {i} has shape {tuple(f.shape)}; expected [{b}, {c}, {h}, {w}] "
                "(all tapped layers must share batch and token grid)"
            )
    if need_cls:
        if len(enc.cls_tokens) != len(in_dims):
            raise ValueError(
                f"{who}: the class-token readout needs {len(in_dims)} class tokens, got {len(enc.cls_tokens)} "
                "(build the decoder with use_cls_token=False / readout='ignore' for encoders without them)"
            )
        for i, (t, c) in enumerate(zip(enc.cls_tokens, in_dims, strict=True)):
            if tuple(t.shape) != (b, c):
                raise ValueError(f"{who}: class token {i} has shape {tuple(t.shape)}; expected [{b}, {c}]")
    return b, h, w


def finish_output(
    raw: torch.Tensor, out_hw: tuple[int, int], min_output: float, align_corners: bool
) -> torch.Tensor:
    """Resize the raw ``[B,1,h',w']`` prediction to ``out_hw`` (bilinear) if needed, then ``ReLU + min_output``.

    Resizing before the activation keeps the output >= ``min_output`` everywhere and matches the
    official DINOv2 (patch 14) release script, which resizes first and applies ReLU afterwards.
    """
    # No int() casts and, when tracing/exporting, no size test: both would bake the input size (or its
    # parity) into the graph. A same-size bilinear resize is an exact copy.
    if is_tracing() or raw.shape[-2] != out_hw[0] or raw.shape[-1] != out_hw[1]:
        raw = F.interpolate(raw, size=(out_hw[0], out_hw[1]), mode="bilinear", align_corners=align_corners)
    return F.relu(raw) + min_output


@DECODERS.register("sdt")
class SDTDecoder(Decoder):
    """AnyDepth's SDT decoder (see module docstring for the layer structure and key names).

    Args:
        in_dims: channels of each tapped encoder block (4 x C for AnyDepth; any number >= 1 works).
        fusion_channels: D, the width of the whole decoder (paper: 256).
        head_channels: channels of the head's two 3x3 convs (paper: (128, 32)).
        use_cls_token: per-layer class-token readout (paper: on). Off: tokens go straight to the projection
            and the encoder's class tokens are not needed.
        use_sde: Spatial Detail Enhancer (paper: on). Off: identity.
        upsampler: ``"dysample"`` (paper) or ``"bilinear"`` (ablation: each DySample x2 is replaced by a
            bilinear x2; the Conv3x3/BN/ReLU of every block and the refinements stay).
        fusion_weights: ``"learned"`` softmax weights (paper) or ``"uniform"`` fixed mean (no parameter).
        min_output: added after the output ReLU (paper code: 0.001).
        dysample_groups: DySample channel groups (paper: 4).
        resize_align_corners: ``align_corners`` of the final bilinear resize when the native output size
            differs from ``out_hw`` (patch-14 encoders). The official DAv2+SDT release script uses True.

    Raises:
        ValueError: unknown keyword arguments or invalid values, naming the option and the valid choices.

    Decoder parameters with the defaults: 5,517,381 / 9,451,077 / 13,384,261 for C = 384 / 768 / 1024.
    """

    OPTIONS: tuple[str, ...] = (
        "fusion_channels",
        "head_channels",
        "use_cls_token",
        "use_sde",
        "upsampler",
        "fusion_weights",
        "min_output",
        "dysample_groups",
        "resize_align_corners",
    )

    def __init__(
        self,
        in_dims: Sequence[int],
        *,
        fusion_channels: int = 256,
        head_channels: Sequence[int] = (128, 32),
        use_cls_token: bool = True,
        use_sde: bool = True,
        upsampler: str = "dysample",
        fusion_weights: str = "learned",
        min_output: float = 0.001,
        dysample_groups: int = 4,
        resize_align_corners: bool = False,
        **unknown: Any,
    ) -> None:
        super().__init__(in_dims)
        if unknown:
            raise ValueError(f"unknown SDT decoder option(s) {sorted(unknown)}; valid: {list(self.OPTIONS)}")
        if upsampler not in UPSAMPLERS:
            raise ValueError(f"SDT upsampler={upsampler!r} is not one of {list(UPSAMPLERS)}")
        if fusion_weights not in FUSION_WEIGHTS:
            raise ValueError(f"SDT fusion_weights={fusion_weights!r} is not one of {list(FUSION_WEIGHTS)}")
        head_channels = tuple(int(c) for c in head_channels)
        if len(head_channels) != 2 or min(head_channels) < 1:
            raise ValueError(f"SDT head_channels must be two positive ints, got {head_channels}")
        fusion_channels = int(fusion_channels)
        if fusion_channels < 1 or (upsampler == "dysample" and fusion_channels % dysample_groups):
            raise ValueError(
                f"SDT fusion_channels={fusion_channels} must be a positive multiple of "
                f"dysample_groups={dysample_groups}"
            )
        if not min_output >= 0:
            raise ValueError(f"SDT min_output must be >= 0, got {min_output}")
        self.fusion_channels = fusion_channels
        self.head_channels = head_channels
        self.use_cls_token = bool(use_cls_token)
        self.use_sde = bool(use_sde)
        self.upsampler = upsampler
        self.fusion_weights = fusion_weights
        self.min_output = float(min_output)
        self.dysample_groups = int(dysample_groups)
        self.resize_align_corners = bool(resize_align_corners)

        d = fusion_channels
        self.fusion = WeightedTokenFusion(self.in_dims, d, self.use_cls_token, fusion_weights)  # type: ignore[arg-type]
        self.sde = SpatialDetailEnhancer(d) if self.use_sde else None
        self.upsample1 = UpsampleStage(d, upsampler, dysample_groups)  # type: ignore[arg-type]
        self.refine1 = ConvBNReLU(d, d, 3, bias=True)
        self.upsample2 = UpsampleStage(d, upsampler, dysample_groups)  # type: ignore[arg-type]
        self.refine2 = ConvBNReLU(d, d, 3, bias=True)
        self.head = SDTHead(d, head_channels, 1)

    def config(self) -> dict[str, Any]:
        """The constructor keyword arguments that rebuild this decoder (``in_dims`` excluded)."""
        return {
            "fusion_channels": self.fusion_channels,
            "head_channels": list(self.head_channels),
            "use_cls_token": self.use_cls_token,
            "use_sde": self.use_sde,
            "upsampler": self.upsampler,
            "fusion_weights": self.fusion_weights,
            "min_output": self.min_output,
            "dysample_groups": self.dysample_groups,
            "resize_align_corners": self.resize_align_corners,
        }

    def forward_raw(self, enc: EncoderOutput) -> torch.Tensor:
        """The raw prediction before the output activation, at 16x the token grid.

        Args:
            enc: tapped features ``[B,C_i,h,w]`` (and class tokens ``[B,C_i]`` when ``use_cls_token``).

        Returns:
            ``[B,1,16h,16w]`` (the official ``SDTHead`` output, same numbers).
        """
        check_features(enc, self.in_dims, self.use_cls_token, "SDT decoder")
        x = self.fusion(enc.features, enc.cls_tokens if self.use_cls_token else None)  # [B,D,h,w]
        if self.sde is not None:
            x = self.sde(x)
        x = self.refine1(self.upsample1(x))  # [B,D,4h,4w]
        x = self.refine2(self.upsample2(x))  # [B,D,16h,16w]
        return self.head(x)

    def forward(self, enc: EncoderOutput, out_hw: tuple[int, int]) -> torch.Tensor:
        """Predict the dense map.

        Args:
            enc: encoder output (see ``forward_raw``).
            out_hw: output size (H, W) in pixels, normally the encoder's input size.

        Returns:
            ``[B,1,H,W]`` prediction ``>= min_output`` (AnyDepth presets: affine-invariant disparity).
        """
        return finish_output(self.forward_raw(enc), out_hw, self.min_output, self.resize_align_corners)
