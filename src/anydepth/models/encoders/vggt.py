"""VGGT's aggregator as a single-image encoder, with VGGT's parameter names.

VGGT (facebookresearch/vggt, ``vggt/models/aggregator.py`` at commit 44b3afb) encodes ``S`` views with:

1. ``patch_embed``: a whole DINOv2 ViT with 4 register tokens (``dinov2_vitl14_reg`` for VGGT-1B: learned 37 x 37
   position table resampled bicubically with antialias and no offset, LayerScale, final LayerNorm eps 1e-6) whose
   normalised patch tokens ``x_norm_patchtokens`` are the aggregator's input tokens;
2. a camera token and ``R`` register tokens (``camera_token [1,2,1,C]``, ``register_token [1,2,R,C]``; row 0 is
   used for the first view, row 1 for the others) prepended to the patch tokens;
3. ``depth`` pairs of blocks, a frame-attention block (``frame_blocks.i``, attention within each view) followed by
   a global-attention block (``global_blocks.i``, attention across all views): pre-norm blocks with LayerNorm eps
   1e-5, per-head q/k LayerNorm, LayerScale and a 2D rotary embedding on q and k (base 100; the first half of
   each head rotates with the row, the second with the column; the camera and register tokens sit at position
   (0, 0), patch (r, c) at (r + 1, c + 1));
4. the output of pair ``i`` is ``concat(frame-block output, global-block output)``: ``2 C`` channels.

Here one image is one sequence of ``S = 1`` view: the global blocks then attend over the same tokens as the frame
blocks (with their own weights), and only row 0 of the camera/register tokens is used. The DPT head reads pairs
``[4, 11, 17, 23]``, patch tokens only; the camera token plays the role of the class token in ``EncoderOutput``.
VGGT normalises its [0, 1] input with ImageNet mean/std inside the aggregator; in anydepth ``DepthModel`` does
that (same constants, same operation) before calling the encoder, so the encoder takes normalised images.

Registered encoders: ``vggt_1b`` (VGGT-1B: 909,112,320 parameters) and the tiny ``vggt_test``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from anydepth.models.encoders.da3 import QKNormAttention, rope2d_angles
from anydepth.models.encoders.dinov2 import DinoV2Config, DinoV2ViT
from anydepth.models.encoders.vit_layers import Block, Mlp, check_block_indices, register_family

__all__ = ["VGGTConfig", "VGGTAggregator", "VGGT_CONFIGS", "build_vggt"]


@dataclass(frozen=True)
class VGGTConfig:
    """Architecture of VGGT's aggregator (``Aggregator.__init__`` arguments; the DINOv2 part derived from them).

    Attributes:
        embed_dim: token width ``C`` of the DINOv2 patch embedding and of the aggregator blocks.
        depth: number of frame/global block pairs.
        num_heads: attention heads (DINOv2 and aggregator blocks).
        patch_size: patch side in pixels.
        img_size: image side the DINOv2 position table was learned for (518 -> 37 x 37).
        patch_embed_depth: number of blocks of the DINOv2 patch embedding (ViT-L: 24).
        mlp_ratio: MLP width / ``embed_dim``.
        num_register_tokens: registers of the DINOv2 ViT and of the aggregator (same count, as in VGGT).
        layerscale_init: LayerScale init of the aggregator blocks (VGGT: 0.01; DINOv2 part: 1.0).
        qk_norm: per-head q/k LayerNorm in the aggregator blocks.
        rope_freq: RoPE base; ``<= 0`` disables the rotary embedding.
        norm_eps: LayerNorm epsilon of the aggregator blocks and q/k norms (PyTorch default 1e-5).
    """

    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    patch_size: int = 14
    img_size: int = 518
    patch_embed_depth: int = 24
    mlp_ratio: float = 4.0
    num_register_tokens: int = 4
    layerscale_init: float = 0.01
    qk_norm: bool = True
    rope_freq: float = 100.0
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.rope_freq > 0 and (self.embed_dim // self.num_heads) % 4:
            raise ValueError(
                f"2D RoPE needs a head dim divisible by 4, got {self.embed_dim // self.num_heads}"
            )
        if self.depth < 1 or self.patch_embed_depth < 1 or self.num_register_tokens < 0:
            raise ValueError(f"invalid VGGT config: {self}")

    def dinov2_config(self) -> DinoV2Config:
        """The DINOv2 patch embedding (VGGT's ``__build_patch_embed__``: antialias, offset 0, LayerScale 1.0)."""
        return DinoV2Config(
            embed_dim=self.embed_dim,
            depth=self.patch_embed_depth,
            num_heads=self.num_heads,
            patch_size=self.patch_size,
            img_size=self.img_size,
            mlp_ratio=self.mlp_ratio,
            layerscale_init=1.0,
            num_register_tokens=self.num_register_tokens,
            interpolate_antialias=True,
            interpolate_offset=0.0,
        )


class VGGTAggregator(nn.Module):
    """VGGT's aggregator for single images (see the module docstring).

    Attributes:
        embed_dim: width of the returned features, ``2 C`` (frame + global tokens).
        token_dim: ``C``.
        patch_size: 14.
        n_blocks: number of frame/global block pairs (tap indices run over pairs, as in VGGT's heads).
        num_prefix_tokens: camera token + register tokens (VGGT's ``patch_start_idx``).
        family: ``"vggt"`` (weights load through ``anydepth.models.weights.vggt``).

    Args:
        config: the architecture.
    """

    family = "vggt"

    def __init__(self, config: VGGTConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        self.token_dim = c.embed_dim
        self.embed_dim = 2 * c.embed_dim
        self.patch_size = c.patch_size
        self.n_blocks = c.depth
        self.num_prefix_tokens = 1 + c.num_register_tokens
        self.patch_embed = DinoV2ViT(c.dinov2_config())
        self.frame_blocks = nn.ModuleList([self._build_block() for _ in range(c.depth)])
        self.global_blocks = nn.ModuleList([self._build_block() for _ in range(c.depth)])
        # row 0: first view (the only one here), row 1: other views; kept so VGGT's files load whole
        self.camera_token = nn.Parameter(torch.randn(1, 2, 1, c.embed_dim) * 1e-6)
        self.register_token = nn.Parameter(torch.randn(1, 2, c.num_register_tokens, c.embed_dim) * 1e-6)

    def _build_block(self) -> nn.Module:
        c = self.config
        attn = QKNormAttention(c.embed_dim, c.num_heads, True, True, c.qk_norm, c.norm_eps)
        return Block(
            c.embed_dim,
            c.num_heads,
            mlp=Mlp(c.embed_dim, int(c.embed_dim * c.mlp_ratio)),
            norm_eps=c.norm_eps,
            layerscale_init=c.layerscale_init,
            attn=attn,
        )

    def _rope(self, h: int, w: int, like: Tensor) -> Tensor | None:
        """RoPE angles for ``[camera, registers, h*w patches]`` on ``like``'s device (the attention takes their
        sines and cosines in q's dtype, as VGGT does)."""
        c = self.config
        if c.rope_freq <= 0:
            return None
        rows = torch.arange(h, device=like.device)[:, None].expand(h, w)
        cols = torch.arange(w, device=like.device)[None, :].expand(h, w)
        patches = torch.stack([rows, cols], dim=-1).reshape(h * w, 2) + 1  # [hw,2] (row + 1, col + 1)
        special = torch.zeros(self.num_prefix_tokens, 2, dtype=patches.dtype, device=like.device)
        return rope2d_angles(torch.cat([special, patches]), c.embed_dim // c.num_heads, c.rope_freq)

    def _run(self, x: Tensor, taps: Sequence[int] | None) -> dict[int, Tensor]:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"VGGT aggregator input must be [B,3,H,W], got {tuple(x.shape)}")
        h, w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        patches = self.patch_embed.forward_features(x)["x_norm_patchtokens"]  # [B,hw,C]
        B = patches.shape[0]
        cam = self.camera_token[:, 0].expand(B, -1, -1).to(patches.dtype)  # [B,1,C]
        reg = self.register_token[:, 0].expand(B, -1, -1).to(patches.dtype)  # [B,R,C]
        tokens = torch.cat([cam, reg, patches], dim=1)  # [B,1+R+hw,C]
        rope = self._rope(h, w, tokens)
        wanted = set(range(self.n_blocks)) if taps is None else set(taps)
        outs: dict[int, Tensor] = {}
        for i in range(max(wanted) + 1):
            tokens = self.frame_blocks[i](tokens, rope)
            frame = tokens
            tokens = self.global_blocks[i](tokens, rope)
            if i in wanted:
                outs[i] = torch.cat([frame, tokens], dim=-1)  # [B,N,2C]
        return outs

    def forward(self, x: Tensor) -> list[Tensor]:
        """All block-pair outputs (VGGT's ``aggregated_tokens_list`` for one view).

        Args:
            x: ``[B,3,H,W]`` ImageNet-normalised RGB, H and W multiples of ``patch_size``.

        Returns:
            ``depth`` tensors ``[B, 1 + R + h*w, 2C]``: camera token, registers, patch tokens.
        """
        outs = self._run(x, None)
        return [outs[i] for i in range(self.n_blocks)]

    def get_intermediate_layers(
        self,
        x: Tensor,
        n: Sequence[int],
        reshape: bool = True,
        return_class_token: bool = True,
        norm: bool = False,
    ) -> tuple[Any, ...]:
        """Outputs of explicit block pairs, registers dropped (the ``EncoderWrapper`` interface).

        Args:
            x: ``[B,3,H,W]`` ImageNet-normalised RGB.
            n: 0-based block-pair indices (VGGT's DPT head: ``[4, 11, 17, 23]``).
            reshape: return patch maps ``[B,2C,h,w]`` instead of tokens ``[B,h*w,2C]``.
            return_class_token: also return the camera token ``[B,2C]`` of each pair.
            norm: must be False: the aggregator has no final norm (VGGT's heads normalise the tokens themselves).

        Raises:
            ValueError: ``norm=True`` or an index out of range.
        """
        if norm:
            raise ValueError(
                "the VGGT aggregator has no final LayerNorm (its heads normalise the tokens): "
                "use use_backbone_norm=False"
            )
        idx = check_block_indices(n, self.n_blocks)
        outs = self._run(x, idx)
        h, w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        result: list[Any] = []
        for i in idx:
            t = outs[i]
            patches = t[:, self.num_prefix_tokens :]
            if reshape:
                patches = patches.reshape(t.shape[0], h, w, -1).permute(0, 3, 1, 2).contiguous()
            result.append((patches, t[:, 0]) if return_class_token else patches)
        return tuple(result)


VGGT_CONFIGS: dict[str, VGGTConfig] = {
    # vggt/models/vggt.py: VGGT(img_size=518, patch_size=14, embed_dim=1024) -> Aggregator defaults
    "vggt_1b": VGGTConfig(),
    # tiny (tests, and the parity reference file): same code path, random weights. Its 5 x 5 position grid differs
    # from the 4 x 4-patch default ONNX export size: exporting at the stored grid bakes DINOv2's no-resample
    # shortcut into the graph.
    "vggt_test": VGGTConfig(embed_dim=16, depth=4, num_heads=2, img_size=70, patch_embed_depth=1),
}

# ``build_vggt(name, **overrides)``; also registers one ENCODERS builder per configuration.
build_vggt = register_family(VGGT_CONFIGS, VGGTAggregator, "VGGT")
