"""Old import path of the official AnyDepth checkpoint import (kept for existing code and scripts).

The state-dict mapping lives in :mod:`anydepth.models.weights.official`, the loader that builds the model in
:mod:`anydepth.models.checkpoint`.
"""

from __future__ import annotations

from anydepth.models.checkpoint import load_official_checkpoint
from anydepth.models.weights.official import (
    OFFICIAL_COMMIT,
    RELEASES,
    convert_official_state_dict,
    detect_official,
    to_official_state_dict,
    unwrap_state_dict,
)

__all__ = [
    "detect_official",
    "convert_official_state_dict",
    "to_official_state_dict",
    "unwrap_state_dict",
    "load_official_checkpoint",
    "OFFICIAL_COMMIT",
    "RELEASES",
]
