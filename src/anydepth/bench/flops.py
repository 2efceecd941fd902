"""FLOP counting for decoders and whole models, in two conventions.

* ``"torch"`` (correct): ``torch.utils.flop_counter.FlopCounterMode`` counts 2 FLOPs per multiply-accumulate
  of every matmul / convolution / attention op. The model is built and run on the ``meta`` device: no memory
  is used, it takes well under a second even for ViT-L at 1024x1024, and attention is counted, because on
  ``meta`` scaled-dot-product attention decomposes into ``bmm`` (on real CPU tensors it dispatches to a fused
  kernel the counter does not know and is silently missed, see ``docs/efficiency.md``).
* ``"paper"``: the convention that reproduces the AnyDepth paper's Table 4, i.e. decoder-only multiply-
  accumulates counted per *module* the way the ``thop`` package (0.1.1) does, times 2. Implemented here with
  forward hooks (thop itself is not a dependency). Its rules, per leaf module call:

  - ``Conv1d/2d/3d`` and ``ConvTranspose*``: ``output.numel() * (in_channels // groups) * prod(kernel)``.
    Bias is not counted. For a transposed convolution this counts every kernel tap once per *output*
    element, which over-counts it by ``stride**2`` (the main reason the paper's DPT numbers are high).
  - ``Linear``: ``in_features * output.numel()``.
  - ``BatchNorm*`` / ``LayerNorm`` / ``GroupNorm`` / ``InstanceNorm*``: ``2 * input.numel()``, doubled when
    the layer has an affine transform.
  - Everything else (activations, functional ops such as ``grid_sample``, ``interpolate``,
    ``pixel_shuffle``, element-wise arithmetic) counts 0.

Both return plain Python numbers in FLOPs (not GFLOPs).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from anydepth.models.config import ModelConfig
from anydepth.models.depth_model import DepthModel
from anydepth.models.factory import build_model, get_model_config
from anydepth.types import EncoderOutput

__all__ = [
    "FLOP_CONVENTIONS",
    "count_flops",
    "paper_convention_flops",
    "decoder_flops",
    "model_flops",
    "encoder_flops",
    "synthetic_encoder_output",
    "PAPER_TABLE4_GFLOPS",
]

FLOP_CONVENTIONS: tuple[str, ...] = ("torch", "paper")

# AnyDepth paper, Table 4 (ViT-L encoder, decoder only, GFLOPs): {decoder: {resolution: value}}.
PAPER_TABLE4_GFLOPS: dict[str, dict[int, float]] = {
    "sdt": {256: 234.17, 512: 936.70, 1024: 3746.79},
    "dpt": {256: 444.14, 512: 1776.56, 1024: 7106.22},
}


def _resolve(model: str | ModelConfig) -> ModelConfig:
    return model if isinstance(model, ModelConfig) else get_model_config(model)


_META_CACHE: dict[str, DepthModel] = {}


def _meta_model(cfg: ModelConfig) -> DepthModel:
    """The model built on the ``meta`` device (no storage), cached per config."""
    key = json.dumps(cfg.to_dict(), sort_keys=True, default=str)
    m = _META_CACHE.get(key)
    if m is None:
        with torch.device("meta"):
            m = build_model(cfg).eval()
        if len(_META_CACHE) >= 16:
            _META_CACHE.clear()
        _META_CACHE[key] = m
    return m


def synthetic_encoder_output(
    in_dims: Sequence[int],
    token_hw: tuple[int, int],
    batch: int = 1,
    patch_size: int = 16,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    generator: torch.Generator | None = None,
) -> EncoderOutput:
    """Random encoder features for decoder-only measurements.

    Args:
        in_dims: channels C_i of the tapped blocks.
        token_hw: token grid (h, w) = (H / patch, W / patch).
        batch: B.
        patch_size: recorded in the output.
        device, dtype: where and how to allocate (``"meta"`` allocates nothing).
        generator: optional RNG for reproducible values (ignored on ``meta``).

    Returns:
        ``EncoderOutput`` with maps ``[B,C_i,h,w]`` and class tokens ``[B,C_i]`` (standard normal values).
    """
    h, w = int(token_hw[0]), int(token_hw[1])
    dev = torch.device(device)

    def rnd(*shape: int) -> torch.Tensor:
        if dev.type == "meta":
            return torch.empty(shape, device=dev, dtype=dtype)
        return torch.randn(shape, generator=generator, dtype=torch.float32).to(device=dev, dtype=dtype)

    feats = tuple(rnd(batch, c, h, w) for c in in_dims)
    cls = tuple(rnd(batch, c) for c in in_dims)
    return EncoderOutput(features=feats, cls_tokens=cls, patch_size=patch_size)


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs (2 per multiply-accumulate) of calling ``fn()``, counted by ``torch.utils.flop_counter``.

    Run ``fn`` on ``meta`` tensors to include attention (see module docstring).
    """
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        fn()
    return int(counter.get_total_flops())


