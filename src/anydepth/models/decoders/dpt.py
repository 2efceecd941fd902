"""DPT baseline decoder as AnyDepth used it: DINOv3's mmseg-style ``DPTHead`` (reassemble-then-fuse).

Structure (official ``model/dpt_head.py``; C = encoder width, P_i = ``post_process_channels``, K = ``channels``):

1. ``reassemble``: per layer i, class-token readout (``readouts.{i}``, "project": Linear 2C->C + GELU),
   optional BatchNorm (``norms.{i}``), 1x1 projection C->P_i (``projects.{i}``) and a resize
   (``resizes.{i}``): ConvTranspose x4, ConvTranspose x2, identity, Conv3x3 stride 2.
2. ``layer_convs.{i}``: Conv3x3 P_i->K without bias.
3. ``fusions.{0..3}``: feature-fusion blocks from the coarsest layer up; each adds a pre-activation residual
   unit of the skip (``res1``; absent in ``fusions.0``), applies ``res2``, bilinear x2 (align_corners=True)
   and a 1x1 projection (``project``). Residual units: ``x + conv2(relu(conv1(relu(x))))``, no bias, no norm.
4. ``project``: Conv3x3 K->K + ReLU.
5. ``head``: Conv3x3 K->K/2, bilinear x2 (align_corners=True), Conv3x3 K/2->32, ReLU, Conv1x1 32->1.
6. Output activation ``ReLU(x) + min_output``.

Defaults reproduce the paper's DPT decoder sizes exactly: 50,825,153 / 76,047,425 / 99,579,713 parameters
for C = 384 / 768 / 1024 (``channels=512, post_process_channels=[C]*4, readout="project",
use_batchnorm=True``, 1 output channel).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from anydepth.models.decoders.base import Decoder
from anydepth.models.decoders.sdt import check_features, finish_output
from anydepth.models.layers.conv_blocks import kaiming_init_conv
from anydepth.models.layers.fusion import ProjectReadout
from anydepth.models.layers.tracing import is_tracing
from anydepth.registry import DECODERS
from anydepth.types import EncoderOutput

__all__ = ["DPTDecoder", "READOUTS"]

READOUTS: tuple[str, ...] = ("project", "add", "ignore")


class _Reassemble(nn.Module):
    """Token readout, optional BN, 1x1 projection and per-layer resize to strides 4, 8, 16, 32."""

    def __init__(
        self, in_dims: Sequence[int], out_dims: Sequence[int], readout: str, use_batchnorm: bool
    ) -> None:
        super().__init__()
        self.readout = readout
        self.readouts = nn.ModuleList([ProjectReadout(c) for c in in_dims]) if readout == "project" else None
        self.norms = nn.ModuleList([nn.BatchNorm2d(c) for c in in_dims]) if use_batchnorm else None
        self.projects = nn.ModuleList([nn.Conv2d(c, p, 1) for c, p in zip(in_dims, out_dims, strict=True)])
        p = list(out_dims)
        self.resizes = nn.ModuleList(
            [
                nn.ConvTranspose2d(p[0], p[0], kernel_size=4, stride=4),
                nn.ConvTranspose2d(p[1], p[1], kernel_size=2, stride=2),
                nn.Identity(),
                nn.Conv2d(p[3], p[3], kernel_size=3, stride=2, padding=1),
            ]
        )
        for conv in self.projects:
            kaiming_init_conv(conv)  # type: ignore[arg-type]

    def forward(
        self, features: Sequence[torch.Tensor], cls_tokens: Sequence[torch.Tensor]
    ) -> list[torch.Tensor]:
        out = []
        for i, x in enumerate(features):
            if self.readouts is not None:
                b, c, h, w = x.shape
                tokens = self.readouts[i](x.flatten(2).transpose(1, 2), cls_tokens[i])  # [B,N,C]
                x = tokens.transpose(1, 2).reshape(b, c, h, w)
            elif self.readout == "add":
                x = x + cls_tokens[i][:, :, None, None]
            if self.norms is not None:
                x = self.norms[i](x)
            out.append(self.resizes[i](self.projects[i](x)))
        return out


class _ResidualUnit(nn.Module):
    """Pre-activation residual unit ``x + conv2(relu(conv1(relu(x))))`` (3x3 convs, no bias)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        kaiming_init_conv(self.conv1)
        kaiming_init_conv(self.conv2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.relu(self.conv1(F.relu(x)))) + x


class _FusionBlock(nn.Module):
    """DPT feature fusion: ``project(up2(res2(x + res1(skip))))``; ``res1`` absent in the first block."""

    def __init__(self, channels: int, with_skip: bool) -> None:
        super().__init__()
        self.res1 = _ResidualUnit(channels) if with_skip else None
        self.res2 = _ResidualUnit(channels)
        self.project = nn.Conv2d(channels, channels, 1)
        kaiming_init_conv(self.project)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if skip is not None:
            assert self.res1 is not None
            # Odd token grids: the stride-2 branch rounds up, so the skip is resized to x. When tracing or
            # exporting, always resize (a same-size bilinear resize is an exact copy) so that no guard on
            # the grid's parity is baked into the graph.
            if is_tracing() or skip.shape != x.shape:
                skip = F.interpolate(skip, size=x.shape[-2:], mode="bilinear", align_corners=False)
            x = x + self.res1(skip)
        x = self.res2(x)
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        return self.project(x)


