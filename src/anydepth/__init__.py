"""anydepth: monocular depth estimation with the AnyDepth method (frozen DINOv3/DINOv2 ViT + SDT decoder).

Public API::

    import anydepth
    anydepth.list_models()                       # preset names
    model = anydepth.create_model("sdt_dinov3_vits16", encoder_weights="dinov3_vits16.pth")
    model = anydepth.load_model("checkpoint.safetensors", encoder_weights=...)
    preds = anydepth.predict(model, ["image.jpg"])  # list[Prediction]
"""

from __future__ import annotations

from typing import Any

from anydepth import models as _models  # noqa: E402,F401  (registers encoders, decoders and presets)
from anydepth.models.checkpoint import load_model, save_model  # noqa: E402
from anydepth.models.factory import count_parameters, create_model, list_models  # noqa: E402
from anydepth.types import DepthSpace, Intrinsics, Prediction, Sample  # noqa: E402
from anydepth.version import __version__

__all__ = [
    "__version__",
    "create_model",
    "load_model",
    "save_model",
    "list_models",
    "count_parameters",
    "predict",
    "optimize_for_inference",
    "DepthSpace",
    "Intrinsics",
    "Prediction",
    "Sample",
]


def __getattr__(name: str) -> Any:
    # ``predict`` lives in the inference layer, which imports the data layer; load it on first use.
    if name == "predict":
        from anydepth.inference import predict

        return predict
    if name == "optimize_for_inference":
        from anydepth.models.fast import optimize_for_inference

        return optimize_for_inference
    raise AttributeError(f"module 'anydepth' has no attribute {name!r}")
