"""Building blocks shared by the DINOv3 and DINOv2 ViT backbones (plain PyTorch, inference-oriented).

Module and parameter names follow Meta's original DINOv2/DINOv3 code so that Meta's checkpoints load as
they are: ``patch_embed.proj``, ``attn.qkv`` (+ ``bias_mask``), ``attn.proj``, ``ls1.gamma``, ``mlp.fc1`` /
``mlp.fc2`` (GELU MLP), ``mlp.w1`` / ``w2`` / ``w3`` (DINOv3 SwiGLU), ``mlp.w12`` / ``w3`` (DINOv2 packed
SwiGLU), ``rope_embed.periods``.

Shapes: ``B`` batch, ``N`` tokens (prefix tokens + ``h*w`` patch tokens), ``C`` embedding dim, ``h, w`` the
patch grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import fields, replace
from typing import Any, Literal, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "apply_overrides",
    "check_block_indices",
    "PatchEmbed",
    "LayerScale",
    "Mlp",
    "SwiGLU",
    "PackedSwiGLU",
    "QKVLinear",
    "Attention",
    "Block",
    "RopePositionEmbedding",
    "rope_rotate_half",
    "rope_apply",
    "swiglu_hidden_dim",
]

ConfigT = TypeVar("ConfigT")


def apply_overrides(config: ConfigT, overrides: dict[str, Any], what: str) -> ConfigT:
    """Return the dataclass ``config`` with ``overrides`` applied.

    Args:
        config: a frozen dataclass instance (backbone configuration).
        overrides: field name -> new value.
        what: name used in the error message (e.g. ``"dinov3_vits16"``).

    Raises:
        ValueError: naming the unknown keys and listing the valid ones.
    """
    valid = [f.name for f in fields(config)]  # type: ignore[arg-type]
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ValueError(f"{what}: unknown config override(s) {unknown}; valid keys: {', '.join(valid)}")
    return replace(config, **overrides)  # type: ignore[type-var]


class TappedViT(nn.Module):
    """Shared forward logic of the project's ViTs: run blocks, tap explicit ones, Meta-style outputs.

    Subclasses define ``prepare_tokens(x) -> (tokens [B,N,C], h, w)``, ``blocks``, ``norm``, ``n_blocks``,
    ``patch_size`` and ``num_prefix_tokens``; they may override ``_block_args`` (extra block inputs, e.g. RoPE) and
    ``_norm_tokens`` (the final norm). ``prefix_key`` names the register tokens in ``forward_features``.
    """

    prefix_key = "x_norm_regtokens"
    blocks: nn.ModuleList
    norm: nn.Module
    n_blocks: int
    patch_size: int

    @property
    def num_prefix_tokens(self) -> int:
        """Class token + register tokens (defined by subclasses)."""
        raise NotImplementedError

    def prepare_tokens(self, x: Tensor) -> tuple[Tensor, int, int]:
        """Embed ``x`` into ``([B,N,C] tokens, h, w)`` (defined by subclasses)."""
        raise NotImplementedError

    def _block_args(self, h: int, w: int) -> tuple[Any, ...]:
        return ()

    def _norm_tokens(self, x: Tensor) -> Tensor:
        out: Tensor = self.norm(x)
        return out

    def _run_blocks(self, x: Tensor, taps: Sequence[int] | None = None) -> tuple[Tensor, dict[int, Tensor]]:
        tokens, h, w = self.prepare_tokens(x)
        extra = self._block_args(h, w)
        wanted = set(taps or ())
        last = max(wanted) if wanted else self.n_blocks - 1
        outs: dict[int, Tensor] = {}
        for i, blk in enumerate(self.blocks):
            if i > last:
                break  # blocks after the last requested one are not run
            tokens = blk(tokens, *extra)
            if i in wanted:
                outs[i] = tokens
        return tokens, outs

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        """Run all blocks.

        Args:
            x: ``[B,3,H,W]`` ImageNet-normalised RGB, H and W multiples of ``patch_size``.

        Returns:
            ``x_norm_clstoken [B,C]``, the normed register tokens ``[B,R,C]`` under ``prefix_key``,
            ``x_norm_patchtokens [B,h*w,C]`` and ``x_prenorm [B,N,C]`` (Meta's keys).
        """
        tokens, _ = self._run_blocks(x)
        normed = self._norm_tokens(tokens)
        p = self.num_prefix_tokens
        return {
            "x_norm_clstoken": normed[:, 0],
            self.prefix_key: normed[:, 1:p],
            "x_norm_patchtokens": normed[:, p:],
            "x_prenorm": tokens,
        }

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Same as ``forward_features``."""
        return self.forward_features(x)

    def get_intermediate_layers(
        self,
        x: Tensor,
        n: Sequence[int],
        reshape: bool = True,
        return_class_token: bool = True,
        norm: bool = False,
    ) -> tuple[Any, ...]:
        """Outputs of explicit blocks, register tokens dropped (Meta's ``get_intermediate_layers`` semantics).

        Args:
            x: ``[B,3,H,W]`` ImageNet-normalised RGB, H and W multiples of ``patch_size``.
            n: 0-based block indices, returned in the given order (an int is rejected: Meta reads it as
                "the last n blocks", a frequent source of off-by-one tap errors).
            reshape: return patch tokens as ``[B,C,h,w]`` maps instead of ``[B,h*w,C]``.
            return_class_token: pair each map with its class token ``[B,C]``.
            norm: apply the final norm to the tapped tokens.

        Returns:
            ``((patch, cls), ...)`` if ``return_class_token`` else ``(patch, ...)``.
        """
        idx = check_block_indices(n, self.n_blocks)
        _, outs = self._run_blocks(x, idx)
        ps = self.patch_size
        h, w = x.shape[-2] // ps, x.shape[-1] // ps
        p = self.num_prefix_tokens
        result: list[Any] = []
        for i in idx:
            t = self._norm_tokens(outs[i]) if norm else outs[i]
            patches = t[:, p:]
            if reshape:
                patches = patches.reshape(t.shape[0], h, w, -1).permute(0, 3, 1, 2).contiguous()
            result.append((patches, t[:, 0]) if return_class_token else patches)
        return tuple(result)


def register_family(configs: dict[str, Any], model_cls: Any, family: str) -> Any:
    """Register one ``ENCODERS`` builder per entry of ``configs`` and return ``build(name, **overrides)``.

    Each registered builder takes keyword overrides of the config dataclass's fields (unknown keys raise
    ``ValueError``) and returns ``model_cls(config)`` with random weights; load weights with
    ``anydepth.models.encoders.loading.load_backbone_weights``.
    """
    from anydepth.registry import ENCODERS

    def build(name: str, **overrides: Any) -> Any:
        if name not in configs:
            raise KeyError(f"unknown {family} configuration {name!r}; valid: {', '.join(configs)}")
        return model_cls(apply_overrides(configs[name], overrides, name))

    def make(name: str) -> Any:
        def builder(**overrides: Any) -> Any:
            return build(name, **overrides)

        builder.__name__ = builder.__qualname__ = name
        builder.__doc__ = (
            f"Build ``{name}`` ({configs[name]}) with random weights; keyword overrides change "
            f"``{type(configs[name]).__name__}`` fields."
        )
        return builder

    for name in configs:
        ENCODERS.add(name, make(name))
    return build


def check_block_indices(n: Sequence[int], n_blocks: int) -> list[int]:
    """Validate explicit 0-based block indices for ``get_intermediate_layers``.

    Raises:
        TypeError: if ``n`` is an int (Meta reads an int as "the last n blocks"; we require explicit indices).
        ValueError: if ``n`` is empty or an index is outside ``0..n_blocks-1``.
    """
    if isinstance(n, int) or not isinstance(n, Sequence):
        raise TypeError(
            f"n must be a sequence of 0-based block indices, got {n!r}; for the last k blocks pass "
            f"range({n_blocks} - k, {n_blocks})"
        )
    idx = [int(i) for i in n]
    bad = [i for i in idx if not 0 <= i < n_blocks]
    if not idx or bad:
        raise ValueError(f"block indices {idx} must be non-empty and within 0..{n_blocks - 1}")
    return idx


class PatchEmbed(nn.Module):
    """Non-overlapping patch embedding: a ``patch_size`` x ``patch_size`` convolution with stride ``patch_size``.

    Args:
        patch_size: patch side in pixels.
        in_chans: input channels.
        embed_dim: output channels ``C``.
    """

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = int(patch_size)
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> tuple[Tensor, int, int]:
        """Embed an image batch.

        Args:
            x: ``[B,in_chans,H,W]``; H and W must be multiples of ``patch_size``.

        Returns:
            ``([B,h*w,C], h, w)`` with ``h = H / patch_size`` and ``w = W / patch_size`` (row-major tokens).
        """
        p = self.patch_size
        H, W = x.shape[-2], x.shape[-1]
        if H % p or W % p:
            raise ValueError(f"input size {H}x{W} is not a multiple of the patch size {p}")
        x = self.proj(x)  # [B,C,h,w]
        h, w = x.shape[-2], x.shape[-1]
        return x.flatten(2).transpose(1, 2), h, w


class LayerScale(nn.Module):
    """Per-channel residual scaling ``x * gamma``.

    Args:
        dim: channels.
        init_value: initial value of every entry of ``gamma``.
    """

    def __init__(self, dim: int, init_value: float = 1e-5) -> None:
        super().__init__()
        self.init_value = float(init_value)
        self.gamma = nn.Parameter(torch.full((dim,), self.init_value))

    def reset_parameters(self) -> None:
        nn.init.constant_(self.gamma, self.init_value)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    """Two-layer GELU MLP (``fc1`` -> exact GELU -> ``fc2``)."""

    def __init__(self, dim: int, hidden: int, bias: bool = True) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


def swiglu_hidden_dim(hidden: int, align_to: int) -> int:
    """Width of a SwiGLU hidden layer that replaces an MLP of width ``hidden``.

    Two thirds of ``hidden`` (truncated), rounded up to a multiple of ``align_to``. This is the rule of
    DINOv3's ``SwiGLUFFN`` (``align_to`` 8, or 64 for the 7B) and of DINOv2's ``SwiGLUFFNFused`` (8).
    """
    d = int(hidden * 2 / 3)
    return d + (-d % align_to)


class SwiGLU(nn.Module):
    """DINOv3 SwiGLU feed-forward: ``w3(silu(w1 x) * w2 x)`` with separate ``w1``/``w2``/``w3``."""

    def __init__(self, dim: int, hidden: int, bias: bool = True) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=bias)
        self.w2 = nn.Linear(dim, hidden, bias=bias)
        self.w3 = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.w3(F.silu(self.w1(x)) * self.w2(x))


