"""Shared machinery of the fast decoders: BatchNorm folding, frozen convolutions, convolution algorithm and
low-precision checks. See :mod:`anydepth.models.fast` for what the fast path is."""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "FrozenConv",
    "fold_bn_after",
    "fold_bn_before",
    "SUPPORTED_DTYPES",
    "CONV_ALGOS",
    "nnpack_available",
    "resolve_conv_algo",
    "native_low_precision",
    "check_dtype",
    "warn_if_emulated",
    "weights_format",
    "copy_frozen",
]

log = logging.getLogger(__name__)

SUPPORTED_DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.bfloat16, torch.float16)


# --------------------------------------------------------------------------------------------- folding


def _bn_scale_shift(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as ``y = x * scale + shift`` (per channel, float64 for accurate folding)."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm without running statistics (track_running_stats=False)")
    var = bn.running_var.detach().double()
    mean = bn.running_mean.detach().double()
    scale = torch.rsqrt(var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.detach().double()
    shift = -mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias.detach().double()
    return scale, shift


def fold_bn_after(conv: nn.Conv2d, bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold ``bn(conv(x))`` into one convolution.

    Returns:
        ``(weight [C_out, C_in/g, k, k], bias [C_out])`` in float32.
    """
    scale, shift = _bn_scale_shift(bn)
    w = conv.weight.detach().double() * scale.view(-1, 1, 1, 1)
    b = shift if conv.bias is None else conv.bias.detach().double() * scale + shift
    return w.float(), b.float()


def fold_bn_before(bn: nn.modules.batchnorm._BatchNorm, conv: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold ``conv(bn(x))`` into one convolution; exact only for unpadded convolutions (here: 1x1).

    Returns:
        ``(weight, bias)`` in float32.
    """
    if any(p != 0 for p in _pair(conv.padding)) or conv.groups != 1:
        raise ValueError("fold_bn_before needs an unpadded, ungrouped convolution")
    scale, shift = _bn_scale_shift(bn)
    w = conv.weight.detach().double()
    b = torch.einsum("oikl,i->o", w, shift)
    if conv.bias is not None:
        b = b + conv.bias.detach().double()
    return (w * scale.view(1, -1, 1, 1)).float(), b.float()


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, str):
        raise ValueError(f"string padding {v!r} is not supported by the fast path")
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


CONV_ALGOS: tuple[str, ...] = ("auto", "direct", "winograd")


def nnpack_available() -> bool:
    """Whether this torch build can run NNPACK convolutions (the call also initialises NNPACK)."""
    try:
        return bool(torch._nnpack_available())
    except (AttributeError, RuntimeError):  # pragma: no cover - builds without NNPACK
        return False


def resolve_conv_algo(conv_algo: str, dtype: torch.dtype) -> str:
    """The convolution algorithm actually used: ``"direct"`` or ``"winograd"``.

    ``"auto"`` is ``"winograd"`` for float32 when NNPACK is available (it then applies to CPU inputs only;
    other devices run the direct convolution), else ``"direct"``. An explicit ``"winograd"`` without NNPACK
    falls back to ``"direct"`` with a warning.

    Raises:
        ValueError: unknown algorithm, or ``"winograd"`` with a dtype other than float32.
    """
    if conv_algo not in CONV_ALGOS:
        raise ValueError(f"unknown conv_algo {conv_algo!r}; valid: {list(CONV_ALGOS)}")
    if conv_algo == "winograd" and dtype != torch.float32:
        raise ValueError("conv_algo='winograd' (NNPACK) supports float32 only")
    if conv_algo == "auto":
        return "winograd" if dtype == torch.float32 and nnpack_available() else "direct"
    if conv_algo == "winograd" and not nnpack_available():
        log.warning("conv_algo='winograd' needs NNPACK, which this torch build lacks; using 'direct'")
        return "direct"
    return conv_algo


def native_low_precision(dtype: torch.dtype, device: torch.device | str = "cpu") -> bool:
    """Whether ``dtype`` convolutions/matmuls run natively (fast) on ``device``.

    float32 always does. On the CPU, bfloat16/float16 need oneDNN's native kernels (AVX512-BF16/FP16 or
    AMX); without them they fall back to emulation that is 10x (channels-last) to 300x (NCHW) *slower* than
    float32 (measured on an AVX2 CPU, ``docs/efficiency.md``). CUDA devices are assumed native.
    """
    dev = torch.device(device)
    if dtype == torch.float32 or dev.type != "cpu":
        return True
    try:
        if dtype == torch.bfloat16:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        if dtype == torch.float16:
            return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - builds without oneDNN
        return False
    return False


class FrozenConv(nn.Module):
    """A frozen convolution (weight/bias buffers) with an optional in-place ReLU.

    ``algo="winograd"`` runs eligible convolutions (3x3, stride 1, ungrouped, float32, on CPU) with NNPACK's
    Winograd F(6x6, 3x3) kernels: same fp32 arithmetic type, a different summation algorithm (about 4x the
    rounding error of the direct convolution, see ``docs/efficiency.md``); everything else uses
    ``F.conv2d``. ``valid_rows`` computes the convolution without vertical padding (the tiled path supplies
    the halo rows itself).
    """

    weight: torch.Tensor
    bias: torch.Tensor | None

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        stride: Any = 1,
        padding: Any = 0,
        groups: int = 1,
        relu: bool = False,
        algo: str = "direct",
    ) -> None:
        super().__init__()
        if algo not in ("direct", "winograd"):
            raise ValueError(f"FrozenConv algo must be 'direct' or 'winograd' (resolved), got {algo!r}")
        self.register_buffer("weight", weight.detach().clone())
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.groups = int(groups)
        self.relu = bool(relu)
        self.winograd = (
            algo == "winograd"
            and tuple(weight.shape[-2:]) == (3, 3)
            and self.stride == (1, 1)
            and self.groups == 1
        )

    @classmethod
    def from_conv(
        cls,
        conv: nn.Conv2d,
        bn: nn.modules.batchnorm._BatchNorm | None = None,
        relu: bool = False,
        algo: str = "direct",
    ) -> FrozenConv:
        b: torch.Tensor | None
        if bn is not None:
            w, b = fold_bn_after(conv, bn)
        else:
            w = conv.weight.detach().float()
            b = None if conv.bias is None else conv.bias.detach().float()
        if conv.dilation not in (1, (1, 1)):
            raise ValueError("fast path: dilated convolutions are not supported")
        return cls(w, b, conv.stride, conv.padding, conv.groups, relu, algo)

    def _conv(self, x: torch.Tensor, padding: tuple[int, int]) -> torch.Tensor:
        if (
            self.winograd
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and self.weight.dtype == x.dtype
            and not torch.compiler.is_compiling()  # NNPACK has no fake-tensor kernel: compile the direct conv
        ):
            y = torch._nnpack_spatial_convolution(x.contiguous(), self.weight, self.bias, list(padding))
        else:
            y = F.conv2d(x, self.weight, self.bias, self.stride, padding, 1, self.groups)
        return F.relu_(y) if self.relu else y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv(x, self.padding)

    def set_channels_last(self, on: bool) -> None:
        """Store the weight channels-last (``on``) or contiguous, so convolutions need no per-call copy."""
        fmt = torch.channels_last if on else torch.contiguous_format
        if self.weight.dim() == 4 and not self.weight.is_contiguous(memory_format=fmt):
            self.weight = self.weight.contiguous(memory_format=fmt)

    def valid_rows(self, x: torch.Tensor) -> torch.Tensor:
        """The conv with no vertical padding: ``[B,C,n,W]`` -> ``[B,C',n-k+1,W]``."""
        return self._conv(x, (0, self.padding[1]))

    @property
    def halo(self) -> int:
        return self.weight.shape[-2] // 2


