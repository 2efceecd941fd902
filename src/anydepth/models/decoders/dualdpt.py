"""Depth Anything 3's Dual-DPT head (``"dualdpt"``, original ``model/dualdpt.py:DualDPT``) as a decoder.

Two fusion chains share the reassembled features (DAv2/DA3 DPT blocks, ``anydepth.models.decoders.dpt_dav2``);
parameter names are the original ones below ``head.`` of DA3-Large's ``model.safetensors``:

* ``norm``: LayerNorm over the (2C = 2048-d, concatenated) tapped tokens, then ``projects``/``resize_layers`` with
  DA3's UV position embedding added after each projection (``pos_embed``);
* main branch: ``scratch.refinenet{1..4}`` (``refinenet4`` without ``resConfUnit1``), ``scratch.output_conv1``,
  bilinear resize (align_corners=True) to the input size, position embedding, ``scratch.output_conv2``
  (Conv3x3 F/2->32, ReLU, Conv1x1 32->2): ``depth = exp(ch0)``, ``depth_conf = exp(ch1) + 1``;
* auxiliary ray branch: ``scratch.refinenet{1..4}_aux``, per pyramid level ``scratch.output_conv1_aux.{l}``
  (five linear 3x3 convs F->F/2->F->F/2->F->F/2) and ``scratch.output_conv2_aux.{l}`` (Conv3x3 F/2->32, LayerNorm,
  ReLU, Conv1x1 32->7; the LayerNorm is one module shared by all levels, as in DA3). As in the original only the finest level is evaluated (levels 0-2 exist so the files load
  whole and the parameter count matches): at 8x the token grid, ``ray`` = channels 0-5 (linear), ``ray_conf`` =
  ``exp(ch6) + 1``.

DA3-Large (``configs/da3-large.yaml``): ``dim_in=2048, output_dim=2, features=256,
out_channels=[256,512,1024,1024]``: 47,229,246 parameters.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from anydepth.models.decoders.dpt_dav2 import DPTFamilyBase, FeatureFusionBlock, _output_conv2
from anydepth.registry import DECODERS
from anydepth.types import EncoderOutput

__all__ = ["DualDPTDecoder"]

_AUX_CONVS = (1, 3, 5)


def _aux_out1(features: int, n_convs: int) -> nn.Sequential:
    """``n_convs`` 3x3 convs alternating F->F/2 and F/2->F, ending at F/2 (no activations, as in DA3)."""
    half = features // 2
    return nn.Sequential(
        *[
            nn.Conv2d(features if i % 2 == 0 else half, half if i % 2 == 0 else features, 3, padding=1)
            for i in range(n_convs)
        ]
    )


def _unshare_ray_norm(
    module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: Any
) -> None:
    """Give each level's copy of the shared ray LayerNorm its own storage (safetensors refuses shared tensors)."""
    rx = re.compile(re.escape(prefix) + r"scratch\.output_conv2_aux\.([1-9]\d*)\.2\.(weight|bias)\Z")
    for key in list(state_dict):
        if rx.match(key):
            state_dict[key] = state_dict[key].detach().clone()


