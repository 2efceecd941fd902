"""Depth Anything V2's DPT head (``"dpt_dav2"``) and the DPT building blocks Depth Anything 3 reuses.

Structure and parameter names follow the original code (``depth_anything_v2/dpt.py``: ``DPTHead``, and
``util/blocks.py``), so ``depth_head.*`` of a ``depth_anything_v2_vit{s,b,l}.pth`` file loads after removing the
prefix. With C = encoder width, O_i = ``out_channels``, F = ``features``, p = patch size:

1. per tapped layer i: optional class-token readout ``readout_projects.{i}`` (Linear 2C->C + GELU; off in every
   released DAv2 model), ``projects.{i}`` (Conv1x1 C->O_i) and ``resize_layers.{i}`` (ConvTranspose x4,
   ConvTranspose x2, identity, Conv3x3 stride 2);
2. ``scratch.layer{1..4}_rn``: Conv3x3 O_i->F, no bias;
3. ``scratch.refinenet{4,3,2,1}``: feature fusion from the coarsest layer up: ``out_conv(up(rcu2(x + rcu1(skip))))``
   where ``up`` resizes bilinearly (align_corners=True) to the next layer's size (x2 for the last) and
   ``rcu(x) = x + conv2(relu(conv1(relu(x))))`` (3x3 convs with bias). DAv2 builds ``refinenet4.resConfUnit1`` but
   never uses it (the coarsest block has no skip); it is kept so that the files load whole and the parameter
   count equals the original (S 2,728,513; B 10,890,305; L 30,947,009);
4. ``scratch.output_conv1`` (Conv3x3 F->F/2), bilinear resize (align_corners=True) to the input size,
   ``scratch.output_conv2`` (Conv3x3 F/2->32, ReLU, Conv1x1 32->1, ReLU); the model applies one more ReLU.

Output: affine-invariant disparity ``>= min_output`` (DAv2: ``min_output = 0``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from anydepth.models.decoders.base import Decoder
from anydepth.models.decoders.sdt import check_features
from anydepth.models.layers.tracing import is_tracing
from anydepth.registry import DECODERS
from anydepth.types import EncoderOutput

__all__ = [
    "DAv2DPTDecoder",
    "FeatureFusionBlock",
    "ResidualConvUnit",
    "uv_position_embedding",
]


class ResidualConvUnit(nn.Module):
    """Pre-activation residual unit ``x + conv2(relu(conv1(relu(x))))`` (3x3 convs with bias)."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.relu(self.conv1(F.relu(x)))) + x


class FeatureFusionBlock(nn.Module):
    """DPT fusion: ``out_conv(resize(rcu2(x + rcu1(skip))))``; ``resConfUnit1`` only if ``has_residual``."""

    def __init__(self, features: int, has_residual: bool = True) -> None:
        super().__init__()
        self.out_conv = nn.Conv2d(features, features, 1)
        self.resConfUnit1 = ResidualConvUnit(features) if has_residual else None
        self.resConfUnit2 = ResidualConvUnit(features)

    def forward(
        self, x: torch.Tensor, skip: torch.Tensor | None = None, size: Sequence[int] | None = None
    ) -> torch.Tensor:
        """``x`` ``[B,F,h,w]`` (+ ``skip`` of the same shape) -> ``[B,F,*size]`` (``size=None``: ``2h x 2w``)."""
        if skip is not None:
            if self.resConfUnit1 is None:
                raise ValueError("this fusion block has no residual unit for a skip input")
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        if size is None:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        else:
            x = F.interpolate(x, size=(size[0], size[1]), mode="bilinear", align_corners=True)
        return self.out_conv(x)


