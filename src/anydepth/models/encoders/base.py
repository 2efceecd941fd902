"""Encoder wrapper: taps explicit ViT blocks and returns an ``EncoderOutput``; keeps the backbone frozen.

A *backbone* is any module registered in ``anydepth.registry.ENCODERS`` that provides

* ``embed_dim: int`` and ``patch_size: int`` attributes,
* ``n_blocks: int``,
* ``get_intermediate_layers(x, n, reshape=True, return_class_token=True, norm=...)`` returning, for each
  block index in ``n``, a tuple ``(patch_map [B,C,h,w], cls_token [B,C])`` (register tokens dropped).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from anydepth.types import EncoderOutput

__all__ = ["EncoderWrapper"]


class EncoderWrapper(nn.Module):
    """Runs a ViT backbone and returns the tapped blocks as an ``EncoderOutput``.

    Args:
        backbone: the ViT module (see module docstring for the required interface).
        layer_indices: 0-based blocks to tap, explicit per preset (``[2,5,8,11]`` S/B, ``[4,11,17,23]`` L).
        use_backbone_norm: apply the backbone's final norm to tapped tokens.
        frozen: if True (default), parameters never require grad, the backbone always stays in eval mode
            (``model.train()`` cannot switch it: DINOv3's RoPE jitters coordinates in training mode) and
            the forward pass stores no activations.
    """

    def __init__(
        self,
        backbone: nn.Module,
        layer_indices: Sequence[int],
        use_backbone_norm: bool = False,
        frozen: bool = True,
    ) -> None:
        super().__init__()
        self.backbone: Any = backbone  # a ViT backbone (interface in the module docstring)
        bb: Any = backbone
        n_blocks = int(bb.n_blocks)
        idx = tuple(int(i) for i in layer_indices)
        bad = [i for i in idx if not 0 <= i < n_blocks]
        if bad:
            raise ValueError(f"layer_indices {list(idx)} out of range for a backbone with {n_blocks} blocks")
        self.layer_indices = idx
        self.use_backbone_norm = bool(use_backbone_norm)
        self.frozen = bool(frozen)
        if self.frozen:
            self.backbone.requires_grad_(False)
            self.backbone.eval()

    @property
    def patch_size(self) -> int:
        return int(self.backbone.patch_size)

    @property
    def embed_dim(self) -> int:
        return int(self.backbone.embed_dim)

    @property
    def embed_dims(self) -> tuple[int, ...]:
        return tuple(self.embed_dim for _ in self.layer_indices)

    def train(self, mode: bool = True) -> EncoderWrapper:
        """Switch mode; a frozen backbone always stays in eval mode."""
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self

    def forward(self, x: torch.Tensor) -> EncoderOutput:
        """Encode a normalised image batch.

        Args:
            x: ``[B,3,H,W]`` ImageNet-normalised RGB; H and W multiples of ``patch_size``.

        Returns:
            ``EncoderOutput`` with ``len(layer_indices)`` maps ``[B,C,H/p,W/p]`` and class tokens ``[B,C]``.
        """
        p = self.patch_size
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"encoder input must be [B,3,H,W], got {tuple(x.shape)}")
        if x.shape[-2] % p or x.shape[-1] % p:
            raise ValueError(f"input size {tuple(x.shape[-2:])} is not a multiple of the patch size {p}")
        get = self.backbone.get_intermediate_layers
        if self.frozen:
            with torch.no_grad():
                outs = get(
                    x,
                    n=self.layer_indices,
                    reshape=True,
                    return_class_token=True,
                    norm=self.use_backbone_norm,
                )
        else:
            outs = get(
                x, n=self.layer_indices, reshape=True, return_class_token=True, norm=self.use_backbone_norm
            )
        feats = tuple(o[0] for o in outs)
        cls = tuple(o[1] for o in outs)
        return EncoderOutput(features=feats, cls_tokens=cls, patch_size=p)
