"""Inference-only fast path for ``DepthModel``: same numbers, less time and memory.

``optimize_for_inference(model)`` returns a ``FastDepthModel`` with the ``DepthModel.forward`` contract
(``[B,3,H,W]`` RGB in [0, 1] -> ``[B,1,H,W]``). What changes, all exact up to float32 rounding (measured
<= 3e-6 against the eager model; the tests require <= 1e-4):

* every BatchNorm is folded into the convolution next to it (eval statistics);
* DySample's offset and scope 1x1 convolutions are merged into one convolution; its sampling positions are
  built from a per-size cached pixel-centre grid on the input's device;
* frozen convolutions with in-place ReLUs; channels-last where it helps (untiled direct path on CPU);
* **SDT row tiling**: after the SDE every stage is a *row source* that computes output rows ``[a, c)`` on
  demand from the rows it needs of the stage below: a 3x3 convolution needs 1 extra row above and below
  (zero rows at the image border reproduce its padding); a DySample x2 needs the rows its *actual*
  sampling positions read (computed from the offsets of that tile, so any learned offset is exact, not
  just the 0.25 px of the initialisation). Each stage keeps its last slab, so when the output is produced
  in tiles from top to bottom every row is computed once (no halo recomputation). The full-resolution
  maps (256 channels: 64 MiB at 256x256, 1 GiB at 1024x1024) never exist whole: peak activation memory is
  O(W x tile rows) plus the H/4 map, which is itself computed lazily by rows for inputs above 1024x1024.
  Small, reused tile buffers also avoid glibc's mmap/munmap + page-fault cost per call.

* **Winograd 3x3 convolutions on the CPU** (``conv_algo="auto"``, the default): in float32 on a CPU whose
  torch build has NNPACK, the stride-1 3x3 convolutions run NNPACK's Winograd F(6x6, 3x3) kernels, which do
  about a fifth of the multiplications of a direct convolution. The direct convolution of this decoder
  already runs close to the CPU's peak FLOP rate, so this is where the fp32 speed-up comes from (measured in
  ``docs/efficiency.md``); the rounding error is a few times that of the direct convolution (~1e-7 here).
  ``conv_algo="direct"`` keeps oneDNN's direct convolution; on other devices (CUDA) ``auto`` is ``direct``.

Options: ``dtype=torch.bfloat16`` / ``torch.float16`` runs the decoder in that dtype (encoder under autocast;
only fast on hardware with native support, see ``native_low_precision``); ``compile=True`` wraps the (untiled) decoder in
``torch.compile``.

The result is for inference only: parameters are frozen copies (buffers); the source model is not modified.

Which fast decoder is built is decided by the decoder registry: ``anydepth.registry.FAST_DECODERS`` maps a
``DECODERS`` name to its fast builder (``models/fast/sdt.py``, ``models/fast/dpt.py`` register theirs; a new
decoder module registers its own and adds its import line below). Machinery shared by the builders (BatchNorm
folding, frozen convolutions, algorithm and dtype checks) is in ``models/fast/common.py``.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from anydepth.models.depth_model import DepthModel
from anydepth.models.fast import dpt, sdt  # noqa: F401  (register the fast builders; one line per builder module)
from anydepth.models.fast.common import (
    CONV_ALGOS,
    SUPPORTED_DTYPES,
    fold_bn_after,
    fold_bn_before,
    native_low_precision,
    nnpack_available,
    resolve_conv_algo,
)
from anydepth.models.fast.dpt import FastDPTDecoder
from anydepth.models.fast.sdt import FastSDTDecoder
from anydepth.registry import DECODERS, FAST_DECODERS

__all__ = [
    "FastDepthModel",
    "FastSDTDecoder",
    "FastDPTDecoder",
    "fast_decoder",
    "decoder_name",
    "has_fast_path",
    "fast_options",
    "optimize_for_inference",
    "fold_bn_after",
    "fold_bn_before",
    "SUPPORTED_DTYPES",
    "CONV_ALGOS",
    "nnpack_available",
    "resolve_conv_algo",
    "native_low_precision",
]


def decoder_name(decoder: nn.Module) -> str | None:
    """The ``DECODERS`` registry name of ``decoder``'s class (its own class first, then a registered base class)."""
    names = DECODERS.names()
    exact = [n for n in names if type(decoder) is DECODERS.get(n)]
    found = exact or [n for n in names if isinstance(decoder, DECODERS.get(n))]
    return found[0] if found else None


def has_fast_path(decoder: nn.Module) -> bool:
    """Whether ``decoder``'s type has a fast builder in ``FAST_DECODERS`` (``fast_decoder`` accepts it)."""
    name = decoder_name(decoder)
    return name is not None and name in FAST_DECODERS


