"""Small convolutional building blocks shared by the decoders.

All blocks keep the spatial size (3x3 kernels use padding 1) and operate on ``[B,C,H,W]`` feature maps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ConvBNReLU", "SpatialDetailEnhancer", "kaiming_init_conv"]


class ConvBNReLU(nn.Module):
    """``ReLU(BN(Conv(x)))`` with readable state-dict keys ``conv.*`` and ``bn.*``.

    Args:
        in_channels: input channels C_in.
        out_channels: output channels C_out.
        kernel_size: square kernel size (padding keeps H, W).
        bias: whether the convolution has a bias (SDT: False after DySample, True in the refinements).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, bias: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B,C_in,H,W]`` -> ``[B,C_out,H,W]``."""
        return F.relu(self.bn(self.conv(x)), inplace=True)


class SpatialDetailEnhancer(nn.Module):
    """SDE (paper Eq. 2): ``F' = ReLU(F + BN(DWConv3x3(F)))``.

    Depthwise 3x3 convolution without bias, BatchNorm, residual add, ReLU. State-dict keys: ``dwconv.weight``
    and ``bn.*``.

    Args:
        channels: number of channels D (256 in AnyDepth).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B,D,h,w]`` -> ``[B,D,h,w]``."""
        return F.relu(x + self.bn(self.dwconv(x)))


def kaiming_init_conv(conv: nn.Conv2d) -> None:
    """He-normal init (fan_out, ReLU gain) with zero bias, as mmcv's ``ConvModule`` does by default."""
    if conv.weight.is_meta:
        return
    nn.init.kaiming_normal_(conv.weight, a=0, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
