"""Depth Anything 3 ViT backbones (single-image inference path), DA3's parameter names.

Depth Anything 3 (ByteDance-Seed/Depth-Anything-3, ``model/dinov2/vision_transformer.py``) starts from a
DINOv2 ViT (patch 14, learned 37 x 37 position table resampled with Meta's 0.1 offset, LayerScale, no
registers) and, from block ``alt_start`` / ``qknorm_start`` / ``rope_start`` on, adds:

* a ``camera_token`` parameter ``[1, 2, C]`` whose first (reference-view) row replaces the class token before
  block ``alt_start``;
* per-head LayerNorm of q and k (``attn.q_norm`` / ``attn.k_norm``, eps 1e-5);
* a 2D rotary embedding on all tokens with integer positions (class token at (0, 0)): the first half of each
  head rotates with the row, the second half with the column, base ``rope_freq`` (100). Blocks ``i >=
  alt_start`` with odd ``i`` attend "globally" across views; for a single image that is the same attention,
  but with every patch at position (1, 1) instead of (row + 1, col + 1);
* ``cat_token``: each tapped block returns ``concat(output of the last frame-attention block, output)``, i.e.
  ``2 C`` channels; with ``norm=True`` only the second half is normalised (DA3's ``get_intermediate_layers``).

The final LayerNorm uses eps 1e-5 (``nn.LayerNorm`` default), the blocks 1e-6. Multi-view input, reference
view selection and user camera tokens are not implemented (one image in, one set of features out).

Registered encoders: ``da3_vitl14`` (DA3-Large any-view backbone: features 2048-d), ``da3mono_vitl14``
(DA3Mono-Large / DA3Metric-Large: a DINOv2 ViT-L with final-norm eps 1e-5) and the tiny ``da3_test``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from anydepth.models.encoders.dinov2 import DinoV2Config, DinoV2ViT
from anydepth.models.encoders.vit_layers import (
    Block,
    Mlp,
    PackedSwiGLU,
    check_block_indices,
    register_family,
    rope_apply,
)

__all__ = ["DA3Config", "DA3ViT", "DA3_CONFIGS", "build_da3"]


@dataclass(frozen=True)
class DA3Config(DinoV2Config):
    """DINOv2 configuration plus Depth Anything 3's additions (``-1`` disables a feature).

    Attributes:
        final_norm_eps: epsilon of the final LayerNorm (DA3: 1e-5; blocks keep ``norm_eps`` 1e-6).
        alt_start: first block of the alternating frame/global attention; the camera token replaces the class
            token before it.
        qknorm_start: first block with q/k LayerNorm.
        rope_start: first block with the 2D rotary embedding.
        rope_freq: RoPE frequency base.
        cat_token: tapped outputs concatenate the last frame-attention output (``2 C`` channels).
        qk_norm_eps: epsilon of the q/k LayerNorms.
    """

    final_norm_eps: float = 1e-5
    alt_start: int = -1
    qknorm_start: int = -1
    rope_start: int = -1
    rope_freq: float = 100.0
    cat_token: bool = False
    qk_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_register_tokens:
            raise ValueError("Depth Anything 3 backbones have no register tokens")
        if self.rope_start >= 0 and (self.embed_dim // self.num_heads) % 4:
            raise ValueError(
                f"2D RoPE needs a head dim divisible by 4, got {self.embed_dim // self.num_heads}"
            )


class QKNormAttention(nn.Module):
    """Self-attention with optional per-head q/k LayerNorm and DA3's 2D RoPE (Meta-style ``qkv``/``proj``)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, proj_bias: bool, qk_norm: bool, eps: float):
        super().__init__()
        self.num_heads = int(num_heads)
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.q_norm: nn.Module = nn.LayerNorm(self.head_dim, eps=eps) if qk_norm else nn.Identity()
        self.k_norm: nn.Module = nn.LayerNorm(self.head_dim, eps=eps) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim, bias=proj_bias)

    def forward(self, x: Tensor, rope: Tensor | None = None) -> Tensor:
        """``[B,N,C] -> [B,N,C]``; ``rope``: float32 angles ``[N, head_dim]`` (``rope2d_angles``: row half, column
        half). As in DA3 and VGGT, the sines and cosines are taken in q's dtype after casting the angles to it
        (so a float16 model rotates with float16 tables, and q, k and v keep one dtype)."""
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # [B,heads,N,head_dim]
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            ang = rope.to(q.dtype)
            sin, cos = ang.sin(), ang.cos()
            q, k = _rope2d(q, sin, cos), _rope2d(k, sin, cos)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(B, N, C))


