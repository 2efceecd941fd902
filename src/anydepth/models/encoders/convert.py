"""Old import path of the backbone weight converters: see :mod:`anydepth.models.weights.backbones`."""

from __future__ import annotations

from anydepth.models.weights.backbones import (
    LAYOUTS,
    detect_layout,
    layout_family,
    to_meta,
    to_meta_with_dropped,
    unwrap_state_dict,
)

__all__ = [
    "LAYOUTS",
    "layout_family",
    "detect_layout",
    "to_meta",
    "to_meta_with_dropped",
    "unwrap_state_dict",
]