def _norm_rule(m: nn.Module, inputs: tuple[Any, ...], output: Any) -> int:
    n = 2 * inputs[0].numel()
    affine = bool(getattr(m, "affine", False) or getattr(m, "elementwise_affine", False))
    return 2 * n if affine else n


def _conv_rule(m: nn.Module, inputs: tuple[Any, ...], output: Any) -> int:
    assert isinstance(m, nn.modules.conv._ConvNd)
    k = math.prod(m.kernel_size)
    return int(output.numel()) * (m.in_channels // m.groups) * k


def _linear_rule(m: nn.Module, inputs: tuple[Any, ...], output: Any) -> int:
    assert isinstance(m, nn.Linear)
    return int(m.in_features) * int(output.numel())


_PAPER_RULES: tuple[tuple[type[nn.Module] | tuple[type[nn.Module], ...], Callable[..., int]], ...] = (
    (nn.modules.conv._ConvNd, _conv_rule),
    (nn.Linear, _linear_rule),
    (
        (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm),
        _norm_rule,
    ),
)


@contextmanager
def _paper_hooks(module: nn.Module, total: list[int]):  # type: ignore[no-untyped-def]
    handles = []
    for m in module.modules():
        for types, rule in _PAPER_RULES:
            if isinstance(m, types):

                def hook(
                    mod: nn.Module, inp: tuple[Any, ...], out: Any, _rule: Callable[..., int] = rule
                ) -> None:
                    total[0] += _rule(mod, inp, out)

                handles.append(m.register_forward_hook(hook))
                break
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def paper_convention_flops(module: nn.Module, fn: Callable[[], Any]) -> int:
    """FLOPs of calling ``fn()`` in the paper's (thop-style) convention: hooked MACs of ``module`` x 2.

    Args:
        module: the module whose submodules are counted (the decoder for Table 4).
        fn: a callable that runs ``module`` once (``meta`` tensors are fine: only shapes are used).

    Returns:
        2 x multiply-accumulates by the rules in the module docstring.
    """
    total = [0]
    with torch.no_grad(), _paper_hooks(module, total):
        fn()
    return 2 * total[0]


def decoder_flops(
    model: str | ModelConfig,
    resolution: int | tuple[int, int],
    batch: int = 1,
    convention: str = "torch",
) -> int:
    """Decoder-only FLOPs of a preset at an input resolution, computed on the ``meta`` device.

    Args:
        model: preset name or ``ModelConfig``.
        resolution: input size in pixels, ``S`` (square) or ``(H, W)``; multiples of the patch size.
        batch: B.
        convention: ``"torch"`` (correct count) or ``"paper"`` (reproduces the paper's Table 4).

    Returns:
        FLOPs for one forward of the decoder on ``B`` images.

    Raises:
        ValueError: unknown convention or a resolution that is not a multiple of the patch size.
    """
    if convention not in FLOP_CONVENTIONS:
        raise ValueError(f"unknown FLOP convention {convention!r}; valid: {list(FLOP_CONVENTIONS)}")
    cfg = _resolve(model)
    hw = _hw(resolution)
    m = _meta_model(cfg)
    p = m.encoder.patch_size
    if hw[0] % p or hw[1] % p:
        raise ValueError(
            f"resolution {hw} is not a multiple of the patch size {p} of {cfg.name or cfg.encoder}"
        )
    enc = synthetic_encoder_output(m.encoder.embed_dims, (hw[0] // p, hw[1] // p), batch, p, device="meta")
    dec = m.decoder.eval()

    def run() -> Any:
        return dec(enc, hw)

    if convention == "paper":
        return paper_convention_flops(dec, run)
    return count_flops(run)


def model_flops(
    model: str | ModelConfig, resolution: int | tuple[int, int], batch: int = 1
) -> dict[str, int]:
    """Whole-model FLOPs (torch convention, attention included) on the ``meta`` device.

    Returns:
        ``{"encoder": ..., "decoder": ..., "total": ...}`` in FLOPs for one forward on ``B`` images.
    """
    cfg = _resolve(model)
    hw = _hw(resolution)
    m = _meta_model(cfg)
    x = torch.empty(batch, 3, *hw, device="meta")
    p = m.encoder.patch_size
    if hw[0] % p or hw[1] % p:
        raise ValueError(
            f"resolution {hw} is not a multiple of the patch size {p} of {cfg.name or cfg.encoder}"
        )
    normed = (x - m.image_mean) / m.image_std
    enc_flops = count_flops(lambda: m.encoder(normed))
    total = count_flops(lambda: m(x))
    return {"encoder": enc_flops, "decoder": total - enc_flops, "total": total}


def encoder_flops(model: str | ModelConfig, resolution: int | tuple[int, int], batch: int = 1) -> int:
    """Encoder FLOPs (torch convention, attention included) on the ``meta`` device."""
    return model_flops(model, resolution, batch)["encoder"]


def _hw(resolution: int | tuple[int, int] | Sequence[int]) -> tuple[int, int]:
    if isinstance(resolution, int):
        return (resolution, resolution)
    h, w = (int(v) for v in resolution)
    return (h, w)