class _UpConvHead(nn.Module):
    """Conv3x3 K->K/2, bilinear x2 (align_corners=True), Conv3x3 K/2->32, ReLU, Conv1x1 32->1."""

    def __init__(self, channels: int, hidden: int = 32, out_channels: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels // 2, 3, padding=1)
        self.conv2 = nn.Conv2d(channels // 2, hidden, 3, padding=1)
        self.conv_out = nn.Conv2d(hidden, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        return self.conv_out(F.relu(self.conv2(x)))


@DECODERS.register("dpt")
class DPTDecoder(Decoder):
    """DPT baseline decoder (DINOv3 / mmseg ``DPTHead``), see the module docstring for structure and keys.

    Args:
        in_dims: channels of the 4 tapped encoder blocks.
        channels: fusion width K (paper baseline: 512).
        post_process_channels: per-layer reassemble widths P_i (default ``in_dims``, i.e. ``[C]*4``).
        readout: class-token handling: ``"project"`` (default), ``"add"`` or ``"ignore"``.
        use_batchnorm: BatchNorm on the reassembled tokens before the 1x1 projections (default True).
        min_output: added after the output ReLU (0.001).
        resize_align_corners: ``align_corners`` of the final bilinear resize when the native output size
            (16x the token grid, rounded up for odd grids) differs from ``out_hw``.

    Raises:
        ValueError: not exactly 4 layers, unknown keyword arguments or invalid values.
    """

    OPTIONS: tuple[str, ...] = (
        "channels",
        "post_process_channels",
        "readout",
        "use_batchnorm",
        "min_output",
        "resize_align_corners",
    )

    def __init__(
        self,
        in_dims: Sequence[int],
        *,
        channels: int = 512,
        post_process_channels: Sequence[int] | None = None,
        readout: str = "project",
        use_batchnorm: bool = True,
        min_output: float = 0.001,
        resize_align_corners: bool = False,
        **unknown: Any,
    ) -> None:
        super().__init__(in_dims)
        if unknown:
            raise ValueError(f"unknown DPT decoder option(s) {sorted(unknown)}; valid: {list(self.OPTIONS)}")
        if len(self.in_dims) != 4:
            raise ValueError(
                f"the DPT decoder needs exactly 4 tapped layers, got in_dims={list(self.in_dims)}"
            )
        if readout not in READOUTS:
            raise ValueError(f"DPT readout={readout!r} is not one of {list(READOUTS)}")
        post = tuple(int(c) for c in (post_process_channels or self.in_dims))
        if len(post) != 4 or min(post) < 1:
            raise ValueError(f"DPT post_process_channels must be 4 positive ints, got {list(post)}")
        channels = int(channels)
        if channels < 2 or channels % 2:
            raise ValueError(f"DPT channels must be an even int >= 2, got {channels}")
        if not min_output >= 0:
            raise ValueError(f"DPT min_output must be >= 0, got {min_output}")
        self.channels = channels
        self.post_process_channels = post
        self.readout = readout
        self.use_batchnorm = bool(use_batchnorm)
        self.min_output = float(min_output)
        self.resize_align_corners = bool(resize_align_corners)

        self.reassemble = _Reassemble(self.in_dims, post, readout, self.use_batchnorm)
        self.layer_convs = nn.ModuleList([nn.Conv2d(p, channels, 3, padding=1, bias=False) for p in post])
        self.fusions = nn.ModuleList([_FusionBlock(channels, with_skip=i > 0) for i in range(4)])
        self.project = nn.Conv2d(channels, channels, 3, padding=1)
        self.head = _UpConvHead(channels, 32, 1)
        for conv in [*self.layer_convs, self.project]:
            kaiming_init_conv(conv)

    def config(self) -> dict[str, Any]:
        """The constructor keyword arguments that rebuild this decoder (``in_dims`` excluded)."""
        return {
            "channels": self.channels,
            "post_process_channels": list(self.post_process_channels),
            "readout": self.readout,
            "use_batchnorm": self.use_batchnorm,
            "min_output": self.min_output,
            "resize_align_corners": self.resize_align_corners,
        }

    def forward_raw(self, enc: EncoderOutput) -> torch.Tensor:
        """The raw prediction before the output activation (the official ``DPTHead`` output).

        Args:
            enc: 4 tapped feature maps ``[B,C_i,h,w]`` (+ class tokens ``[B,C_i]`` unless ``readout="ignore"``).

        Returns:
            ``[B,1,16h',16w']`` with ``h' = 2*ceil(h/2)`` (= h for even grids), likewise ``w'``.
        """
        check_features(enc, self.in_dims, self.readout != "ignore", "DPT decoder")
        feats = self.reassemble(enc.features, enc.cls_tokens)  # strides 4, 8, 16, 32 (token grid = 16)
        feats = [conv(f) for conv, f in zip(self.layer_convs, feats, strict=True)]
        out = self.fusions[0](feats[3])
        for i in range(1, 4):
            out = self.fusions[i](out, feats[3 - i])
        out = F.relu(self.project(out))
        return self.head(out)

    def forward(self, enc: EncoderOutput, out_hw: tuple[int, int]) -> torch.Tensor:
        """Predict the dense map.

        Args:
            enc: encoder output (see ``forward_raw``).
            out_hw: output size (H, W) in pixels, normally the encoder's input size.

        Returns:
            ``[B,1,H,W]`` prediction ``>= min_output``.
        """
        return finish_output(self.forward_raw(enc), out_hw, self.min_output, self.resize_align_corners)