def weights_format(module: nn.Module, channels_last: bool) -> None:
    """Put every 4-D convolution weight of ``module`` in the activations' memory format (once; cheap after).

    A no-op while ``torch.compile`` traces: the format is settled by an eager call before compiling.
    """
    if getattr(module, "_weights_cl", None) is channels_last or torch.compiler.is_compiling():
        return
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for m in module.modules():
        if isinstance(m, FrozenConv):
            m.set_channels_last(channels_last)
        elif isinstance(m, nn.ConvTranspose2d | nn.Conv2d) and not m.weight.is_contiguous(memory_format=fmt):
            m.weight.data = m.weight.data.contiguous(memory_format=fmt)
    module.__dict__["_weights_cl"] = channels_last


def check_dtype(dtype: torch.dtype) -> None:
    """Raise ``ValueError`` unless ``dtype`` is one of ``SUPPORTED_DTYPES``."""
    if dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"dtype {dtype} not supported; valid: {list(SUPPORTED_DTYPES)}")


def warn_if_emulated(dec: nn.Module, device: torch.device) -> None:
    """Warn once per decoder when its low-precision dtype is emulated (slow) on this CPU."""
    dtype = getattr(dec, "dtype", torch.float32)
    if getattr(dec, "_warned_emulated", False) or native_low_precision(dtype, device):
        return
    dec.__dict__["_warned_emulated"] = True
    log.warning(
        "%s on this CPU has no native kernels (needs AVX512-BF16/FP16 or AMX): it is emulated and much "
        "slower than float32; use dtype=torch.float32 here",
        str(dtype).replace("torch.", ""),
    )


def copy_frozen(m: nn.Module) -> nn.Module:
    """A deep copy of ``m`` without gradients, in eval mode."""
    c = copy.deepcopy(m)
    c.requires_grad_(False)
    return c.eval()
