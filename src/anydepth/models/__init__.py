"""Models: encoders, decoders, presets, factory and checkpoints.

Importing this package registers every encoder, decoder and preset (explicit import list below).
"""

from __future__ import annotations

from anydepth.models import decoders, encoders, presets  # noqa: F401  (registration side effects)
from anydepth.models.config import ModelConfig
from anydepth.models.depth_model import DepthModel

__all__ = ["ModelConfig", "DepthModel"]
