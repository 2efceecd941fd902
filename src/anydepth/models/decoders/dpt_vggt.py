"""VGGT's DPT head (``vggt/heads/dpt_head.py`` at commit 44b3afb) as a decoder, with VGGT's parameter names.

Structure (C = token width, 2048 for VGGT-1B; O_i = ``out_channels``; F = ``features``):

1. per tapped layer i: LayerNorm over the C channels (``norm``, shared by the 4 layers, eps 1e-5), 1x1 projection
   C->O_i (``projects.{i}``), a sinusoidal UV position embedding x 0.1 added (``pos_embed``), resize
   (``resize_layers.{i}``: ConvTranspose x4, ConvTranspose x2, identity, Conv3x3 stride 2);
2. ``scratch.layer{1..4}_rn``: Conv3x3 O_i->F without bias;
3. ``scratch.refinenet{4..1}``: feature fusion from the coarsest layer up: ``out_conv(up(rcu2(x + rcu1(skip))))``
   with bilinear resizing (align_corners=True) to the next finer grid (x2 for ``refinenet1``), ``rcu1`` absent in
   ``refinenet4``. VGGT's residual units run ``nn.ReLU(inplace=True)`` on their input, so the skip they add is
   ``relu(x)``: ``relu(x) + conv2(relu(conv1(relu(x))))`` (3x3 convs with bias), reproduced here;
4. ``scratch.output_conv1``: Conv3x3 F->F/2; bilinear resize to the input size (align_corners=True); the position
   embedding again; ``scratch.output_conv2``: Conv3x3 F/2->32, ReLU, Conv1x1 32->``output_dim``;
5. activation: channels ``[:-1]`` with ``activation`` (VGGT depth: ``exp``), the last channel is the confidence
   with ``conf_activation`` (``expp1``: 1 + exp).

VGGT-1B's depth head is ``DPTHead(dim_in=2048, output_dim=2, activation="exp", conf_activation="expp1")``:
32,654,562 parameters. ``forward`` returns the prediction ``[B,1,H,W]`` (what the depth pipeline uses);
``forward_outputs`` also returns the confidence (VGGT's names: ``depth``, ``depth_conf``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from anydepth.models.decoders.base import Decoder
from anydepth.models.decoders.sdt import check_features
from anydepth.models.layers.tracing import is_tracing
from anydepth.registry import DECODERS
from anydepth.types import EncoderOutput

__all__ = ["VGGTDPTDecoder", "ACTIVATIONS", "CONF_ACTIVATIONS", "uv_position_embedding"]

ACTIVATIONS: tuple[str, ...] = ("exp", "relu", "linear", "inv_log", "sigmoid")
CONF_ACTIVATIONS: tuple[str, ...] = ("expp1", "expp0", "sigmoid")


def uv_position_embedding(
    h: int, w: int, channels: int, aspect: tuple[Any, Any], dtype: torch.dtype
) -> Tensor:
    """VGGT's sinusoidal UV embedding of an ``h`` x ``w`` grid (``create_uv_grid`` + ``position_grid_to_embed``).

    Grid points span ``[-s_x (w-1)/w, s_x (w-1)/w]`` horizontally and likewise vertically, with
    ``(s_x, s_y) = (W, H) / sqrt(W^2 + H^2)`` for the image size ``aspect = (H, W)`` (computed as VGGT does, from
    the aspect ratio ``W / H``). Each axis gets
    ``channels / 2`` channels ``[sin(p * omega), cos(p * omega)]`` with ``omega_j = 100^(-j / (channels/4))``
    (x first, then y), computed in float64 like VGGT (on CPU) and returned in ``dtype``.

    Returns:
        ``[channels, h, w]`` (not yet scaled by VGGT's 0.1).
    """
    H, W = aspect
    ratio = W / H
    diag = (ratio * ratio + 1.0) ** 0.5
    span_x, span_y = ratio / diag, 1.0 / diag
    xs, ys = _centred_grid(w, span_x), _centred_grid(h, span_y)
    quarter = channels // 4
    omega = 1.0 / 100.0 ** (torch.arange(quarter, dtype=torch.float64) / quarter)  # [C/4]
    ex = xs.double()[:, None] * omega  # [w,C/4]
    ey = ys.double()[:, None] * omega  # [h,C/4]
    emb_x = torch.cat([ex.sin(), ex.cos()], dim=-1).float()  # [w,C/2]
    emb_y = torch.cat([ey.sin(), ey.cos()], dim=-1).float()  # [h,C/2]
    emb = torch.cat([emb_x[None].expand(h, -1, -1), emb_y[:, None].expand(-1, w, -1)], dim=-1)  # [h,w,C]
    return emb.permute(2, 0, 1).to(dtype)


def _centred_grid(n: Any, span: Any) -> Tensor:
    """``n`` float32 points from ``-span (n-1)/n`` to ``span (n-1)/n``, evenly spaced (VGGT's ``linspace``)."""
    if is_tracing():
        # torch.linspace cannot keep a symbolic ``steps`` in an exported graph; the same points via arange (they
        # may differ from linspace's in the last bit, which VGGT's head amplifies to ~1e-5 in the output)
        return (torch.arange(n, dtype=torch.float32) * 2 - (n - 1)) * (span / n)
    # linspace itself, so that eager outputs are bit-identical to VGGT's
    return torch.linspace(-span * (n - 1) / n, span * (n - 1) / n, steps=n, dtype=torch.float32)


class _ResidualConvUnit(nn.Module):
    """``relu(x) + conv2(relu(conv1(relu(x))))`` (VGGT's in-place ReLU makes the skip ``relu(x)``)."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(x)
        return self.conv2(F.relu(self.conv1(x))) + x


class _FeatureFusionBlock(nn.Module):
    """``out_conv(resize(resConfUnit2(x + resConfUnit1(skip))))``; bilinear, align_corners=True."""

    def __init__(self, features: int, has_residual: bool) -> None:
        super().__init__()
        self.out_conv = nn.Conv2d(features, features, 1)
        if has_residual:
            self.resConfUnit1 = _ResidualConvUnit(features)
        self.has_residual = has_residual
        self.resConfUnit2 = _ResidualConvUnit(features)

    def forward(self, x: Tensor, skip: Tensor | None = None, size: tuple[Any, Any] | None = None) -> Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        hw = size if size is not None else (x.shape[-2] * 2, x.shape[-1] * 2)
        x = F.interpolate(x, size=hw, mode="bilinear", align_corners=True)
        return self.out_conv(x)


@DECODERS.register("dpt_vggt")
class VGGTDPTDecoder(Decoder):
    """VGGT's DPT head (see the module docstring for the structure and key names).

    Args:
        in_dims: channels of the 4 tapped layers (all equal: VGGT's ``dim_in``).
        features: fusion width F (256).
        out_channels: per-layer projection widths O_i (``[256, 512, 1024, 1024]``).
        output_dim: output channels including the confidence channel (VGGT depth: 2).
        activation: activation of the prediction channels (``exp`` for VGGT depth).
        conf_activation: activation of the confidence channel (``expp1``).
        pos_embed: add VGGT's UV position embedding after the projections and before ``output_conv2``.

    Raises:
        ValueError: not 4 equal ``in_dims``, unknown options or invalid values.
    """

    OPTIONS: tuple[str, ...] = (
        "features",
        "out_channels",
        "output_dim",
        "activation",
        "conf_activation",
        "pos_embed",
    )

    def __init__(
        self,
        in_dims: Sequence[int],
        *,
        features: int = 256,
        out_channels: Sequence[int] = (256, 512, 1024, 1024),
        output_dim: int = 2,
        activation: str = "exp",
        conf_activation: str = "expp1",
        pos_embed: bool = True,
        **unknown: Any,
    ) -> None:
        super().__init__(in_dims)
        if unknown:
            raise ValueError(
                f"unknown dpt_vggt decoder option(s) {sorted(unknown)}; valid: {list(self.OPTIONS)}"
            )
        if len(self.in_dims) != 4 or len(set(self.in_dims)) != 1:
            raise ValueError(f"dpt_vggt needs 4 tapped layers of one width, got in_dims={list(self.in_dims)}")
        oc = tuple(int(c) for c in out_channels)
        if len(oc) != 4 or min(oc) < 1:
            raise ValueError(f"dpt_vggt out_channels must be 4 positive ints, got {list(oc)}")
        if int(features) < 2 or int(features) % 2:
            raise ValueError(f"dpt_vggt features must be an even int >= 2, got {features}")
        if int(output_dim) != 2:
            raise ValueError(f"dpt_vggt output_dim must be 2 (prediction + confidence), got {output_dim}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"dpt_vggt activation={activation!r} is not one of {list(ACTIVATIONS)}")
        if conf_activation not in CONF_ACTIVATIONS:
            raise ValueError(
                f"dpt_vggt conf_activation={conf_activation!r} is not one of {list(CONF_ACTIVATIONS)}"
            )
        self.features = int(features)
        self.out_channels = oc
        self.output_dim = int(output_dim)
        self.activation = activation
        self.conf_activation = conf_activation
        self.pos_embed = bool(pos_embed)

        c, f = self.in_dims[0], self.features
        self.norm = nn.LayerNorm(c)
        self.projects = nn.ModuleList([nn.Conv2d(c, o, 1) for o in oc])
        self.resize_layers = nn.ModuleList(
            [
                nn.ConvTranspose2d(oc[0], oc[0], kernel_size=4, stride=4),
                nn.ConvTranspose2d(oc[1], oc[1], kernel_size=2, stride=2),
                nn.Identity(),
                nn.Conv2d(oc[3], oc[3], kernel_size=3, stride=2, padding=1),
            ]
        )
        self.scratch = nn.Module()
        for i, o in enumerate(oc, start=1):
            self.scratch.add_module(f"layer{i}_rn", nn.Conv2d(o, f, 3, padding=1, bias=False))
        for i in range(1, 5):
            self.scratch.add_module(f"refinenet{i}", _FeatureFusionBlock(f, has_residual=i < 4))
        self.scratch.output_conv1 = nn.Conv2d(f, f // 2, 3, padding=1)
        self.scratch.output_conv2 = nn.Sequential(
            nn.Conv2d(f // 2, 32, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(32, self.output_dim, 1)
        )

    def config(self) -> dict[str, Any]:
        """The constructor keyword arguments that rebuild this decoder (``in_dims`` excluded)."""
        return {
            "features": self.features,
            "out_channels": list(self.out_channels),
            "output_dim": self.output_dim,
            "activation": self.activation,
            "conf_activation": self.conf_activation,
            "pos_embed": self.pos_embed,
        }

    def _add_pos(self, x: Tensor, out_hw: tuple[Any, Any]) -> Tensor:
        if not self.pos_embed:
            return x
        pe = uv_position_embedding(x.shape[-2], x.shape[-1], x.shape[1], out_hw, x.dtype).to(x.device)
        return x + pe[None] * 0.1

    def forward_raw(self, enc: EncoderOutput, out_hw: tuple[int, int]) -> Tensor:
        """The head's output before activation.

        Args:
            enc: 4 tapped maps ``[B,C,h,w]`` (raw aggregator tokens; class tokens are not used).
            out_hw: (H, W) in pixels, the encoder's input size.

        Returns:
            ``[B, output_dim, H, W]``.
        """
        check_features(enc, self.in_dims, False, "dpt_vggt decoder")
        s: Any = self.scratch  # VGGT's names: layer{i}_rn, refinenet{i}, output_conv1/2
        feats = []
        for i, x in enumerate(enc.features):
            x = self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # LayerNorm over C
            x = self._add_pos(self.projects[i](x), out_hw)
            feats.append(self.resize_layers[i](x))
        l1, l2, l3, l4 = (getattr(s, f"layer{i}_rn")(x) for i, x in enumerate(feats, start=1))
        out = s.refinenet4(l4, size=l3.shape[-2:])
        out = s.refinenet3(out, l3, size=l2.shape[-2:])
        out = s.refinenet2(out, l2, size=l1.shape[-2:])
        out = s.refinenet1(out, l1)
        out = s.output_conv1(out)
        out = F.interpolate(out, size=(out_hw[0], out_hw[1]), mode="bilinear", align_corners=True)
        out = self._add_pos(out, out_hw)
        raw: Tensor = s.output_conv2(out)
        return raw

    def forward_outputs(self, enc: EncoderOutput, out_hw: tuple[int, int]) -> dict[str, Tensor]:
        """Prediction and confidence.

        Returns:
            ``{"depth": [B,1,H,W] (= ``forward``; in the model's output space), "depth_conf": [B,1,H,W]}``.
        """
        raw = self.forward_raw(enc, out_hw)
        pred, conf = raw[:, :-1], raw[:, -1:]
        return {
            "depth": _activate(pred, self.activation),
            "depth_conf": _activate(conf, self.conf_activation),
        }

    def forward(self, enc: EncoderOutput, out_hw: tuple[int, int]) -> Tensor:
        """``[B,1,H,W]`` prediction (confidence dropped)."""
        return _activate(self.forward_raw(enc, out_hw)[:, :-1], self.activation)


def _activate(x: Tensor, kind: str) -> Tensor:
    if kind in ("exp", "expp0"):
        return torch.exp(x)
    if kind == "expp1":
        return 1 + torch.exp(x)
    if kind == "relu":
        return F.relu(x)
    if kind == "sigmoid":
        return torch.sigmoid(x)
    if kind == "inv_log":
        return torch.sign(x) * torch.expm1(x.abs())
    return x  # linear
