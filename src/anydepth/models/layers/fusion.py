"""Token-level layers: the class-token readout (DPT "project") and SDT's weighted multi-layer fusion."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ProjectReadout", "WeightedTokenFusion", "FUSION_WEIGHTS"]

FusionWeights = Literal["learned", "uniform"]
FUSION_WEIGHTS: tuple[str, ...] = ("learned", "uniform")


class ProjectReadout(nn.Linear):
    """DPT's "project" readout: ``GELU(Linear_{2C->C}([tokens, cls]))``, the class token broadcast to every patch.

    It is an ``nn.Linear`` (keys ``weight`` ``[C, 2C]`` and ``bias`` ``[C]``) with a custom forward.

    Args:
        dim: token channels C.
    """

    def __init__(self, dim: int) -> None:
        super().__init__(2 * dim, dim, bias=True)

    def forward(self, tokens: torch.Tensor, cls_token: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """Fold the class token into the patch tokens.

        Args:
            tokens: ``[B, N, C]`` patch tokens.
            cls_token: ``[B, C]`` class token of the same block.

        Returns:
            ``[B, N, C]``.
        """
        readout = cls_token.unsqueeze(1).expand_as(tokens)
        return F.gelu(super().forward(torch.cat((tokens, readout), dim=-1)))


class WeightedTokenFusion(nn.Module):
    """SDT projection + weighted fusion (paper Eq. 1): ``T = sum_i softmax(w)_i * GELU(Proj_i(T_i))``.

    Per tapped layer i: optional class-token readout (``readouts.{i}``, Linear 2C_i -> C_i + GELU), then a
    projection ``projections.{i}`` (Linear C_i -> D, no bias) + GELU. The projected token sets are summed
    with softmax-normalised learnable weights ``layer_weights`` (initialised to ones, i.e. uniform) and the
    result is reshaped to a ``[B, D, h, w]`` map.

    Args:
        in_dims: channels C_i of each tapped layer.
        out_channels: fused channels D (256 in AnyDepth).
        use_cls_token: build the class-token readouts (official AnyDepth: yes).
        weights: ``"learned"`` (softmax of a learnable vector, AnyDepth) or ``"uniform"`` (fixed 1/L mean,
            no parameter).
    """

    def __init__(
        self,
        in_dims: Sequence[int],
        out_channels: int = 256,
        use_cls_token: bool = True,
        weights: FusionWeights = "learned",
    ) -> None:
        super().__init__()
        if weights not in FUSION_WEIGHTS:
            raise ValueError(f"unknown fusion weights {weights!r}; valid: {list(FUSION_WEIGHTS)}")
        self.in_dims = tuple(int(c) for c in in_dims)
        self.out_channels = int(out_channels)
        self.use_cls_token = bool(use_cls_token)
        self.weights_mode = weights
        self.readouts = nn.ModuleList([ProjectReadout(c) for c in self.in_dims]) if use_cls_token else None
        self.projections = nn.ModuleList([nn.Linear(c, self.out_channels, bias=False) for c in self.in_dims])
        if weights == "learned":
            self.layer_weights: nn.Parameter | None = nn.Parameter(torch.ones(len(self.in_dims)))
        else:
            self.layer_weights = None

    def fusion_weights(self) -> torch.Tensor:
        """The current per-layer fusion weights alpha, ``[L]``, summing to 1."""
        if self.layer_weights is None:
            return torch.full((len(self.in_dims),), 1.0 / len(self.in_dims))
        return F.softmax(self.layer_weights, dim=0)

    def forward(
        self, features: Sequence[torch.Tensor], cls_tokens: Sequence[torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Fuse the tapped layers.

        Args:
            features: L patch maps ``[B, C_i, h, w]`` (same h, w).
            cls_tokens: L class tokens ``[B, C_i]``; required when ``use_cls_token``.

        Returns:
            ``[B, D, h, w]`` fused feature map.
        """
        b, _, h, w = features[0].shape
        if self.layer_weights is not None:
            alpha = F.softmax(self.layer_weights, dim=0)
        fused: torch.Tensor | None = None
        for i, feat in enumerate(features):
            tokens = feat.flatten(2).transpose(1, 2)  # [B, N, C_i]
            if self.readouts is not None:
                assert cls_tokens is not None
                tokens = self.readouts[i](tokens, cls_tokens[i])
            tokens = F.gelu(self.projections[i](tokens))  # [B, N, D]
            weighted = tokens * alpha[i] if self.layer_weights is not None else tokens / len(features)
            fused = weighted if fused is None else fused + weighted
        assert fused is not None
        # .contiguous(): a plain reshape would be a channels-last view and change the conv kernels downstream
        return fused.transpose(1, 2).contiguous().reshape(b, self.out_channels, h, w)
