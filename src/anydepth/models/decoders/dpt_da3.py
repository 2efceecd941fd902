"""Depth Anything 3's DPT head (``"dpt_da3"``, original ``model/dpt.py:DPT``) as a registered decoder.

The structure is Depth Anything V2's head (``anydepth.models.decoders.dpt_dav2``) with DA3's changes; parameter
names are the original ones below ``head.`` of a DA3 ``model.safetensors``:

* optional token LayerNorm ``norm`` (``norm_type="layer"``; DA3Mono-Large: identity) and optional UV position
  embedding (``pos_embed``; DA3Mono-Large: off) after each 1x1 projection and after the final resize;
* ``scratch.refinenet4`` has no ``resConfUnit1`` (``has_residual=False``);
* ``scratch.output_conv2``: Conv3x3 F/2->32, ReLU, Conv1x1 32->``output_dim`` (no final ReLU); the depth channel
  goes through ``exp``; with ``output_dim=2`` the last channel is a confidence ``exp(x) + 1``;
* ``scratch.sky_output_conv2`` (``use_sky_head``): the same stack with one channel and a ReLU: the sky map.

DA3Mono-Large (``configs/da3mono-large.yaml``): ``dim_in=1024, output_dim=1, features=256,
out_channels=[256,512,1024,1024]``, sky head on: 29,803,778 parameters. Its depth is relative (affine-invariant,
in practice scale-invariant) depth, not disparity.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from anydepth.models.decoders.dpt_dav2 import DPTFamilyBase, _output_conv2
from anydepth.registry import DECODERS
from anydepth.types import EncoderOutput

__all__ = ["DA3DPTDecoder"]


@DECODERS.register("dpt_da3")
class DA3DPTDecoder(DPTFamilyBase):
    """Depth Anything 3's single-branch DPT head (module docstring: structure and names).

    Args:
        in_dims: 4 equal encoder widths (DA3Mono-Large: 1024).
        features: fusion width F (256).
        out_channels: per-layer projection widths ([256, 512, 1024, 1024]).
        output_dim: 1 (depth) or 2 (depth + confidence).
        use_sky_head: build the one-channel sky head (DA3Mono-Large: yes).
        token_norm: LayerNorm on the tapped tokens (DA3 ``norm_type="layer"``; DA3Mono-Large: no).
        pos_embed: add DA3's UV position embedding (DA3Mono-Large: no).

    Raises:
        ValueError: bad sizes or unknown keyword arguments.
    """

    OPTIONS: tuple[str, ...] = (
        "features",
        "out_channels",
        "output_dim",
        "use_sky_head",
        "token_norm",
        "pos_embed",
    )

    def __init__(
        self,
        in_dims: Sequence[int],
        *,
        features: int = 256,
        out_channels: Sequence[int] = (256, 512, 1024, 1024),
        output_dim: int = 1,
        use_sky_head: bool = True,
        token_norm: bool = False,
        pos_embed: bool = False,
        **unknown: Any,
    ) -> None:
        if unknown:
            raise ValueError(
                f"unknown dpt_da3 decoder option(s) {sorted(unknown)}; valid: {list(self.OPTIONS)}"
            )
        super().__init__(in_dims, features, out_channels, refinenet4_residual=False, who="dpt_da3 decoder")
        if int(output_dim) not in (1, 2):
            raise ValueError(
                f"dpt_da3 output_dim must be 1 (depth) or 2 (depth + confidence), got {output_dim}"
            )
        self.output_dim = int(output_dim)
        self.use_sky_head = bool(use_sky_head)
        self.has_unused_parameters = self.use_sky_head  # the sky head is not part of forward()
        self.token_norm = bool(token_norm)
        self.pos_embed = bool(pos_embed)
        self.norm = nn.LayerNorm(self.in_dims[0]) if self.token_norm else None
        self.scratch.output_conv2 = _output_conv2(self.features, self.output_dim, final_relu=False)
        if self.use_sky_head:
            self.scratch.sky_output_conv2 = _output_conv2(self.features, 1, final_relu=False)

    def config(self) -> dict[str, Any]:
        """The constructor keyword arguments that rebuild this decoder (``in_dims`` excluded)."""
        return {
            "features": self.features,
            "out_channels": list(self.out_channels),
            "output_dim": self.output_dim,
            "use_sky_head": self.use_sky_head,
            "token_norm": self.token_norm,
            "pos_embed": self.pos_embed,
        }

    def _neck(self, enc: EncoderOutput, out_hw: tuple[int, int]) -> torch.Tensor:
        """Fused features after ``output_conv1``, resized to ``out_hw``: ``[B,F/2,H,W]``."""
        layers = self._reassemble(enc, out_hw, need_cls=False)
        out = self.scratch.output_conv1(self._fuse(layers, self._main_chain()))
        out = F.interpolate(out, size=(out_hw[0], out_hw[1]), mode="bilinear", align_corners=True)
        return self._add_pos(out, out_hw) if self.pos_embed else out

    def forward_outputs(self, enc: EncoderOutput, out_hw: tuple[int, int]) -> dict[str, torch.Tensor]:
        """All outputs of the head.

        Args:
            enc: 4 maps ``[B,C,h,w]`` (class tokens unused).
            out_hw: output size, normally the input size (DA3 resizes to ``(p h, p w)``).

        Returns:
            ``depth`` ``[B,1,H,W]`` (``exp``, relative depth), ``depth_conf`` ``[B,1,H,W]`` (``exp + 1``, only with
            ``output_dim=2``) and ``sky`` ``[B,1,H,W]`` (ReLU, only with ``use_sky_head``).
        """
        feat = self._neck(enc, out_hw)
        outs = self._depth(feat)
        if self.use_sky_head:
            sky: nn.Module = self.scratch.sky_output_conv2  # type: ignore[assignment]
            outs["sky"] = F.relu(sky(feat))
        return outs

    def _depth(self, feat: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.scratch.output_conv2(feat)
        if self.output_dim == 1:
            return {"depth": torch.exp(logits)}
        return {"depth": torch.exp(logits[:, :1]), "depth_conf": torch.exp(logits[:, 1:]) + 1}

    def forward(self, enc: EncoderOutput, out_hw: tuple[int, int]) -> torch.Tensor:
        """``[B,1,H,W]`` relative depth (> 0); the sky head is not evaluated."""
        return self._depth(self._neck(enc, out_hw))["depth"]
