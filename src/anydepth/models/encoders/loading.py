"""Old import path of backbone weight loading: see :mod:`anydepth.models.weights.loading`."""

from __future__ import annotations

from anydepth.models.weights.loading import load_backbone_weights, read_state_dict

__all__ = ["read_state_dict", "load_backbone_weights"]