def _rope2d(x: Tensor, sin: Tensor, cos: Tensor) -> Tensor:
    d = x.shape[-1] // 2
    return torch.cat(
        [rope_apply(x[..., :d], sin[:, :d], cos[:, :d]), rope_apply(x[..., d:], sin[:, d:], cos[:, d:])], -1
    )


def rope2d_angles(positions: Tensor, head_dim: int, base: float) -> Tensor:
    """DA3's (and VGGT's) 2D RoPE angles.

    Args:
        positions: ``[N, 2]`` integer (row, column) positions.
        head_dim: channels per head (multiple of 4).
        base: frequency base.

    Returns:
        float32 ``[N, head_dim]`` in radians: the first half encodes rows, the second columns; within a half,
        frequency ``j`` is at ``j`` and ``j + head_dim/4``.
    """
    d = head_dim // 2
    inv_freq = 1.0 / (base ** (torch.arange(0, d, 2, device=positions.device).float() / d))  # [d/2]
    parts = []
    for axis in (0, 1):
        ang = positions[:, axis].to(torch.float32)[:, None] * inv_freq[None, :]  # [N,d/2]
        parts += [ang, ang]
    return torch.cat(parts, dim=-1)


def rope2d_tables(
    positions: Tensor, head_dim: int, base: float, dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor]:
    """``(sin, cos)`` of ``rope2d_angles``, each ``[N, head_dim]`` in ``dtype`` (angles cast first, as DA3 does)."""
    ang = rope2d_angles(positions, head_dim, base).to(dtype)
    return ang.sin(), ang.cos()


