"""Old import path of the inference fast path: see :mod:`anydepth.models.fast` (its home: an inference
optimisation of the models, chosen by the decoder registry, not an export format)."""

from __future__ import annotations

from anydepth.models.fast import (
    CONV_ALGOS,
    SUPPORTED_DTYPES,
    FastDepthModel,
    FastDPTDecoder,
    FastSDTDecoder,
    fast_decoder,
    fold_bn_after,
    fold_bn_before,
    native_low_precision,
    nnpack_available,
    optimize_for_inference,
    resolve_conv_algo,
)

__all__ = [
    "FastDepthModel",
    "FastSDTDecoder",
    "FastDPTDecoder",
    "fast_decoder",
    "optimize_for_inference",
    "fold_bn_after",
    "fold_bn_before",
    "SUPPORTED_DTYPES",
    "CONV_ALGOS",
    "nnpack_available",
    "resolve_conv_algo",
    "native_low_precision",
]
