"""Exponential moving average (EMA) of the trainable part of a model (optional; off in the paper recipes).

The EMA keeps float32 shadow copies of the selected floating-point ``state_dict`` entries (parameters and float
buffers such as BatchNorm running statistics); integer buffers (``num_batches_tracked``) are copied as they are.
With ``warmup=True`` the effective decay is ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so the
average is not dominated by the random initialisation early on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn

__all__ = ["ModelEMA"]


class ModelEMA:
    """EMA of a module's state.

    Args:
        model: the module to track (e.g. a ``DepthModel``).
        decay: EMA decay in [0, 1).
        include: predicate on ``state_dict`` keys; default: every key (the trainer passes "decoder.*" plus the
            encoder when it is unfrozen).
        warmup: ramp the decay up from 0.1 (see module docstring).
    """

    def __init__(
        self,
        model: nn.Module,
        decay: float = 0.999,
        include: Callable[[str], bool] | None = None,
        warmup: bool = True,
    ) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.updates = 0
        self._include = include or (lambda _k: True)
        self.shadow: dict[str, torch.Tensor] = {
            k: (v.detach().float().clone() if v.is_floating_point() else v.detach().clone())
            for k, v in model.state_dict().items()
            if self._include(k)
        }

    def current_decay(self) -> float:
        """The decay the next ``update`` will use."""
        if not self.warmup:
            return self.decay
        n = self.updates
        return min(self.decay, (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Blend the model's current state into the shadow: ``ema = d * ema + (1 - d) * value``."""
        d = self.current_decay()
        state = model.state_dict()
        for k, s in self.shadow.items():
            v = state[k].detach()
            if s.is_floating_point():
                s.mul_(d).add_(v.to(s.device, torch.float32), alpha=1.0 - d)
            else:
                s.copy_(v)
        self.updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Write the averaged values into ``model`` (in the model's dtypes)."""
        state = model.state_dict()
        for k, s in self.shadow.items():
            state[k].copy_(s.to(state[k].dtype))

    @contextlib.contextmanager
    def swapped(self, model: nn.Module) -> Iterator[nn.Module]:
        """Temporarily load the EMA weights into ``model`` (e.g. for validation), restoring them on exit."""
        state = model.state_dict()
        backup = {k: state[k].detach().clone() for k in self.shadow}
        self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                for k, v in backup.items():
                    state[k].copy_(v)

    def state_dict(self) -> dict:
        return {
            "decay": self.decay,
            "updates": self.updates,
            "warmup": self.warmup,
            "shadow": dict(self.shadow),
        }

    def load_state_dict(self, state: dict) -> None:
        missing = sorted(set(self.shadow) - set(state["shadow"]))
        if missing:
            raise KeyError(f"EMA state is missing {len(missing)} entries, e.g. {missing[:3]}")
        self.decay = float(state["decay"])
        self.updates = int(state["updates"])
        self.warmup = bool(state.get("warmup", True))
        for k in self.shadow:
            self.shadow[k].copy_(state["shadow"][k])

    def to(self, device: torch.device | str) -> ModelEMA:
        self.shadow = {k: v.to(device) for k, v in self.shadow.items()}
        return self