class PackedSwiGLU(nn.Module):
    """DINOv2 SwiGLU feed-forward with the gate and value projections packed in ``w12`` (gate first)."""

    def __init__(self, dim: int, hidden: int, bias: bool = True) -> None:
        super().__init__()
        self.w12 = nn.Linear(dim, 2 * hidden, bias=bias)
        self.w3 = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        x1, x2 = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(x1) * x2)


class QKVLinear(nn.Linear):
    """Fused q/k/v projection whose K bias can be masked to zero (DINOv3's ``LinearKMaskedBias``).

    With ``mask_k_bias`` the module owns a ``bias_mask`` buffer (1 for the q and v thirds, 0 for the k third),
    stored in the state dict under Meta's name ``attn.qkv.bias_mask``; the effective bias is
    ``bias * bias_mask``, so whatever the k third of ``bias`` holds has no effect.
    """

    def __init__(self, dim: int, bias: bool = True, mask_k_bias: bool = False) -> None:
        super().__init__(dim, 3 * dim, bias=bias)
        self.mask_k_bias = bool(mask_k_bias and bias)
        if self.mask_k_bias:
            self.register_buffer("bias_mask", self.expected_bias_mask(dim))
        else:
            self.bias_mask: Tensor | None = None

    @staticmethod
    def expected_bias_mask(dim: int) -> Tensor:
        """The mask pattern ``[1]*dim + [0]*dim + [1]*dim`` (float32)."""
        mask = torch.ones(3 * dim)
        mask[dim : 2 * dim] = 0.0
        return mask

    def forward(self, x: Tensor) -> Tensor:
        bias: Tensor | None = self.bias
        if bias is not None and self.bias_mask is not None:
            bias = bias * self.bias_mask.to(bias.dtype)
        return F.linear(x, self.weight, bias)


