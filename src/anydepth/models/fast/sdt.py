"""The fast SDT decoder: folded BatchNorms, merged DySample convolutions, row tiling at full resolution.

Registered in ``FAST_DECODERS`` under ``"sdt"``, the registry name of ``SDTDecoder``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from anydepth.models.decoders.sdt import SDTDecoder, check_features, finish_output
from anydepth.models.fast.common import (
    FrozenConv,
    check_dtype,
    copy_frozen,
    fold_bn_after,
    resolve_conv_algo,
    warn_if_emulated,
    weights_format,
)
from anydepth.models.layers.dysample import BilinearUpsample, DySample, UpsampleBlock
from anydepth.registry import FAST_DECODERS
from anydepth.types import EncoderOutput

__all__ = ["FastSDTDecoder"]


# --------------------------------------------------------------------------------------------- DySample


class _FastDySample(nn.Module):
    """DySample "lp" with offset and scope convs merged into one 1x1 conv and a cached coordinate grid.

    The sampling positions are computed in *pixel units of the low-resolution input* (pixel centres at
    ``j + 0.5``), so any horizontal slab of output rows can be produced from any slab of input rows that
    covers the rows it actually reads.
    """

    weight: torch.Tensor
    bias: torch.Tensor
    init_pos: torch.Tensor

    def __init__(self, src: DySample) -> None:
        super().__init__()
        self.scale = src.scale
        self.groups = src.groups
        self.dyscope = src.scope is not None
        if src.offset.bias is None:
            raise ValueError("fast path: DySample offset convolution without bias is not supported")
        w = src.offset.weight.detach().float()
        b = src.offset.bias.detach().float()
        if src.scope is not None:
            w = torch.cat([w, src.scope.weight.detach().float()], 0)
            b = torch.cat([b, torch.zeros_like(b)], 0)
        self.n_off = src.offset.out_channels
        self.register_buffer("weight", w.clone())
        self.register_buffer("bias", b.clone())
        self.register_buffer("init_pos", src.init_pos.detach().float().clone())
        self._grid_cache: dict[tuple[Any, ...], tuple[torch.Tensor, torch.Tensor]] = {}

    def _base(
        self, h_rows: int, w: int, device: torch.device, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixel-centre coordinates (+ init_pos) for a slab of ``h_rows`` rows starting at row 0."""
        key = (h_rows, w, device, dtype)
        hit = self._grid_cache.get(key)
        if hit is None:
            n = self.n_off // 2
            ip = self.init_pos.to(device=device, dtype=torch.float32).view(2, n, 1, 1)
            xs = torch.arange(w, device=device, dtype=torch.float32).add_(0.5).view(1, 1, w)
            ys = torch.arange(h_rows, device=device, dtype=torch.float32).add_(0.5).view(1, h_rows, 1)
            bx = (ip[0] + xs).to(dtype)  # [n, 1, w]
            by = (ip[1] + ys).to(dtype)  # [n, h_rows, 1]
            if len(self._grid_cache) > 16:
                self._grid_cache.clear()
            hit = (bx, by)
            self._grid_cache[key] = hit
        return hit

    def positions(self, x_rows: torch.Tensor, row0: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Absolute sampling positions for the output rows produced from input rows ``[row0, row0+n)``.

        Args:
            x_rows: ``[B,C,n,w]`` rows of the low-resolution input.
            row0: index of the first of those rows in the full input.

        Returns:
            ``(px, py)``, each ``[B,G,s*n,s*w]`` in input pixel units (pixel centres at ``j + 0.5``).
        """
        b, _, n, w = x_rows.shape
        s = self.scale
        o = F.conv2d(x_rows.float(), self.weight, self.bias)
        k = self.n_off
        if self.dyscope:
            off = o[:, :k] * o[:, k:].sigmoid() * 0.5
        else:
            off = o * 0.25
        off = off.reshape(b, 2, k // 2, n, w)
        bx, by = self._base(n, w, x_rows.device, torch.float32)
        px = off[:, 0] + bx
        py = off[:, 1] + by + float(row0)
        px = F.pixel_shuffle(px, s)  # [B,G,s*n,s*w]
        py = F.pixel_shuffle(py, s)
        return px, py

    @staticmethod
    def rows_needed(py: torch.Tensor, h: int) -> tuple[int, int]:
        """Input rows ``[lo, hi)`` that bilinear sampling (border padding) at ``py`` reads, with 1 row margin."""
        iy = (py - 0.5).clamp_(0, h - 1)
        lo = int(math.floor(float(iy.min()))) - 1
        hi = int(math.floor(float(iy.max()))) + 3
        return max(lo, 0), min(hi, h)

    def sample(
        self, x_slab: torch.Tensor, slab_row0: int, h_full: int, px: torch.Tensor, py: torch.Tensor
    ) -> torch.Tensor:
        """Bilinear sampling (``align_corners=False``, border padding) of a row slab at absolute positions.

        Args:
            x_slab: ``[B,C,hs,w]`` rows ``[slab_row0, slab_row0+hs)`` of the full ``[B,C,h_full,w]`` input;
                must cover every row the positions read (``rows_needed``).
            slab_row0: first row of the slab.
            h_full: height of the full input (for the border clamp).
            px, py: ``[B,G,R,Wo]`` positions from ``positions``.

        Returns:
            ``[B,C,R,Wo]`` in ``x_slab``'s dtype, contiguous.
        """
        b, c, hs, w = x_slab.shape
        g = self.groups
        r, wo = px.shape[-2:]
        # Clamp in full-image coordinates (border padding), then express in slab coordinates.
        ix = (px - 0.5).clamp_(0, w - 1)
        iy = (py - 0.5).clamp_(0, h_full - 1).sub_(float(slab_row0))
        gx = ix.mul_(2.0 / w).add_(1.0 / w - 1.0)
        gy = iy.mul_(2.0 / hs).add_(1.0 / hs - 1.0)
        grid = torch.stack((gx, gy), dim=-1).reshape(b * g, r, wo, 2)
        # Always sample in float32: low-precision grids would move samples by a large fraction of a pixel.
        xs = x_slab.float().contiguous().reshape(b * g, c // g, hs, w)
        out = F.grid_sample(xs, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return out.reshape(b, c, r, wo).to(x_slab.dtype)


class _Upsample(nn.Module):
    """One x2 upsampler of an SDT block, as row-slab functions (DySample or the bilinear ablation)."""

    def __init__(self, src: nn.Module) -> None:
        super().__init__()
        if isinstance(src, DySample):
            self.dys: _FastDySample | None = _FastDySample(src)
            self.scale = src.scale
        elif isinstance(src, BilinearUpsample):
            self.dys = None
            self.scale = src.scale
        else:
            raise ValueError(f"fast path: unsupported SDT upsampler {type(src).__name__}")
        self.margin = 2

    def full(self, x: torch.Tensor) -> torch.Tensor:
        """``[B,C,h,w]`` -> ``[B,C,sh,sw]`` (whole map)."""
        if self.dys is None:
            return F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        px, py = self.dys.positions(x, 0)
        return self.dys.sample(x, 0, x.shape[-2], px, py)

    def rows(self, source: Callable[[int, int], torch.Tensor], h: int, r0: int, r1: int) -> torch.Tensor:
        """Output rows ``[r0, r1)`` (any parity) of the upsampled map.

        Args:
            source: ``source(a, b)`` returns input rows ``[a, b)`` (computed or sliced on demand).
            h: input height.
            r0, r1: output row range.
        """
        s = self.scale
        a, b = r0 // s, -(-r1 // s)
        if self.dys is None:
            # bilinear, align_corners=False: output row i reads input rows floor((i+0.5)/s-0.5) and +1.
            lo, hi = max(a - 1, 0), min(b + 1, h)
            up = F.interpolate(source(lo, hi), scale_factor=s, mode="bilinear", align_corners=False)
            return up[:, :, r0 - lo * s : r1 - lo * s]
        # Read a slab with a margin that covers offsets up to ~1 px; widen it if the actual positions need more.
        sa, sb = max(a - self.margin, 0), min(b + self.margin, h)
        slab = source(sa, sb)
        px, py = self.dys.positions(slab[:, :, a - sa : b - sa], a)
        px, py = px[:, :, r0 - a * s : r1 - a * s], py[:, :, r0 - a * s : r1 - a * s]
        lo, hi = self.dys.rows_needed(py, h)
        if lo < sa or hi > sb:
            sa, sb = min(lo, sa), max(hi, sb)
            slab = source(sa, sb)
        return self.dys.sample(slab, sa, h, px, py)


class _RowSource:
    """Rows ``[a, c)`` of a ``[B,C,H,W]`` map, computed on demand by ``compute(a, c)``.

    The last rows of the last slab are kept: when tiles move down the image, a request that starts inside
    them reuses those rows and computes only the rows below, so every row is computed once (the halo rows
    a 3x3 convolution needs from the previous tile come from this cache instead of being recomputed).
    A request starting above the kept rows (very large upward DySample offsets) is recomputed: still exact.
    """

    KEEP_ROWS = 8

    def __init__(self, height: int, compute: Callable[[int, int], torch.Tensor]) -> None:
        self.h = int(height)
        self.compute = compute
        self.r0 = 0
        self.r1 = 0
        self.t: torch.Tensor | None = None

    def __call__(self, a: int, c: int) -> torch.Tensor:
        a, c = max(a, 0), min(c, self.h)
        t = self.t
        if t is not None and self.r0 <= a and c <= self.r1:
            return t[:, :, a - self.r0 : c - self.r0]
        if t is not None and self.r0 <= a < self.r1:
            t = torch.cat([t[:, :, a - self.r0 :], self.compute(self.r1, c)], dim=2)
        else:
            t = self.compute(a, c)
        # Keep only the rows the next (lower) tile can reuse: a 3x3 halo needs 2, a DySample margin 4.
        keep = min(self.KEEP_ROWS, c - a)
        self.t = t[:, :, c - a - keep :].clone() if c - a > keep else t
        self.r0, self.r1 = c - keep, c
        return t


def _full_source(x: torch.Tensor) -> _RowSource:
    """A ``_RowSource`` over a materialised map (rows are views)."""
    src = _RowSource(x.shape[-2], lambda a, c: x[:, :, a:c])
    src.t, src.r0, src.r1 = x, 0, x.shape[-2]
    return src


def _pad_rows(x: torch.Tensor, top: bool, bottom: bool) -> torch.Tensor:
    """Add the zero row a padded 3x3 convolution sees above / below the image."""
    if not (top or bottom):
        return x
    z = torch.zeros_like(x[:, :, :1])
    return torch.cat([z, x, z] if top and bottom else [z, x] if top else [x, z], dim=2)


def _conv_stage(conv: FrozenConv, src: _RowSource) -> _RowSource:
    """``conv(src)`` by rows: output rows ``[a, c)`` read input rows ``[a-k, c+k)`` (k = halo)."""
    h, k = src.h, conv.halo

    def compute(a: int, c: int) -> torch.Tensor:
        if k == 0:
            return conv.valid_rows(src(a, c))
        if k != 1:
            raise ValueError("fast path: only 1x1 and 3x3 convolutions are tiled")
        x = src(a - 1, c + 1)
        return conv.valid_rows(_pad_rows(x, a == 0, c == h))

    return _RowSource(h, compute)


def _up_conv_stage(
    up: _Upsample, conv: FrozenConv, src: _RowSource, fmt: Callable[[torch.Tensor], torch.Tensor]
) -> _RowSource:
    """``conv(up(src))`` by rows (one SDT upsampling block); the upsampled rows are not cached."""
    h_in = src.h
    h = up.scale * h_in

    def compute(a: int, c: int) -> torch.Tensor:
        y = fmt(up.rows(src, h_in, max(a - 1, 0), min(c + 1, h)))
        return conv.valid_rows(_pad_rows(y, a == 0, c == h))

    return _RowSource(h, compute)


# --------------------------------------------------------------------------------------------- SDT


@FAST_DECODERS.register("sdt")
class FastSDTDecoder(nn.Module):
    """Inference-only SDT decoder: folded BN, merged DySample convs, row tiling at full resolution.

    Args:
        src: a trained ``SDTDecoder`` (not modified; its weights are copied).
        dtype: compute dtype of the decoder (float32, bfloat16 or float16). DySample offsets and sampling
            always run in float32.
        tile_rows: full-resolution rows per tile (rounded up to even); ``None`` = derive from
            ``max_tile_pixels``; ``0`` = no tiling.
        max_tile_pixels: with ``tile_rows=None``, tile height = ``max_tile_pixels // W`` (at least 8 rows).
            Default (``None``): a quarter of the output image, clamped to [16384, 65536] pixels, i.e. 64 rows
            at 256x256, 128 at 512x512, 64 at 1024x1024, 32 at 2048x2048: at most 64 MiB per 256-channel fp32
            tile whatever the input size. Larger tiles are faster (fewer, larger convolution calls: measured
            1.67x / 2.0x / 2.28x over eager at 256x256 for 8192 / 16384 / 65536-pixel tiles), smaller ones
            leaner; the quarter-image rule keeps the decoder's peak below DPT's at every size. On CUDA (and
            other accelerators) tiles cost time (measured on an H200: 4 tiles are 1.3-2.4x slower than none,
            ``docs/efficiency.md``), so the default there is no tiling unless one full-resolution map of the
            batch would exceed ``GPU_MAX_FULLRES_BYTES`` (4 GiB), and then the fewest equal tiles that fit;
            pass ``tile_rows`` / ``max_tile_pixels`` for the lean tiled path on a GPU too.
        channels_last: convolution memory format; ``None`` (default) = on CUDA and other accelerators,
            channels-last up to ``GPU_CHANNELS_LAST_MAX_PIXELS`` output pixels (512x512) and NCHW above
            (measured on an H200: NHWC convolutions win at small sizes, NCHW DySample sampling at large ones);
            on the CPU, channels-last for the untiled direct path and for low-precision dtypes (oneDNN's
            bf16/fp16 kernels want it), NCHW otherwise (tiles and NNPACK are faster in NCHW and avoid layout
            copies).
        conv_algo: ``"auto"`` (default: ``"winograd"`` for float32 when NNPACK is available, else
            ``"direct"``), ``"direct"`` (oneDNN) or ``"winograd"`` (NNPACK F(6x6,3x3) for the stride-1 3x3
            convolutions of CPU float32 inputs; see ``resolve_conv_algo``).
        max_materialized_pixels: with tiling, the H/4 map (after the first x4 stage and refinement) is
            computed whole when it has at most this many pixels (default 65536, i.e. inputs up to 1024x1024:
            64 MiB); larger inputs compute it lazily by rows too, so decoder memory stays O(W x tile) plus
            the token-grid map.

    ``forward(enc, out_hw)`` has the ``SDTDecoder`` contract and returns float32 ``[B,1,H,W]``.
    """

    MIN_AUTO_TILE_PIXELS = 16384
    MAX_AUTO_TILE_PIXELS = 65536
    MIN_TILE_ROWS = 8
    DEFAULT_MAX_MATERIALIZED_PIXELS = 65536
    GPU_MAX_FULLRES_BYTES = 4 * 2**30
    GPU_CHANNELS_LAST_MAX_PIXELS = 512 * 512

    def __init__(
        self,
        src: SDTDecoder,
        *,
        dtype: torch.dtype = torch.float32,
        tile_rows: int | None = None,
        max_tile_pixels: int | None = None,
        channels_last: bool | None = None,
        conv_algo: str = "auto",
        max_materialized_pixels: int | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(src, SDTDecoder):
            raise ValueError(f"FastSDTDecoder needs an SDTDecoder, got {type(src).__name__}")
        check_dtype(dtype)
        if tile_rows is not None and tile_rows < 0:
            raise ValueError(f"tile_rows must be >= 0 (0 = no tiling), got {tile_rows}")
        if max_tile_pixels is not None and max_tile_pixels < 1:
            raise ValueError(f"max_tile_pixels must be >= 1, got {max_tile_pixels}")
        conv_algo = resolve_conv_algo(conv_algo, dtype)
        self.in_dims = src.in_dims
        self.use_cls_token = src.use_cls_token
        self.min_output = src.min_output
        self.resize_align_corners = src.resize_align_corners
        self.dtype = dtype
        self.tile_rows = tile_rows
        self.max_tile_pixels = max_tile_pixels
        self.channels_last = channels_last
        self.conv_algo = conv_algo
        if max_materialized_pixels is not None and max_materialized_pixels < 0:
            raise ValueError(f"max_materialized_pixels must be >= 0, got {max_materialized_pixels}")
        self.max_materialized_pixels = max_materialized_pixels
        self.fusion = copy_frozen(src.fusion)
        if src.sde is not None:
            w, b = fold_bn_after(src.sde.dwconv, src.sde.bn)
            self.sde: FrozenConv | None = FrozenConv(w, b, 1, 1, src.sde.dwconv.groups)
        else:
            self.sde = None
        blocks: list[UpsampleBlock] = [
            src.upsample1.block1,
            src.upsample1.block2,
            src.upsample2.block1,
            src.upsample2.block2,
        ]
        algo = conv_algo
        # plain lists typed for mypy, registered as ModuleLists for .to()/state_dict
        self._ups_list = [_Upsample(blk.up) for blk in blocks]
        self._up_convs_list = [FrozenConv.from_conv(blk.conv, blk.bn, True, algo) for blk in blocks]
        self.ups = nn.ModuleList(self._ups_list)
        self.up_convs = nn.ModuleList(self._up_convs_list)
        self.refine1 = FrozenConv.from_conv(src.refine1.conv, src.refine1.bn, True, algo)
        self.refine2 = FrozenConv.from_conv(src.refine2.conv, src.refine2.bn, True, algo)
        self.head1 = FrozenConv.from_conv(src.head.conv1, None, True, algo)
        self.head2 = FrozenConv.from_conv(src.head.conv2, None, True, algo)
        self.head_out = FrozenConv.from_conv(src.head.conv_out)
        self.to(dtype)
        # DySample offsets are computed in float32 from the (possibly low-precision) features.
        for up in self._ups_list:
            if up.dys is not None:
                up.dys.float()
        self.requires_grad_(False)
        self.eval()
        self._cl = False

    # -- helpers
    def _fmt(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self._cl else x.contiguous()

    def _tile(self, h: int, w: int, device_type: str = "cpu", fullres_bytes: int = 0) -> int:
        if self.tile_rows == 0:
            return h
        if self.tile_rows is not None:
            t = self.tile_rows
        elif self.max_tile_pixels is None and device_type != "cpu":
            n = -(-fullres_bytes // self.GPU_MAX_FULLRES_BYTES)
            if n <= 1:
                return h
            t = -(-h // n)
        else:
            px = self.max_tile_pixels or min(
                max(h * w // 4, self.MIN_AUTO_TILE_PIXELS), self.MAX_AUTO_TILE_PIXELS
            )
            t = max(px // max(w, 1), self.MIN_TILE_ROWS)
        t = max(2, t + (t % 2))
        return min(t, h)

    def tokens_map(self, enc: EncoderOutput) -> torch.Tensor:
        """Fusion and SDE: ``[B,D,h,w]`` at the token grid."""
        feats = tuple(f.to(self.dtype) for f in enc.features)
        cls = tuple(t.to(self.dtype) for t in enc.cls_tokens) if self.use_cls_token else None
        x = self.fusion(feats, cls)  # [B,D,h,w]
        if self.sde is not None:
            x = F.relu_(x + self.sde(x))
        return x

    def _quarter(self, x: torch.Tensor) -> torch.Tensor:
        """First x4 stage and first refinement on the whole map: ``[B,D,h,w]`` -> ``[B,D,4h,4w]``."""
        for i in (0, 1):
            x = self._up_convs_list[i](self._fmt(self._ups_list[i].full(x)))
        return self.refine1(x)

    def forward_raw(self, enc: EncoderOutput) -> torch.Tensor:
        """``[B,1,16h,16w]`` raw prediction (before the output activation), in float32."""
        check_features(enc, self.in_dims, self.use_cls_token, "SDT decoder (fast)")
        with torch.no_grad():
            x = self.tokens_map(enc)
            h, w = x.shape[-2:]
            hf, wf = 16 * h, 16 * w
            fullres = x.shape[0] * x.shape[1] * hf * wf * x.element_size()
            t = self._tile(hf, wf, x.device.type, fullres)
            tiled = t < hf
            warn_if_emulated(self, x.device)
            if self.channels_last is not None:
                self._cl = self.channels_last
            elif x.device.type != "cpu":
                self._cl = hf * wf <= self.GPU_CHANNELS_LAST_MAX_PIXELS
            else:
                self._cl = (not tiled and self.conv_algo == "direct") or self.dtype != torch.float32
            weights_format(self, self._cl)
            if not tiled:
                return self._untiled(self._quarter(self._fmt(x))).float()
            max_px = (
                self.DEFAULT_MAX_MATERIALIZED_PIXELS
                if self.max_materialized_pixels is None
                else self.max_materialized_pixels
            )
            lazy = 16 * h * w > max_px
            return self._tiled(self._fmt(x), t, lazy).float()

    def _untiled(self, x4: torch.Tensor) -> torch.Tensor:
        z2 = self._up_convs_list[2](self._fmt(self._ups_list[2].full(x4)))
        y = self._up_convs_list[3](self._fmt(self._ups_list[3].full(z2)))
        y = self.refine2(y)
        y = self.head2(self.head1(y))
        return self.head_out(y)

    def _tiled(self, x: torch.Tensor, t: int, lazy_low_res: bool) -> torch.Tensor:
        """Row-tiled decoder after the SDE (``x``: ``[B,D,h,w]``) -> raw ``[B,1,16h,16w]``."""
        fmt = self._fmt
        if lazy_low_res:
            z8 = _up_conv_stage(self._ups_list[0], self._up_convs_list[0], _full_source(x), fmt)
            z4 = _up_conv_stage(self._ups_list[1], self._up_convs_list[1], z8, fmt)
            x4 = _conv_stage(self.refine1, z4)
        else:
            x4 = _full_source(self._quarter(x))
        z2 = _up_conv_stage(self._ups_list[2], self._up_convs_list[2], x4, fmt)
        z1 = _up_conv_stage(self._ups_list[3], self._up_convs_list[3], z2, fmt)
        out_rows = _conv_stage(
            self.head_out, _conv_stage(self.head2, _conv_stage(self.head1, _conv_stage(self.refine2, z1)))
        )
        b, hf, wf = x.shape[0], out_rows.h, 16 * x.shape[-1]
        out = torch.empty(b, 1, hf, wf, dtype=self.head_out.weight.dtype, device=x.device)
        for r0 in range(0, hf, t):
            r1 = min(r0 + t, hf)
            out[:, :, r0:r1] = out_rows(r0, r1)
        return out

    def forward(self, enc: EncoderOutput, out_hw: tuple[int, int]) -> torch.Tensor:
        """Predict ``[B,1,H,W]`` (float32, ``>= min_output``); same contract as ``SDTDecoder.forward``."""
        return finish_output(self.forward_raw(enc), out_hw, self.min_output, self.resize_align_corners)
