"""DINOv2 Vision Transformer (patch 14, learned absolute position embedding), Meta parameter names.

Our own implementation of the inference path of ``dinov2.models.vision_transformer.DinoVisionTransformer``
(facebookresearch/dinov2), with and without register tokens. The position embedding is learned for a square
grid (518 px / 14 = 37 x 37 for Meta's checkpoints) and resampled bicubically for other sizes exactly as Meta
does: in float32, with a ``+interpolate_offset`` on the target grid passed as a scale factor (0.1, no
antialias for the original models; 0.0 i.e. an explicit output size, with antialias for the ``_reg`` models).

Registered encoders: ``dinov2_vits14``, ``dinov2_vitb14``, ``dinov2_vitl14``, ``dinov2_vitg14``, the
``_reg`` variants (4 registers) and the tiny ``dinov2_test``. Each builder takes overrides of
``DinoV2Config`` fields.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from anydepth.models.encoders.vit_layers import (
    Block,
    Mlp,
    PackedSwiGLU,
    PatchEmbed,
    TappedViT,
    register_family,
    swiglu_hidden_dim,
)
from anydepth.models.layers.tracing import is_tracing

__all__ = ["DinoV2Config", "DinoV2ViT", "DINOV2_CONFIGS", "build_dinov2"]


@dataclass(frozen=True)
class DinoV2Config:
    """Architecture of a DINOv2 ViT.

    Attributes:
        embed_dim: token width ``C``.
        depth: number of transformer blocks.
        num_heads: attention heads.
        patch_size: patch side in pixels.
        in_chans: image channels.
        img_size: image side the position embedding was learned for (its grid is ``img_size // patch_size``
            squared; Meta's checkpoints: 518 -> 37 x 37).
        mlp_ratio: MLP width / ``embed_dim``.
        ffn_layer: ``"mlp"`` (``fc1``/``fc2``) or ``"swiglu"`` (packed ``w12``/``w3``, ViT-g).
        qkv_bias, proj_bias, ffn_bias: biases.
        layerscale_init: LayerScale initial value (``None``: no LayerScale; Meta's hub models use 1.0).
        norm_eps: LayerNorm epsilon (1e-6).
        num_register_tokens: register tokens inserted after the class token (after adding positions).
        interpolate_antialias: antialias when resampling the position embedding.
        interpolate_offset: offset added to the target grid when resampling (0 -> explicit output size).
    """

    embed_dim: int = 384
    depth: int = 12
    num_heads: int = 6
    patch_size: int = 14
    in_chans: int = 3
    img_size: int = 518
    mlp_ratio: float = 4.0
    ffn_layer: str = "mlp"
    qkv_bias: bool = True
    proj_bias: bool = True
    ffn_bias: bool = True
    layerscale_init: float | None = 1.0
    norm_eps: float = 1e-6
    num_register_tokens: int = 0
    interpolate_antialias: bool = False
    interpolate_offset: float = 0.1

    def __post_init__(self) -> None:
        if self.ffn_layer not in ("mlp", "swiglu"):
            raise ValueError(f"ffn_layer must be 'mlp' or 'swiglu', got {self.ffn_layer!r}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.img_size < self.patch_size or self.depth < 1 or self.num_register_tokens < 0:
            raise ValueError(f"invalid DINOv2 config: {self}")

    @property
    def pos_grid(self) -> int:
        """Side of the square grid the position embedding is stored for."""
        return self.img_size // self.patch_size

    def ffn_hidden_dim(self) -> int:
        """Hidden width of each block's feed-forward layer (per branch for SwiGLU)."""
        hidden = int(self.embed_dim * self.mlp_ratio)
        return hidden if self.ffn_layer == "mlp" else swiglu_hidden_dim(hidden, 8)


def _identity_matrix(n_out: int, n_in: int) -> Tensor:
    """``[n_out, n_in]`` with ones where row == column (the identity when ``n_out == n_in``)."""
    return (torch.arange(n_out).unsqueeze(1) == torch.arange(n_in)).float()


def _bicubic_matrix(n_out: int, n_in: int, scale_inv: float) -> Tensor:
    """``[n_out, n_in]`` weights of PyTorch's 1-D bicubic resampling (``align_corners=False``, A = -0.75, border
    indices clamped) with source coordinate ``(i + 0.5) * scale_inv - 0.5``: ``F.interpolate(..., mode="bicubic")``
    along one axis as a matrix. Built from tensor ops only, so ``n_out`` may be symbolic (``torch.export``)."""
    a = -0.75
    src = (torch.arange(n_out, dtype=torch.float32) + 0.5) * scale_inv - 0.5
    i0 = torch.floor(src)
    t = src - i0
    weights = (
        ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a,
        ((a + 2) * t - (a + 3)) * t * t + 1,
        ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1,
        ((a * (2 - t) - 5 * a) * (2 - t) + 8 * a) * (2 - t) - 4 * a,
    )
    cols = torch.arange(n_in, dtype=torch.float32)
    mat = torch.zeros(n_out, n_in)
    for k, wk in enumerate(weights):
        idx = (i0 + (k - 1)).clamp(0, n_in - 1)
        mat = mat + wk.unsqueeze(1) * (idx.unsqueeze(1) == cols).float()
    return mat


class DinoV2ViT(TappedViT):
    """DINOv2 ViT backbone (frozen-encoder inference path).

    Attributes:
        embed_dim: ``C``.
        patch_size: 14 for all DINOv2 ViTs.
        n_blocks: number of blocks.
        num_register_tokens: register tokens between the class token and the patch tokens.
        family: ``"dinov2"``.

    Args:
        config: the architecture.
    """

    family = "dinov2"

    def __init__(self, config: DinoV2Config) -> None:
        super().__init__()
        self.config = config
        c = config
        self.embed_dim = c.embed_dim
        self.num_features = c.embed_dim
        self.patch_size = c.patch_size
        self.n_blocks = c.depth
        self.num_heads = c.num_heads
        self.num_register_tokens = c.num_register_tokens
        self.interpolate_offset = c.interpolate_offset
        self.interpolate_antialias = c.interpolate_antialias

        self.patch_embed = PatchEmbed(c.patch_size, c.in_chans, c.embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + c.pos_grid**2, c.embed_dim))
        if c.num_register_tokens > 0:
            self.register_tokens = nn.Parameter(torch.zeros(1, c.num_register_tokens, c.embed_dim))
        self.mask_token = nn.Parameter(torch.zeros(1, c.embed_dim))  # pretraining only
        self.blocks = nn.ModuleList([self._build_block(i) for i in range(c.depth)])
        self.norm = nn.LayerNorm(c.embed_dim, eps=c.norm_eps)
        self.init_weights()

    def _build_block(self, index: int) -> nn.Module:
        """Block ``index`` (subclasses with per-block variations override this)."""
        c = self.config
        hidden = c.ffn_hidden_dim()
        mlp: nn.Module = (
            Mlp(c.embed_dim, hidden, bias=c.ffn_bias)
            if c.ffn_layer == "mlp"
            else PackedSwiGLU(c.embed_dim, hidden, bias=c.ffn_bias)
        )
        return Block(
            c.embed_dim,
            c.num_heads,
            mlp=mlp,
            norm_eps=c.norm_eps,
            layerscale_init=c.layerscale_init,
            qkv_bias=c.qkv_bias,
            proj_bias=c.proj_bias,
        )

    @property
    def num_prefix_tokens(self) -> int:
        """Class token + register tokens."""
        return 1 + self.num_register_tokens

    def init_weights(self) -> None:
        """Random initialisation like Meta's (truncated normal 0.02 for ``pos_embed`` and linears)."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        if self.num_register_tokens > 0:
            nn.init.normal_(self.register_tokens, std=1e-6)
        nn.init.zeros_(self.mask_token)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def interpolate_pos_encoding(self, h: int, w: int) -> Tensor:
        """Position embedding for an ``h`` x ``w`` patch grid.

        Returns the stored table when the grid equals it (except while tracing); otherwise resamples the patch part bicubically in
        float32 (Meta's rule: scale factor ``(h + offset) / M``, ``(w + offset) / M`` when
        ``interpolate_offset`` is non-zero, else the explicit size ``(h, w)``).

        Returns:
            ``[1, 1 + h*w, C]`` in the dtype of ``pos_embed``.
        """
        pos = self.pos_embed
        n_stored = pos.shape[1] - 1
        # Under export/compile the graph must hold for every size: the stored-grid shortcut would be baked in
        # (and fail at other sizes) when the example input happens to have the stored grid.
        if not is_tracing() and h * w == n_stored and h == w:
            return pos
        side = math.isqrt(n_stored)
        if side * side != n_stored:
            raise ValueError(f"pos_embed holds {n_stored} patch positions, not a square grid")
        dim = pos.shape[-1]
        table = pos.float()
        grid = table[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2)  # [1,C,M,M]
        if is_tracing() and not self.interpolate_antialias:
            # Export/compile with symbolic h, w: F.interpolate would specialise on the scale factor. The same
            # bicubic resampling as two interpolation matrices built from h and w (within float rounding).
            # The stored-grid shortcut stays in the graph as data: identity matrices when h == w == M.
            off = self.interpolate_offset
            same = (torch.ones(h).sum() == side) & (torch.ones(w).sum() == side)
            a_h = torch.where(same, _identity_matrix(h, side), _bicubic_matrix(h, side, side / (h + off)))
            a_w = torch.where(same, _identity_matrix(w, side), _bicubic_matrix(w, side, side / (w + off)))
            grid = torch.einsum("hm,bcmn,wn->bchw", a_h, grid, a_w)
        elif self.interpolate_offset:
            scale = ((h + self.interpolate_offset) / side, (w + self.interpolate_offset) / side)
            grid = F.interpolate(
                grid, scale_factor=scale, mode="bicubic", antialias=self.interpolate_antialias
            )
        else:
            grid = F.interpolate(grid, size=(h, w), mode="bicubic", antialias=self.interpolate_antialias)
        if tuple(grid.shape[-2:]) != (h, w):
            raise ValueError(f"position embedding resampled to {tuple(grid.shape[-2:])}, expected {(h, w)}")
        grid = grid.permute(0, 2, 3, 1).reshape(1, h * w, dim)
        return torch.cat([table[:, :1], grid], dim=1).to(pos.dtype)

    def prepare_tokens(self, x: Tensor) -> tuple[Tensor, int, int]:
        """Patch-embed, prepend the class token, add positions, then insert the register tokens.

        Args:
            x: ``[B,3,H,W]`` normalised image, H and W multiples of ``patch_size``.

        Returns:
            ``([B, 1 + num_register_tokens + h*w, C], h, w)``.
        """
        tokens, h, w = self.patch_embed(x)
        B = tokens.shape[0]
        tokens = torch.cat([self.cls_token.expand(B, -1, -1).to(tokens.dtype), tokens], dim=1)
        tokens = tokens + self.interpolate_pos_encoding(h, w).to(tokens.dtype)
        if self.num_register_tokens > 0:
            regs = self.register_tokens.expand(B, -1, -1).to(tokens.dtype)
            tokens = torch.cat([tokens[:, :1], regs, tokens[:, 1:]], dim=1)
        return tokens, h, w


_REG: dict[str, Any] = {"num_register_tokens": 4, "interpolate_antialias": True, "interpolate_offset": 0.0}
_SIZES: dict[str, dict[str, Any]] = {
    "s": {"embed_dim": 384, "depth": 12, "num_heads": 6},
    "b": {"embed_dim": 768, "depth": 12, "num_heads": 12},
    "l": {"embed_dim": 1024, "depth": 24, "num_heads": 16},
    "g": {"embed_dim": 1536, "depth": 40, "num_heads": 24, "ffn_layer": "swiglu"},
}

# Meta's hub/backbones.py configurations: img_size 518, patch 14, LayerScale (init 1.0), LayerNorm eps 1e-6;
# the _reg models use 4 registers, antialiased resampling and no interpolation offset.
DINOV2_CONFIGS: dict[str, DinoV2Config] = {}
for _s, _kw in _SIZES.items():
    DINOV2_CONFIGS[f"dinov2_vit{_s}14"] = DinoV2Config(**_kw)
    DINOV2_CONFIGS[f"dinov2_vit{_s}14_reg"] = DinoV2Config(**_kw, **_REG)
# Tiny variant for tests: same code path, 8 x 8 position grid, random weights.
DINOV2_CONFIGS["dinov2_test"] = DinoV2Config(embed_dim=32, depth=4, num_heads=2, img_size=112)


# ``build_dinov2(name, **overrides)``; also registers one ENCODERS builder per configuration.
build_dinov2 = register_family(DINOV2_CONFIGS, DinoV2ViT, "DINOv2")
