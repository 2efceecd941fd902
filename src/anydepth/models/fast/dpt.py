"""The fast DPT decoder: reassemble BatchNorms folded into the 1x1 projections, frozen convolutions, in dtype.

Registered in ``FAST_DECODERS`` under ``"dpt"``, the registry name of ``DPTDecoder``.
"""

from __future__ import annotations

import torch
from torch import nn

from anydepth.models.decoders.dpt import DPTDecoder
from anydepth.models.decoders.sdt import finish_output
from anydepth.models.fast.common import (
    FrozenConv,
    check_dtype,
    copy_frozen,
    fold_bn_before,
    resolve_conv_algo,
    warn_if_emulated,
    weights_format,
)
from anydepth.registry import FAST_DECODERS
from anydepth.types import EncoderOutput

__all__ = ["FastDPTDecoder"]


@FAST_DECODERS.register("dpt")
class FastDPTDecoder(nn.Module):
    """Inference-only DPT decoder: reassemble BN folded into the 1x1 projections, frozen convs, in dtype.

    Args:
        src: a ``DPTDecoder`` (not modified).
        dtype: compute dtype.
        channels_last: convolution memory format (``None``: channels-last on CUDA and other accelerators
            (measured faster on an H200 at every size, ``docs/efficiency.md``); on the CPU unless the
            convolutions run Winograd).
        conv_algo: ``"auto"`` (default), ``"direct"`` or ``"winograd"``; see ``resolve_conv_algo``.
    """

    def __init__(
        self,
        src: DPTDecoder,
        *,
        dtype: torch.dtype = torch.float32,
        channels_last: bool | None = None,
        conv_algo: str = "auto",
    ) -> None:
        super().__init__()
        if not isinstance(src, DPTDecoder):
            raise ValueError(f"FastDPTDecoder needs a DPTDecoder, got {type(src).__name__}")
        check_dtype(dtype)
        conv_algo = resolve_conv_algo(conv_algo, dtype)
        dec = copy_frozen(src)
        assert isinstance(dec, DPTDecoder)
        ra = dec.reassemble
        if ra.norms is not None:
            for i, (bn, proj) in enumerate(zip(ra.norms, ra.projects, strict=True)):
                assert isinstance(bn, nn.modules.batchnorm._BatchNorm) and isinstance(proj, nn.Conv2d)
                w, b = fold_bn_before(bn, proj)
                ra.projects[i] = FrozenConv(w, b)
            ra.norms = None
        # every plain conv becomes a frozen FrozenConv (Winograd-capable); transposed convs stay as they are
        for parent in list(dec.modules()):
            for cname, child in list(parent.named_children()):
                if type(child) is nn.Conv2d:
                    setattr(parent, cname, FrozenConv.from_conv(child, algo=conv_algo))
        self.dec = dec.to(dtype).requires_grad_(False).eval()
        self.in_dims = dec.in_dims
        self.dtype = dtype
        self.conv_algo = conv_algo
        self.channels_last = channels_last

    def _use_channels_last(self, device: torch.device) -> bool:
        if self.channels_last is not None:
            return bool(self.channels_last)
        return device.type != "cpu" or self.conv_algo == "direct"

    def forward(self, enc: EncoderOutput, out_hw: tuple[int, int]) -> torch.Tensor:
        """Predict ``[B,1,H,W]`` (float32); same contract as ``DPTDecoder.forward``."""
        dev = enc.features[0].device
        warn_if_emulated(self, dev)
        cl = self._use_channels_last(dev)
        weights_format(self.dec, cl)
        fmt = torch.channels_last if cl else torch.contiguous_format
        feats = tuple(f.to(self.dtype).contiguous(memory_format=fmt) for f in enc.features)
        cls = tuple(t.to(self.dtype) for t in enc.cls_tokens)
        with torch.no_grad():
            raw = self.dec.forward_raw(EncoderOutput(feats, cls, enc.patch_size)).float()
        return finish_output(raw, out_hw, self.dec.min_output, self.dec.resize_align_corners)