class _Scratch(nn.Module):
    """Container named as in the original code (``scratch``): layer adapters, fusion chain, output convs."""

    output_conv2: nn.Sequential  # set by each head (its output channels and activations differ)

    def __init__(self, out_channels: Sequence[int], features: int, refinenet4_residual: bool) -> None:
        super().__init__()
        o = list(out_channels)
        self.layer1_rn = nn.Conv2d(o[0], features, 3, padding=1, bias=False)
        self.layer2_rn = nn.Conv2d(o[1], features, 3, padding=1, bias=False)
        self.layer3_rn = nn.Conv2d(o[2], features, 3, padding=1, bias=False)
        self.layer4_rn = nn.Conv2d(o[3], features, 3, padding=1, bias=False)
        self.refinenet1 = FeatureFusionBlock(features)
        self.refinenet2 = FeatureFusionBlock(features)
        self.refinenet3 = FeatureFusionBlock(features)
        self.refinenet4 = FeatureFusionBlock(features, has_residual=refinenet4_residual)
        self.output_conv1 = nn.Conv2d(features, features // 2, 3, padding=1)

    def adapt(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """``layer{i}_rn`` on the four resized maps (strides 4, 8, 16, 32 relative to 4x the token grid)."""
        convs = (self.layer1_rn, self.layer2_rn, self.layer3_rn, self.layer4_rn)
        return [conv(f) for conv, f in zip(convs, feats, strict=True)]


def _output_conv2(
    features: int, out_dim: int, final_relu: bool, layer_norm: nn.LayerNorm | None = None
) -> nn.Sequential:
    """Conv3x3 F/2->32, [``layer_norm`` over channels], ReLU, Conv1x1 32->out_dim, [ReLU]; original indices.

    ``layer_norm`` is a module, not a flag: DA3's Dual-DPT puts one LayerNorm instance into all four ray levels.
    """
    mods: list[nn.Module] = [nn.Conv2d(features // 2, 32, 3, padding=1)]
    if layer_norm is not None:
        mods += [_Permute((0, 2, 3, 1)), layer_norm, _Permute((0, 3, 1, 2))]
    mods += [nn.ReLU(), nn.Conv2d(32, out_dim, 1)]
    if final_relu:
        mods += [nn.ReLU(), nn.Identity()]
    return nn.Sequential(*mods)


class _Permute(nn.Module):
    def __init__(self, dims: tuple[int, ...]) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(*self.dims)


def _resize_layers(out_channels: Sequence[int]) -> nn.ModuleList:
    o = list(out_channels)
    return nn.ModuleList(
        [
            nn.ConvTranspose2d(o[0], o[0], kernel_size=4, stride=4),
            nn.ConvTranspose2d(o[1], o[1], kernel_size=2, stride=2),
            nn.Identity(),
            nn.Conv2d(o[3], o[3], kernel_size=3, stride=2, padding=1),
        ]
    )


def uv_position_embedding(
    h: int, w: int, channels: int, image_hw: tuple[int, int], like: torch.Tensor, omega_0: float = 100.0
) -> torch.Tensor:
    """Depth Anything 3's UV sine-cosine position map (``_add_pos_embed`` before its 0.1 factor).

    Pixel centres of an ``h x w`` map get coordinates ``u = sx (2j - (w-1)) / w``, ``v = sy (2i - (h-1)) / h``
    with spans ``(sx, sy) = (a, 1) / sqrt(a^2 + 1)`` for the image aspect ratio ``a = W/H``. Channels ``[0, C/2)``
    encode ``u`` and ``[C/2, C)`` encode ``v``, each as ``[sin(p w_k), cos(p w_k)]`` with
    ``w_k = omega_0^(-k / (C/4))``, ``k < C/4``.

    Eagerly the coordinates come from ``torch.linspace`` on Python floats, as in DA3 (bit-exact); under
    ``torch.export``/tracing (symbolic sizes) they are computed with tensor arithmetic instead, which agrees to
    float32 rounding (about 1e-7).

    Args:
        h, w: map size (may be symbolic under export).
        channels: C, a multiple of 4.
        image_hw: input image size ``(H, W)`` in pixels (sets the aspect ratio).
        like: tensor whose device is used.
        omega_0: frequency base (100).

    Returns:
        float32 ``[1, C, h, w]``.
    """
    dev, f32 = like.device, torch.float32
    if is_tracing():
        a = torch.ones((), device=dev, dtype=f32) * image_hw[1] / image_hw[0]
        diag = (a * a + 1.0).sqrt()
        u = (torch.arange(w, device=dev, dtype=f32) * 2 - (w - 1)) / w * (a / diag)
        v = (torch.arange(h, device=dev, dtype=f32) * 2 - (h - 1)) / h / diag
    else:
        aspect = image_hw[1] / image_hw[0]
        diag_f = math.sqrt(aspect * aspect + 1.0)
        sx, sy = aspect / diag_f, 1.0 / diag_f
        u = torch.linspace(-sx * (w - 1) / w, sx * (w - 1) / w, steps=w, device=dev, dtype=f32)
        v = torch.linspace(-sy * (h - 1) / h, sy * (h - 1) / h, steps=h, device=dev, dtype=f32)
    quarter = channels // 4
    omega = 1.0 / omega_0 ** (torch.arange(quarter, device=dev, dtype=f32) / quarter)  # [C/4]
    eu, ev = u[:, None] * omega[None], v[:, None] * omega[None]  # [w,C/4], [h,C/4]
    emb_u = torch.cat([eu.sin(), eu.cos()], dim=-1)  # [w,C/2]
    emb_v = torch.cat([ev.sin(), ev.cos()], dim=-1)  # [h,C/2]
    pe = torch.cat([emb_u[None].expand(h, -1, -1), emb_v[:, None].expand(-1, w, -1)], dim=-1)  # [h,w,C]
    return pe.permute(2, 0, 1)[None]


class DPTFamilyBase(Decoder):
    """Shared reassemble/fusion code of the Depth Anything DPT heads (see the module docstring).

    Subclasses set ``self.norm`` (token LayerNorm or ``None``), ``self.pos_embed`` and the output convs, and
    implement ``forward_outputs``.
    """

    norm: nn.Module | None
    pos_embed: bool
    #: some parameters never reach ``forward``'s output (DDP needs ``find_unused_parameters``)
    has_unused_parameters: bool = True

    def __init__(
        self,
        in_dims: Sequence[int],
        features: int,
        out_channels: Sequence[int],
        refinenet4_residual: bool,
        who: str,
    ) -> None:
        super().__init__(in_dims)
        self.who = who
        if len(self.in_dims) != 4 or len(set(self.in_dims)) != 1:
            raise ValueError(f"{who} needs 4 tapped layers of one width, got in_dims={list(self.in_dims)}")
        oc = tuple(int(c) for c in out_channels)
        if len(oc) != 4 or min(oc) < 1:
            raise ValueError(f"{who} out_channels must be 4 positive ints, got {list(oc)}")
        features = int(features)
        if features < 2 or features % 2:
            raise ValueError(f"{who} features must be an even int >= 2, got {features}")
        self.features = features
        self.out_channels = oc
        dim = self.in_dims[0]
        self.projects = nn.ModuleList([nn.Conv2d(dim, c, 1) for c in oc])
        self.resize_layers = _resize_layers(oc)
        self.scratch = _Scratch(oc, features, refinenet4_residual)
        self.norm = None
        self.pos_embed = False

    def _add_pos(self, x: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
        pe = uv_position_embedding(x.shape[-2], x.shape[-1], x.shape[1], out_hw, x)
        return x + 0.1 * pe.to(x.dtype)

    def _tokens(self, i: int, x: torch.Tensor, enc: EncoderOutput) -> torch.Tensor:
        """Per-layer token processing before ``projects`` (readout / norm); ``[B,C,h,w] -> [B,C,h,w]``."""
        if self.norm is not None:
            x = self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return x

    def _reassemble(self, enc: EncoderOutput, out_hw: tuple[int, int], need_cls: bool) -> list[torch.Tensor]:
        check_features(enc, self.in_dims, need_cls, self.who)
        out = []
        for i, x in enumerate(enc.features):
            # NCHW-contiguous like the originals' token reshape (at batch 1): the 1x1 conv picks its kernel, and
            # so its rounding, by memory layout
            x = self.projects[i](self._tokens(i, x, enc).contiguous())
            if self.pos_embed:
                x = self._add_pos(x, out_hw)
            out.append(self.resize_layers[i](x))
        return self.scratch.adapt(out)

    def _fuse(self, layers: list[torch.Tensor], chain: Sequence[FeatureFusionBlock]) -> torch.Tensor:
        """``chain`` = (refinenet1, ..., refinenet4); returns the finest fused map ``[B,F,8h,8w]``."""
        l1, l2, l3, l4 = layers
        out = chain[3](l4, size=l3.shape[-2:])
        out = chain[2](out, l3, size=l2.shape[-2:])
        out = chain[1](out, l2, size=l1.shape[-2:])
        return chain[0](out, l1)

    def _main_chain(self) -> tuple[FeatureFusionBlock, ...]:
        s = self.scratch
        return (s.refinenet1, s.refinenet2, s.refinenet3, s.refinenet4)

    def forward_outputs(self, enc: EncoderOutput, out_hw: tuple[int, int]) -> dict[str, torch.Tensor]:
        """Every output of the head, keyed as in the original code (``depth``, ``depth_conf``, ``sky``, ...)."""
        raise NotImplementedError  # pragma: no cover

    def forward(self, enc: EncoderOutput, out_hw: tuple[int, int]) -> torch.Tensor:
        """``[B,1,H,W]`` prediction in the model's output space (the ``depth`` entry of ``forward_outputs``)."""
        return self.forward_outputs(enc, out_hw)["depth"]


@DECODERS.register("dpt_dav2")
class DAv2DPTDecoder(DPTFamilyBase):
    """Depth Anything V2's ``DPTHead`` + the model's output ReLU (module docstring: structure and names).

    Args:
        in_dims: 4 equal encoder widths C (DINOv2: 384 / 768 / 1024).
        features: fusion width F (DAv2: S 64, B 128, L 256; ``presets.DAV2_HEADS``).
        out_channels: per-layer projection widths O_i (S [48,96,192,384], B [96,192,384,768], L [256,512,1024,1024]).
        use_clstoken: class-token readout (off in every released DAv2 model).
        min_output: added after the final ReLU (DAv2: 0).

    Raises:
        ValueError: bad sizes or unknown keyword arguments.
    """

    OPTIONS: tuple[str, ...] = ("features", "out_channels", "use_clstoken", "min_output")

    def __init__(
        self,
        in_dims: Sequence[int],
        *,
        features: int = 256,
        out_channels: Sequence[int] = (256, 512, 1024, 1024),
        use_clstoken: bool = False,
        min_output: float = 0.0,
        **unknown: Any,
    ) -> None:
        if unknown:
            raise ValueError(
                f"unknown dpt_dav2 decoder option(s) {sorted(unknown)}; valid: {list(self.OPTIONS)}"
            )
        super().__init__(in_dims, features, out_channels, refinenet4_residual=True, who="dpt_dav2 decoder")
        if not min_output >= 0:
            raise ValueError(f"dpt_dav2 min_output must be >= 0, got {min_output}")
        self.use_clstoken = bool(use_clstoken)
        self.min_output = float(min_output)
        c = self.in_dims[0]
        self.readout_projects = (
            nn.ModuleList([nn.Sequential(nn.Linear(2 * c, c), nn.GELU()) for _ in range(4)])
            if self.use_clstoken
            else None
        )
        self.scratch.output_conv2 = _output_conv2(self.features, 1, final_relu=True)

    def config(self) -> dict[str, Any]:
        """The constructor keyword arguments that rebuild this decoder (``in_dims`` excluded)."""
        return {
            "features": self.features,
            "out_channels": list(self.out_channels),
            "use_clstoken": self.use_clstoken,
            "min_output": self.min_output,
        }

    def _tokens(self, i: int, x: torch.Tensor, enc: EncoderOutput) -> torch.Tensor:
        if self.readout_projects is None:
            return x
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # [B,N,C]
        readout = enc.cls_tokens[i][:, None].expand_as(tokens)
        tokens = self.readout_projects[i](torch.cat([tokens, readout], dim=-1))
        return tokens.transpose(1, 2).reshape(b, c, h, w)

    def forward_outputs(self, enc: EncoderOutput, out_hw: tuple[int, int]) -> dict[str, torch.Tensor]:
        """DAv2's single output.

        Args:
            enc: 4 maps ``[B,C,h,w]`` (class tokens ``[B,C]`` only with ``use_clstoken``).
            out_hw: output size, normally the input size ``(p h, p w)`` (DAv2 resizes to exactly that).

        Returns:
            ``{"depth": [B,1,H,W]}``: affine-invariant disparity ``>= min_output`` (the key is the depth
            pipeline's, the values are disparity, as ``DepthModel.output_space`` says).
        """
        layers = self._reassemble(enc, out_hw, self.use_clstoken)
        out = self.scratch.output_conv1(self._fuse(layers, self._main_chain()))
        out = F.interpolate(out, size=(out_hw[0], out_hw[1]), mode="bilinear", align_corners=True)
        out = self.scratch.output_conv2(out)
        return {"depth": F.relu(out) + self.min_output}
