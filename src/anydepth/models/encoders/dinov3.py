"""DINOv3 Vision Transformer (patch 16, 2D RoPE, storage/register tokens), Meta parameter names.

Our own implementation of the inference path of ``dinov3.models.vision_transformer.DinoVisionTransformer``
(facebookresearch/dinov3): patch embedding -> ``[cls, storage tokens, patches]`` -> pre-norm blocks with
LayerScale and RoPE on the patch tokens -> final LayerNorm. State-dict keys equal Meta's, so Meta's ``.pth``
files load with ``load_state_dict(strict=True)``; other layouts go through ``convert.to_meta``.

Registered encoders (``anydepth.registry.ENCODERS``): ``dinov3_vits16``, ``dinov3_vitsplus16``,
``dinov3_vitb16``, ``dinov3_vitl16``, ``dinov3_vitl16plus``, ``dinov3_vith16plus``, ``dinov3_vit7b16`` and
the tiny ``dinov3_test``. Each builder takes overrides of ``DinoV3Config`` fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from anydepth.models.encoders.vit_layers import (
    Block,
    Mlp,
    PatchEmbed,
    RopePositionEmbedding,
    SwiGLU,
    TappedViT,
    register_family,
    swiglu_hidden_dim,
)

__all__ = ["DinoV3Config", "DinoV3ViT", "DINOV3_CONFIGS", "build_dinov3"]

_FFN_ALIGN = {"swiglu": 8, "swiglu32": 32, "swiglu64": 64, "swiglu128": 128}


@dataclass(frozen=True)
class DinoV3Config:
    """Architecture of a DINOv3 ViT (field names follow Meta's constructor arguments where they exist).

    Attributes:
        embed_dim: token width ``C``.
        depth: number of transformer blocks.
        num_heads: attention heads (``embed_dim / num_heads`` must be divisible by 4 for RoPE).
        patch_size: patch side in pixels.
        in_chans: image channels.
        ffn_ratio: MLP width / ``embed_dim`` (before the SwiGLU 2/3 rule).
        ffn_layer: ``"mlp"`` (GELU ``fc1``/``fc2``) or ``"swiglu"``/``"swiglu32"``/``"swiglu64"``/``"swiglu128"``
            (``w1``/``w2``/``w3``, hidden width aligned to 8/32/64/128).
        qkv_bias: learn a qkv bias.
        mask_k_bias: force the K third of the qkv bias to zero (all released DINOv3 ViTs).
        proj_bias: attention output projection bias.
        ffn_bias: feed-forward biases.
        layerscale_init: LayerScale initial value (``None``: no LayerScale).
        norm_eps: LayerNorm epsilon (Meta's ``layernormbf16``: 1e-5).
        n_storage_tokens: register ("storage") tokens after the class token.
        untie_cls_and_patch_norms: separate final norm ``cls_norm`` for the class and storage tokens.
        untie_global_and_local_cls_norm: build ``local_cls_norm`` (used only in Meta's training on local
            crops; never used here, present so checkpoints that carry it load strictly).
        rope_base: RoPE frequency base (``None`` to use ``rope_min_period``/``rope_max_period``).
        rope_min_period, rope_max_period: alternative RoPE parametrisation.
        rope_normalize_coords: ``"separate"``, ``"max"`` or ``"min"``.
    """

    embed_dim: int = 384
    depth: int = 12
    num_heads: int = 6
    patch_size: int = 16
    in_chans: int = 3
    ffn_ratio: float = 4.0
    ffn_layer: str = "mlp"
    qkv_bias: bool = True
    mask_k_bias: bool = True
    proj_bias: bool = True
    ffn_bias: bool = True
    layerscale_init: float | None = 1e-5
    norm_eps: float = 1e-5
    n_storage_tokens: int = 4
    untie_cls_and_patch_norms: bool = False
    untie_global_and_local_cls_norm: bool = False
    rope_base: float | None = 100.0
    rope_min_period: float | None = None
    rope_max_period: float | None = None
    rope_normalize_coords: str = "separate"

    def __post_init__(self) -> None:
        if self.ffn_layer != "mlp" and self.ffn_layer not in _FFN_ALIGN:
            raise ValueError(
                f"ffn_layer must be 'mlp' or one of {sorted(_FFN_ALIGN)}, got {self.ffn_layer!r}"
            )
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if (self.embed_dim // self.num_heads) % 4:
            raise ValueError(f"head dim {self.embed_dim // self.num_heads} must be divisible by 4 for RoPE")
        if self.depth < 1 or self.n_storage_tokens < 0 or self.patch_size < 1:
            raise ValueError(f"invalid DINOv3 config: {self}")

    def ffn_hidden_dim(self) -> int:
        """Hidden width of each block's feed-forward layer."""
        hidden = int(self.embed_dim * self.ffn_ratio)
        if self.ffn_layer == "mlp":
            return hidden
        return swiglu_hidden_dim(hidden, _FFN_ALIGN[self.ffn_layer])


class DinoV3ViT(TappedViT):
    """DINOv3 ViT backbone (frozen-encoder inference path).

    Attributes:
        embed_dim: ``C``.
        patch_size: 16 for all DINOv3 ViTs.
        n_blocks: number of blocks (valid tap indices are ``0 .. n_blocks-1``).
        n_storage_tokens: register tokens between the class token and the patch tokens.
        family: ``"dinov3"`` (used by the weight loader to reject DINOv2 files).

    Args:
        config: the architecture.
    """

    family = "dinov3"

    def __init__(self, config: DinoV3Config) -> None:
        super().__init__()
        self.config = config
        c = config
        self.embed_dim = c.embed_dim
        self.num_features = c.embed_dim
        self.patch_size = c.patch_size
        self.n_blocks = c.depth
        self.num_heads = c.num_heads
        self.n_storage_tokens = c.n_storage_tokens

        self.patch_embed = PatchEmbed(c.patch_size, c.in_chans, c.embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.embed_dim))
        if c.n_storage_tokens > 0:
            self.storage_tokens = nn.Parameter(torch.zeros(1, c.n_storage_tokens, c.embed_dim))
        # Pretraining-only (masked-image modelling); kept so Meta checkpoints load strictly.
        self.mask_token = nn.Parameter(torch.zeros(1, c.embed_dim))
        self.rope_embed = RopePositionEmbedding(
            c.embed_dim // c.num_heads,
            base=c.rope_base,
            min_period=c.rope_min_period,
            max_period=c.rope_max_period,
            normalize_coords=c.rope_normalize_coords,  # type: ignore[arg-type]
        )
        hidden = c.ffn_hidden_dim()
        self.blocks = nn.ModuleList(
            [
                Block(
                    c.embed_dim,
                    c.num_heads,
                    mlp=(
                        Mlp(c.embed_dim, hidden, bias=c.ffn_bias)
                        if c.ffn_layer == "mlp"
                        else SwiGLU(c.embed_dim, hidden, bias=c.ffn_bias)
                    ),
                    norm_eps=c.norm_eps,
                    layerscale_init=c.layerscale_init,
                    qkv_bias=c.qkv_bias,
                    proj_bias=c.proj_bias,
                    mask_k_bias=c.mask_k_bias,
                )
                for _ in range(c.depth)
            ]
        )
        self.norm = nn.LayerNorm(c.embed_dim, eps=c.norm_eps)
        self.cls_norm = nn.LayerNorm(c.embed_dim, eps=c.norm_eps) if c.untie_cls_and_patch_norms else None
        self.local_cls_norm = (
            nn.LayerNorm(c.embed_dim, eps=c.norm_eps) if c.untie_global_and_local_cls_norm else None
        )
        self.init_weights()

    @property
    def num_prefix_tokens(self) -> int:
        """Class token + storage tokens."""
        return 1 + self.n_storage_tokens

    def init_weights(self) -> None:
        """Random initialisation like Meta's ``init_weights`` (truncated normal 0.02 linears, zero biases)."""
        nn.init.normal_(self.cls_token, std=0.02)
        if self.n_storage_tokens > 0:
            nn.init.normal_(self.storage_tokens, std=0.02)
        nn.init.zeros_(self.mask_token)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                m.reset_parameters()

    def prepare_tokens(self, x: Tensor) -> tuple[Tensor, int, int]:
        """Patch-embed and prepend the class and storage tokens.

        Args:
            x: ``[B,3,H,W]`` normalised image, H and W multiples of ``patch_size``.

        Returns:
            ``([B, 1 + n_storage_tokens + h*w, C], h, w)``.
        """
        tokens, h, w = self.patch_embed(x)
        B = tokens.shape[0]
        prefix = [self.cls_token.expand(B, -1, -1)]
        if self.n_storage_tokens > 0:
            prefix.append(self.storage_tokens.expand(B, -1, -1))
        return torch.cat([*prefix, tokens], dim=1), h, w

    def _norm_tokens(self, x: Tensor) -> Tensor:
        """Final norm of all tokens ``[B,N,C]`` (``cls_norm`` on the prefix tokens when untied)."""
        if self.cls_norm is None:
            return self.norm(x)
        p = self.num_prefix_tokens
        return torch.cat([self.cls_norm(x[:, :p]), self.norm(x[:, p:])], dim=1)

    prefix_key = "x_storage_tokens"

    def _block_args(self, h: int, w: int) -> tuple[Any, ...]:
        return (self.rope_embed(h, w),)


# Meta's hub/backbones.py configurations (rope base 100, "separate" coords, 4 storage tokens, masked K bias,
# LayerScale 1e-5, LayerNorm eps 1e-5). ViT-L LVD-1689M has no local_cls_norm; the SAT-493M ViT-L file has one:
# build it with ``untie_global_and_local_cls_norm=True`` or let the loader drop it (it is unused at inference).
DINOV3_CONFIGS: dict[str, DinoV3Config] = {
    "dinov3_vits16": DinoV3Config(embed_dim=384, depth=12, num_heads=6),
    "dinov3_vitsplus16": DinoV3Config(
        embed_dim=384, depth=12, num_heads=6, ffn_ratio=6.0, ffn_layer="swiglu"
    ),
    "dinov3_vitb16": DinoV3Config(embed_dim=768, depth=12, num_heads=12),
    "dinov3_vitl16": DinoV3Config(embed_dim=1024, depth=24, num_heads=16),
    "dinov3_vitl16plus": DinoV3Config(
        embed_dim=1024, depth=24, num_heads=16, ffn_ratio=6.0, ffn_layer="swiglu"
    ),
    "dinov3_vith16plus": DinoV3Config(
        embed_dim=1280, depth=32, num_heads=20, ffn_ratio=6.0, ffn_layer="swiglu"
    ),
    "dinov3_vit7b16": DinoV3Config(
        embed_dim=4096,
        depth=40,
        num_heads=32,
        ffn_ratio=3.0,
        ffn_layer="swiglu64",
        qkv_bias=False,
        untie_global_and_local_cls_norm=True,
    ),
    # Tiny variant for tests: same code path, random weights.
    "dinov3_test": DinoV3Config(embed_dim=32, depth=4, num_heads=2),
}


# ``build_dinov3(name, **overrides)``; also registers one ENCODERS builder per configuration.
build_dinov3 = register_family(DINOV3_CONFIGS, DinoV3ViT, "DINOv3")