def rope_rotate_half(x: Tensor) -> Tensor:
    """``[x_a, x_b] -> [-x_b, x_a]`` along the last dimension (halves, not interleaved)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def rope_apply(x: Tensor, sin: Tensor, cos: Tensor) -> Tensor:
    """Rotate ``x [..., D]`` by the angles whose sines/cosines are ``sin``/``cos`` (``[..., D]``)."""
    return x * cos + rope_rotate_half(x) * sin


class Attention(nn.Module):
    """Multi-head self-attention with fused qkv, optional masked K bias and optional 2D RoPE on patch tokens.

    Args:
        dim: channels ``C``.
        num_heads: heads; ``C`` must be divisible by it.
        qkv_bias: learn a bias for the qkv projection.
        proj_bias: learn a bias for the output projection.
        mask_k_bias: force the K part of the qkv bias to zero (DINOv3).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        mask_k_bias: bool = False,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = int(num_heads)
        self.head_dim = dim // num_heads
        self.qkv = QKVLinear(dim, bias=qkv_bias, mask_k_bias=mask_k_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """Attend.

        Args:
            x: ``[B,N,C]`` tokens.
            rope: optional ``(sin, cos)``, each ``[h*w, head_dim]``, applied to the last ``h*w`` tokens of q and k
                (the prefix tokens are not rotated), computed in the dtype of ``sin``.

        Returns:
            ``[B,N,C]``.
        """
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # [B,heads,N,head_dim]
        if rope is not None:
            q, k = self._apply_rope(q, k, rope)
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(1, 2).reshape(B, N, C)
        return self.proj(out)

    @staticmethod
    def _apply_rope(q: Tensor, k: Tensor, rope: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        sin, cos = rope
        q_dtype, k_dtype = q.dtype, k.dtype
        q, k = q.to(sin.dtype), k.to(sin.dtype)
        prefix = q.shape[-2] - sin.shape[-2]
        q = torch.cat([q[:, :, :prefix], rope_apply(q[:, :, prefix:], sin, cos)], dim=-2)
        k = torch.cat([k[:, :, :prefix], rope_apply(k[:, :, prefix:], sin, cos)], dim=-2)
        return q.to(q_dtype), k.to(k_dtype)


class Block(nn.Module):
    """Pre-norm transformer block: ``x + ls1(attn(norm1(x)))`` then ``x + ls2(mlp(norm2(x)))``.

    Args:
        dim: channels.
        num_heads: attention heads.
        mlp: the feed-forward module (``Mlp``, ``SwiGLU`` or ``PackedSwiGLU``).
        norm_eps: LayerNorm epsilon.
        layerscale_init: LayerScale initial value; ``None`` means no LayerScale (identity).
        qkv_bias, proj_bias, mask_k_bias: see ``Attention``.
        attn: a custom attention module taking ``(x, rope)`` (e.g. with QK-norm); replaces ``Attention``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp: nn.Module,
        norm_eps: float,
        layerscale_init: float | None,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        mask_k_bias: bool = False,
        attn: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        if attn is None:
            attn = Attention(dim, num_heads, qkv_bias=qkv_bias, proj_bias=proj_bias, mask_k_bias=mask_k_bias)
        self.attn = attn
        self.ls1: nn.Module = LayerScale(dim, layerscale_init) if layerscale_init else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = mlp
        self.ls2: nn.Module = LayerScale(dim, layerscale_init) if layerscale_init else nn.Identity()

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor] | Tensor | None = None) -> Tensor:
        """``[B,N,C] -> [B,N,C]``; ``rope`` is passed to the attention as is (``Attention``: ``(sin, cos)``;
        DA3/VGGT's ``QKNormAttention``: an angle table)."""
        x = x + self.ls1(self.attn(self.norm1(x), rope))
        return x + self.ls2(self.mlp(self.norm2(x)))


class RopePositionEmbedding(nn.Module):
    """Axial 2D rotary position embedding of DINOv3 (inference path of Meta's ``RopePositionEmbedding``).

    Patch centres are normalised to [-1, 1] (``normalize_coords``: ``"separate"`` divides rows by ``h`` and
    columns by ``w``; ``"max"``/``"min"`` divide both by ``max(h, w)``/``min(h, w)``). Each head's channels are
    split in 4 quarters of ``head_dim / 4`` frequencies: angles ``2*pi*coord/period`` for (y, x) are laid out as
    ``[y-angles, x-angles]`` and tiled twice, so the rotation pairs channel ``i`` with ``i + head_dim/2``.
    The coordinate shift/jitter/rescale augmentations that Meta applies in training mode are not implemented:
    the backbone is always used as a frozen encoder in eval mode.

    Args:
        head_dim: channels per head (multiple of 4).
        base: frequency base (DINOv3: 100); ``periods = base ** (4 i / head_dim)``, ``i < head_dim/4``.
        min_period, max_period: alternative parametrisation (both, and no ``base``): periods log-spaced in
            ``[min_period, max_period]``.
        normalize_coords: ``"separate"`` (DINOv3), ``"max"`` or ``"min"``.
    """

    periods: Tensor

    def __init__(
        self,
        head_dim: int,
        base: float | None = 100.0,
        min_period: float | None = None,
        max_period: float | None = None,
        normalize_coords: Literal["min", "max", "separate"] = "separate",
    ) -> None:
        super().__init__()
        if head_dim % 4:
            raise ValueError(f"RoPE needs a head dim divisible by 4, got {head_dim}")
        both = min_period is not None and max_period is not None
        if (base is None) == (not both):
            raise ValueError("RoPE needs either `rope_base` or both `rope_min_period` and `rope_max_period`")
        if normalize_coords not in ("min", "max", "separate"):
            raise ValueError(
                f"rope_normalize_coords must be 'min', 'max' or 'separate', got {normalize_coords!r}"
            )
        self.head_dim = int(head_dim)
        self.base = base
        self.min_period = min_period
        self.max_period = max_period
        self.normalize_coords = normalize_coords
        # Persistent like Meta's buffer, so Meta checkpoints (which store it) load strictly.
        self.register_buffer("periods", self.compute_periods(), persistent=True)

    def compute_periods(self) -> Tensor:
        """The ``[head_dim/4]`` float32 periods implied by the configuration."""
        n = self.head_dim // 4
        if self.base is not None:
            return self.base ** (2 * torch.arange(n, dtype=torch.float32) / (self.head_dim // 2))
        assert self.min_period is not None and self.max_period is not None
        ratio = self.max_period / self.min_period
        periods = ratio ** torch.linspace(0, 1, n, dtype=torch.float32)
        return periods / ratio * self.max_period

    def forward(self, h: int, w: int) -> tuple[Tensor, Tensor]:
        """Sines and cosines for an ``h`` x ``w`` patch grid.

        Returns:
            ``(sin, cos)``, each float32 ``[h*w, head_dim]`` (row-major patch order).
        """
        dev = self.periods.device
        if self.normalize_coords == "max":
            denom_h = denom_w = max(h, w)
        elif self.normalize_coords == "min":
            denom_h = denom_w = min(h, w)
        else:
            denom_h, denom_w = h, w
        coords_h = torch.arange(0.5, h, device=dev, dtype=torch.float32) / denom_h  # [h]
        coords_w = torch.arange(0.5, w, device=dev, dtype=torch.float32) / denom_w  # [w]
        coords = torch.stack(torch.meshgrid(coords_h, coords_w, indexing="ij"), dim=-1).flatten(
            0, 1
        )  # [hw,2]
        coords = 2.0 * coords - 1.0
        periods = self.periods.to(torch.float32)
        angles = 2 * math.pi * coords[:, :, None] / periods[None, None, :]  # [hw,2,head_dim/4]
        angles = angles.flatten(1, 2).tile(2)  # [hw,head_dim]
        return torch.sin(angles), torch.cos(angles)