def fast_options(name: str) -> set[str]:
    """The options (keyword arguments) the fast builder of decoder ``name`` accepts."""
    params = inspect.signature(FAST_DECODERS.get(name)).parameters.values()
    return {p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


def fast_decoder(decoder: nn.Module, **kwargs: Any) -> nn.Module:
    """The fast inference version of a decoder, built by the fast builder registered for its decoder name.

    ``FAST_DECODERS`` maps a ``DECODERS`` name to a class built as ``cls(decoder, **options)`` (``"sdt"`` ->
    ``FastSDTDecoder``, ``"dpt"`` -> ``FastDPTDecoder``); a new decoder gets a fast path by registering one.

    Args:
        decoder: the source decoder (unchanged).
        **kwargs: options of that builder: ``dtype``, ``channels_last``, ``conv_algo`` (all) and, for SDT,
            ``tile_rows`` / ``max_tile_pixels`` / ``max_materialized_pixels``.

    Raises:
        ValueError: a decoder without a fast builder, or an option its builder does not take.
    """
    name = decoder_name(decoder)
    if name is None or not has_fast_path(decoder):
        raise ValueError(
            f"no fast path for decoder type {type(decoder).__name__}; decoders with one: {FAST_DECODERS.names()}"
        )
    bad = sorted(set(kwargs) - fast_options(name))
    if bad:
        others = [n.upper() for n in FAST_DECODERS.names() if set(bad) <= fast_options(n)]
        raise ValueError(
            f"option(s) {bad} are not supported for the {name.upper()} decoder"
            + (f" ({', '.join(others)} only)" if others else "")
        )
    fast: nn.Module = FAST_DECODERS.get(name)(decoder, **kwargs)
    return fast


class FastDepthModel(nn.Module):
    """Inference-only ``DepthModel``: the same encoder (shared, not copied) and a fast decoder.

    ``forward(x)``: ``[B,3,H,W]`` float RGB in [0, 1] -> ``[B,1,H,W]`` float32 in ``output_space``.
    With a low-precision ``dtype`` the encoder runs under ``torch.autocast`` of that dtype.
    """

    def __init__(self, model: DepthModel, decoder: nn.Module, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.encoder = model.encoder
        self.decoder = decoder
        self.config = model.config
        self.dtype = dtype
        self.image_mean: torch.Tensor
        self.image_std: torch.Tensor
        self.register_buffer("image_mean", model.image_mean.detach().clone(), persistent=False)
        self.register_buffer("image_std", model.image_std.detach().clone(), persistent=False)

    @property
    def output_space(self) -> Any:
        return self.config.output_space

    @property
    def patch_size(self) -> int:
        return self.encoder.patch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predict ``[B,1,H,W]`` float32 from ``[B,3,H,W]`` RGB in [0, 1] (H, W multiples of ``patch_size``)."""
        h, w = int(x.shape[-2]), int(x.shape[-1])
        with torch.no_grad():
            x = (x.float() - self.image_mean) / self.image_std
            if self.dtype == torch.float32:
                enc = self.encoder(x)
            else:
                # no weight-cast cache: each weight is used once per call, and cached casts break CUDA graphs
                with torch.autocast(x.device.type, dtype=self.dtype, cache_enabled=False):
                    enc = self.encoder(x)
            return self.decoder(enc, (h, w))


def optimize_for_inference(
    model: DepthModel,
    *,
    dtype: torch.dtype = torch.float32,
    tile_rows: int | None = None,
    max_tile_pixels: int | None = None,
    channels_last: bool | None = None,
    conv_algo: str = "auto",
    compile: bool = False,
) -> FastDepthModel:
    """Build the fast inference path of a ``DepthModel``.

    Args:
        model: a ``DepthModel`` with an SDT or DPT decoder (in eval mode; not modified).
        dtype: decoder compute dtype: ``torch.float32`` (matches the eager model within 1e-4),
            ``torch.bfloat16`` or ``torch.float16`` (encoder under autocast; error documented in
            ``docs/efficiency.md``; only fast on hardware with native support).
        tile_rows: SDT only: full-resolution rows per tile (``0`` = no tiling, ``None`` = from
            ``max_tile_pixels``).
        max_tile_pixels: SDT only: tile height = ``max_tile_pixels // W`` (default: a quarter of the image,
            clamped to [16384, 65536] pixels; at least 8 rows).
        channels_last: convolution memory format (``None``: automatic, see ``FastSDTDecoder``).
        conv_algo: ``"auto"`` (default: Winograd for CPU float32 when NNPACK is available), ``"direct"`` or
            ``"winograd"``; see ``resolve_conv_algo``.
        compile: wrap the decoder in ``torch.compile`` (opt-in; compilation takes tens of seconds per
            input shape). SDT then runs untiled: the tiled path is Python-driven with data-dependent slab
            sizes, which Dynamo would recompile for every tile. Compiled code uses the direct convolution
            (NNPACK's Winograd op cannot be traced).

    Returns:
        A ``FastDepthModel`` with ``DepthModel.forward``'s contract.

    Raises:
        ValueError: unsupported decoder, dtype, algorithm or tiling options.
    """
    if not isinstance(model, DepthModel):
        raise ValueError(f"optimize_for_inference needs a DepthModel, got {type(model).__name__}")
    kwargs: dict[str, Any] = {"dtype": dtype, "channels_last": channels_last, "conv_algo": conv_algo}
    if compile and (tile_rows or max_tile_pixels is not None):
        raise ValueError(
            "compile=True runs the untiled path; do not combine it with tile_rows/max_tile_pixels"
        )
    name = decoder_name(model.decoder)
    if name is not None and name in FAST_DECODERS and {"tile_rows", "max_tile_pixels"} <= fast_options(name):
        kwargs.update(tile_rows=0 if compile else tile_rows, max_tile_pixels=max_tile_pixels)
    elif tile_rows is not None or max_tile_pixels is not None:
        tiled = [n.upper() for n in FAST_DECODERS.names() if "tile_rows" in fast_options(n)]
        raise ValueError(f"tile_rows / max_tile_pixels are only supported for the {', '.join(tiled)} decoder")
    dec = fast_decoder(model.decoder, **kwargs)
    if compile:
        dec = torch.compile(dec, dynamic=False)  # type: ignore[assignment]
    return FastDepthModel(model, dec, dtype).eval()