@DECODERS.register("dualdpt")
class DualDPTDecoder(DPTFamilyBase):
    """Depth Anything 3's Dual-DPT (module docstring: structure and names).

    Args:
        in_dims: 4 equal tapped widths (DA3-Large: 2048, the concatenated tokens).
        features: fusion width F (256).
        out_channels: per-layer projection widths ([256, 512, 1024, 1024]).
        pos_embed: UV position embedding (DA3: on).
        aux_pyramid_levels: levels of the ray branch's output stacks (DA3: 4; only the last is evaluated).
        aux_out1_conv_num: convs per ray pre-head, 1, 3 or 5 (DA3: 5).

    Raises:
        ValueError: bad sizes or unknown keyword arguments.
    """

    OPTIONS: tuple[str, ...] = (
        "features",
        "out_channels",
        "pos_embed",
        "aux_pyramid_levels",
        "aux_out1_conv_num",
    )

    def __init__(
        self,
        in_dims: Sequence[int],
        *,
        features: int = 256,
        out_channels: Sequence[int] = (256, 512, 1024, 1024),
        pos_embed: bool = True,
        aux_pyramid_levels: int = 4,
        aux_out1_conv_num: int = 5,
        **unknown: Any,
    ) -> None:
        if unknown:
            raise ValueError(
                f"unknown dualdpt decoder option(s) {sorted(unknown)}; valid: {list(self.OPTIONS)}"
            )
        super().__init__(in_dims, features, out_channels, refinenet4_residual=False, who="dualdpt decoder")
        if int(aux_out1_conv_num) not in _AUX_CONVS:
            raise ValueError(
                f"dualdpt aux_out1_conv_num must be one of {list(_AUX_CONVS)}, got {aux_out1_conv_num}"
            )
        if not 1 <= int(aux_pyramid_levels) <= 4:
            raise ValueError(f"dualdpt aux_pyramid_levels must be in 1..4, got {aux_pyramid_levels}")
        self.pos_embed = bool(pos_embed)
        self.aux_pyramid_levels = int(aux_pyramid_levels)
        self.aux_out1_conv_num = int(aux_out1_conv_num)
        f = self.features
        self.norm = nn.LayerNorm(self.in_dims[0])
        s = self.scratch
        s.output_conv2 = _output_conv2(f, 2, final_relu=False)
        s.refinenet1_aux = FeatureFusionBlock(f)
        s.refinenet2_aux = FeatureFusionBlock(f)
        s.refinenet3_aux = FeatureFusionBlock(f)
        s.refinenet4_aux = FeatureFusionBlock(f, has_residual=False)
        s.output_conv1_aux = nn.ModuleList(
            [_aux_out1(f, self.aux_out1_conv_num) for _ in range(self.aux_pyramid_levels)]
        )
        # one LayerNorm shared by every level, as in DA3 (its state dict repeats it under each level's name)
        shared_ln = nn.LayerNorm(32)
        s.output_conv2_aux = nn.ModuleList(
            [
                _output_conv2(f, 7, final_relu=False, layer_norm=shared_ln)
                for _ in range(self.aux_pyramid_levels)
            ]
        )
        self.register_state_dict_post_hook(_unshare_ray_norm)

    def config(self) -> dict[str, Any]:
        """The constructor keyword arguments that rebuild this decoder (``in_dims`` excluded)."""
        return {
            "features": self.features,
            "out_channels": list(self.out_channels),
            "pos_embed": self.pos_embed,
            "aux_pyramid_levels": self.aux_pyramid_levels,
            "aux_out1_conv_num": self.aux_out1_conv_num,
        }

    def _depth(self, layers: list[torch.Tensor], out_hw: tuple[int, int]) -> dict[str, torch.Tensor]:
        out = self.scratch.output_conv1(self._fuse(layers, self._main_chain()))
        out = F.interpolate(out, size=(out_hw[0], out_hw[1]), mode="bilinear", align_corners=True)
        if self.pos_embed:
            out = self._add_pos(out, out_hw)
        logits = self.scratch.output_conv2(out)
        return {"depth": torch.exp(logits[:, :1]), "depth_conf": torch.exp(logits[:, 1:]) + 1}

    def _ray(self, layers: list[torch.Tensor], out_hw: tuple[int, int]) -> dict[str, torch.Tensor]:
        s: Any = self.scratch
        chain = (s.refinenet1_aux, s.refinenet2_aux, s.refinenet3_aux, s.refinenet4_aux)
        aux = s.output_conv1_aux[-1](self._fuse(layers, chain))
        if self.pos_embed:
            aux = self._add_pos(aux, out_hw)
        logits = s.output_conv2_aux[-1](aux)
        return {"ray": logits[:, :-1], "ray_conf": torch.exp(logits[:, -1:]) + 1}

    def forward_outputs(self, enc: EncoderOutput, out_hw: tuple[int, int]) -> dict[str, torch.Tensor]:
        """All outputs of the head.

        Args:
            enc: 4 maps ``[B,2C,h,w]`` (class tokens unused).
            out_hw: input image size ``(H, W)`` (the depth is resized to it; it sets the position embedding's
                aspect ratio).

        Returns:
            ``depth`` ``[B,1,H,W]`` (``exp``, relative depth), ``depth_conf`` ``[B,1,H,W]`` (``exp + 1``), ``ray``
            ``[B,6,8h,8w]`` (per-pixel ray origin/direction of DA3's depth-ray representation, linear) and
            ``ray_conf`` ``[B,1,8h,8w]``.
        """
        layers = self._reassemble(enc, out_hw, need_cls=False)
        return {**self._depth(layers, out_hw), **self._ray(layers, out_hw)}

    def forward(self, enc: EncoderOutput, out_hw: tuple[int, int]) -> torch.Tensor:
        """``[B,1,H,W]`` relative depth (> 0); the ray branch is not evaluated."""
        return self._depth(self._reassemble(enc, out_hw, need_cls=False), out_hw)["depth"]
