"""DySample (Liu et al., ICCV 2023) in the configuration AnyDepth uses, and the SDT upsampling blocks.

DySample upsamples a feature map by learning, for every output pixel, where to sample the input: a 1x1
convolution predicts per-group sub-pixel offsets that are added to a fixed initial sampling grid
(``init_pos``) and the input is read with ``grid_sample`` (bilinear, ``align_corners=False``, border
padding). AnyDepth uses the "lp" style (offsets predicted from the low-resolution input), 4 channel groups,
a dynamic scope (offsets gated by ``sigmoid(scope(x)) * 0.5``) and scale 2.

With all offsets zero, DySample reduces exactly to ``F.interpolate(x, scale_factor=2, mode="bilinear",
align_corners=False)``; a test checks this.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DySample", "BilinearUpsample", "UpsampleBlock", "UpsampleStage", "dysample_init_pos"]

Upsampler = Literal["dysample", "bilinear"]
UPSAMPLERS: tuple[str, ...] = ("dysample", "bilinear")


def dysample_init_pos(scale: int, groups: int) -> torch.Tensor:
    """The fixed initial sub-pixel sampling offsets, ``[1, 2*groups*scale**2, 1, 1]``.

    Channel layout is ``(xy, group, row a, column b)`` flattened; the x entry of sub-pixel ``(a, b)`` is
    ``(b - (scale-1)/2) / scale`` and the y entry ``(a - (scale-1)/2) / scale`` (input-pixel units). For
    scale 2 the values are +-0.25, i.e. the output pixel centres of a x2 upsampling.
    """
    # Plain Python, then one tensor: cheap under a ``torch.device("meta")`` context too.
    h = [(i - (scale - 1) / 2) / scale for i in range(scale)]
    xs = [h[b] for _ in range(groups) for _a in range(scale) for b in range(scale)]
    ys = [h[a] for _ in range(groups) for a in range(scale) for _b in range(scale)]
    return torch.tensor(xs + ys, dtype=torch.float32).view(1, -1, 1, 1)


class DySample(nn.Module):
    """DySample "lp" upsampler.

    Args:
        channels: input channels C (must be divisible by ``groups``).
        scale: integer upsampling factor (AnyDepth: 2).
        groups: channel groups with independent offsets (AnyDepth: 4).
        dyscope: gate offsets with ``sigmoid(scope(x)) * 0.5`` (AnyDepth: True); otherwise scale by 0.25.

    State-dict keys: ``offset.weight``, ``offset.bias`` and (with ``dyscope``) ``scope.weight``. The fixed
    ``init_pos`` grid is a non-persistent buffer (the official code stores it in its checkpoints; the
    importer checks it and drops it).
    """

    init_pos: torch.Tensor

    def __init__(self, channels: int, scale: int = 2, groups: int = 4, dyscope: bool = True) -> None:
        super().__init__()
        if channels < groups or channels % groups:
            raise ValueError(f"DySample: channels={channels} must be a positive multiple of groups={groups}")
        if scale < 1:
            raise ValueError(f"DySample: scale must be >= 1, got {scale}")
        self.scale = int(scale)
        self.groups = int(groups)
        out = 2 * groups * scale * scale
        self.offset = nn.Conv2d(channels, out, 1)
        self.scope = nn.Conv2d(channels, out, 1, bias=False) if dyscope else None
        self.register_buffer("init_pos", dysample_init_pos(scale, groups), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official init: offset ~ N(0, 0.001) with zero bias; scope all zeros (gate starts at 0.5)."""
        if self.offset.weight.is_meta:  # nothing to initialise (and meta normal_ is slow to set up)
            return
        nn.init.normal_(self.offset.weight, 0.0, 0.001)
        nn.init.zeros_(self.offset.bias)  # type: ignore[arg-type]
        if self.scope is not None:
            nn.init.zeros_(self.scope.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B,C,H,W]`` -> ``[B,C,scale*H,scale*W]``."""
        b, c, h, w = x.shape
        s, g = self.scale, self.groups
        offset = self.offset(x)
        if self.scope is not None:
            offset = offset * self.scope(x).sigmoid() * 0.5
        else:
            offset = offset * 0.25
        offset = offset + self.init_pos.to(x.dtype)  # [B, 2*G*s*s, H, W], input-pixel units
        offset = offset.reshape(b, 2, g * s * s, h, w)
        # Absolute sampling positions: pixel centres (j + 0.5, i + 0.5) plus the offsets.
        xs = torch.arange(w, device=x.device, dtype=x.dtype) + 0.5
        ys = torch.arange(h, device=x.device, dtype=x.dtype) + 0.5
        px = offset[:, 0] + xs.view(1, 1, 1, w)
        py = offset[:, 1] + ys.view(1, 1, h, 1)
        grid = torch.stack([2 * px / w - 1, 2 * py / h - 1], dim=1)  # [B, 2, G*s*s, H, W] in [-1, 1]
        grid = F.pixel_shuffle(grid.reshape(b, -1, h, w), s)  # [B, 2*G, sH, sW]
        grid = grid.reshape(b, 2, g, s * h, s * w).permute(0, 2, 3, 4, 1).reshape(b * g, s * h, s * w, 2)
        out = F.grid_sample(
            x.reshape(b * g, c // g, h, w), grid, mode="bilinear", padding_mode="border", align_corners=False
        )
        return out.reshape(b, c, s * h, s * w)


class BilinearUpsample(nn.Module):
    """Parameter-free x``scale`` bilinear upsampling (``align_corners=False``): the DySample ablation."""

    def __init__(self, scale: int = 2) -> None:
        super().__init__()
        self.scale = int(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B,C,H,W]`` -> ``[B,C,scale*H,scale*W]``."""
        return F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)


class UpsampleBlock(nn.Module):
    """One SDT "DySample block" (paper B(X)): ``ReLU(BN(Conv3x3(Up2(X))))``, conv without bias.

    Args:
        channels: channels D, unchanged by the block.
        upsampler: ``"dysample"`` (AnyDepth) or ``"bilinear"`` (ablation: only the x2 operator changes, the
            conv/BN/ReLU stay).
        groups: DySample channel groups.

    State-dict keys: ``up.*`` (DySample only), ``conv.weight``, ``bn.*``.
    """

    def __init__(self, channels: int, upsampler: Upsampler = "dysample", groups: int = 4) -> None:
        super().__init__()
        if upsampler == "dysample":
            self.up: nn.Module = DySample(channels, scale=2, groups=groups, dyscope=True)
        elif upsampler == "bilinear":
            self.up = BilinearUpsample(2)
        else:
            raise ValueError(f"unknown upsampler {upsampler!r}; valid: {list(UPSAMPLERS)}")
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B,D,H,W]`` -> ``[B,D,2H,2W]``."""
        return F.relu(self.bn(self.conv(self.up(x))), inplace=True)


class UpsampleStage(nn.Module):
    """One SDT upsampling stage (paper S(X) = B(B(X))): x4 in two x2 blocks ``block1``, ``block2``."""

    def __init__(self, channels: int, upsampler: Upsampler = "dysample", groups: int = 4) -> None:
        super().__init__()
        self.block1 = UpsampleBlock(channels, upsampler, groups)
        self.block2 = UpsampleBlock(channels, upsampler, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B,D,H,W]`` -> ``[B,D,4H,4W]``."""
        return self.block2(self.block1(x))