class DA3ViT(DinoV2ViT):
    """Depth Anything 3 ViT backbone for single images.

    Attributes:
        embed_dim: width of the returned features: ``2 C`` with ``cat_token``, else ``C`` (the token width is
            ``config.embed_dim``).
        family: ``"dinov2"`` (its checkpoints use DINOv2's Meta names plus ``camera_token``/``q_norm``/``k_norm``).
    """

    config: DA3Config

    def __init__(self, config: DA3Config) -> None:
        super().__init__(config)
        c = config
        self.norm = nn.LayerNorm(c.embed_dim, eps=c.final_norm_eps)
        if c.alt_start >= 0:
            self.camera_token = nn.Parameter(torch.randn(1, 2, c.embed_dim))
        self.embed_dim = 2 * c.embed_dim if c.cat_token else c.embed_dim

    def _build_block(self, index: int) -> nn.Module:
        c: DA3Config = self.config
        hidden = c.ffn_hidden_dim()
        mlp: nn.Module = (
            Mlp(c.embed_dim, hidden, bias=c.ffn_bias)
            if c.ffn_layer == "mlp"
            else PackedSwiGLU(c.embed_dim, hidden, bias=c.ffn_bias)
        )
        qk_norm = 0 <= c.qknorm_start <= index
        attn = QKNormAttention(c.embed_dim, c.num_heads, c.qkv_bias, c.proj_bias, qk_norm, c.qk_norm_eps)
        return Block(
            c.embed_dim,
            c.num_heads,
            mlp=mlp,
            norm_eps=c.norm_eps,
            layerscale_init=c.layerscale_init,
            attn=attn,
        )

    def _rope(self, h: int, w: int, device: torch.device, frame: bool) -> Tensor:
        """Angles for ``[cls, h*w patches]``: frame attention uses (row+1, col+1), global attention (1, 1)."""
        if frame:
            # broadcast + reshape rather than repeat_interleave/repeat: exports to ONNX with a dynamic grid
            rows = torch.arange(h, device=device)[:, None].expand(h, w).reshape(-1)
            cols = torch.arange(w, device=device)[None, :].expand(h, w).reshape(-1)
            pos = torch.stack([rows, cols], dim=-1) + 1
        else:
            pos = torch.ones(h * w, 2, dtype=torch.long, device=device)
        pos = torch.cat([torch.zeros(1, 2, dtype=pos.dtype, device=device), pos], dim=0)
        return rope2d_angles(pos, self.config.embed_dim // self.config.num_heads, self.config.rope_freq)

    def _run_blocks(self, x: Tensor, taps: Sequence[int] | None = None) -> tuple[Tensor, dict[int, Tensor]]:
        c: DA3Config = self.config
        tokens, h, w = self.prepare_tokens(x)
        B = tokens.shape[0]
        ropes = None
        if c.rope_start >= 0:
            ropes = (self._rope(h, w, tokens.device, True), self._rope(h, w, tokens.device, False))
        wanted = set(taps or ())
        last = max(wanted) if wanted else self.n_blocks - 1
        outs: dict[int, Tensor] = {}
        frame_out = tokens
        for i, blk in enumerate(self.blocks):
            if i > last:
                break
            if i == c.alt_start:
                cam = self.camera_token[:, :1].expand(B, -1, -1).to(tokens.dtype)
                tokens = torch.cat([cam, tokens[:, 1:]], dim=1)
            is_global = 0 <= c.alt_start <= i and i % 2 == 1
            rope = None if ropes is None or i < c.rope_start else ropes[1 if is_global else 0]
            tokens = blk(tokens, rope)
            if not is_global:
                frame_out = tokens
            if i in wanted:
                outs[i] = torch.cat([frame_out, tokens], dim=-1) if c.cat_token else tokens
        return tokens, outs

    def get_intermediate_layers(
        self,
        x: Tensor,
        n: Sequence[int],
        reshape: bool = True,
        return_class_token: bool = True,
        norm: bool = False,
    ) -> tuple[Any, ...]:
        """Outputs of explicit blocks (see ``DinoV2ViT.get_intermediate_layers``).

        With ``cat_token`` the maps have ``2 C`` channels and ``norm=True`` normalises only the second half,
        as DA3 does; the class token is taken from the same (possibly normalised) ``2 C`` vector (DA3 returns it
        before normalisation).
        """
        idx = check_block_indices(n, self.n_blocks)
        _, outs = self._run_blocks(x, idx)
        h, w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        C = self.config.embed_dim
        result: list[Any] = []
        for i in idx:
            t = outs[i]
            if norm:
                t = (
                    torch.cat([t[..., :C], self.norm(t[..., C:])], dim=-1)
                    if self.config.cat_token
                    else self.norm(t)
                )
            patches = t[:, 1:]
            if reshape:
                patches = patches.reshape(t.shape[0], h, w, -1).permute(0, 3, 1, 2).contiguous()
            result.append((patches, t[:, 0]) if return_class_token else patches)
        return tuple(result)


_ANYVIEW_L: dict[str, Any] = {"alt_start": 8, "qknorm_start": 8, "rope_start": 8, "cat_token": True}
DA3_CONFIGS: dict[str, DA3Config] = {
    # configs/da3-large.yaml (taps [11, 15, 19, 23]); configs/da3mono-large.yaml (taps [4, 11, 17, 23])
    "da3_vitl14": DA3Config(embed_dim=1024, depth=24, num_heads=16, **_ANYVIEW_L),
    "da3mono_vitl14": DA3Config(embed_dim=1024, depth=24, num_heads=16),
    "da3_test": DA3Config(
        embed_dim=32,
        depth=4,
        num_heads=2,
        img_size=112,
        alt_start=2,
        qknorm_start=2,
        rope_start=2,
        cat_token=True,
    ),
}


# ``build_da3(name, **overrides)``; also registers one ENCODERS builder per configuration.
build_da3 = register_family(DA3_CONFIGS, DA3ViT, "DA3")
