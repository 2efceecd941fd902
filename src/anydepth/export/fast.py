"""Old import path of the inference fast path: see :mod:`anydepth.models.fast` (its home: an inference
optimisation of the models, chosen by the decoder registry, not an export format)."""

from __future__ import annotations

from anydepth.models.fast import *  # noqa: F403  (the same public names)
from anydepth.models.fast import __all__ as __all__
