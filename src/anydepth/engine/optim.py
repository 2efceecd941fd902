"""Optimizer construction: parameter groups chosen by glob patterns on parameter names, AdamW.

Parameter names are those of ``DepthModel.named_parameters()``: ``decoder.*`` for the decoder and
``encoder.backbone.*`` for the ViT. Only parameters with ``requires_grad`` are put in groups, so a frozen encoder
never reaches the optimizer. Each trainable parameter goes to the FIRST group whose pattern matches
(``fnmatch`` syntax, matched against the full name); parameters matched by no group go to a default group with
the base LR and weight decay. Names matching a ``no_weight_decay`` pattern get weight decay 0 inside their group.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

__all__ = ["GroupSpec", "build_param_groups", "build_optimizer"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GroupSpec:
    """One parameter group.

    Attributes:
        pattern: ``fnmatch`` glob on full parameter names (``"decoder.*"``, ``"encoder.*"``).
        lr: group LR; ``None`` = the base LR.
        weight_decay: group weight decay; ``None`` = the base weight decay.
    """

    pattern: str
    lr: float | None = None
    weight_decay: float | None = None


def build_param_groups(
    model: nn.Module,
    groups: Sequence[GroupSpec],
    *,
    lr: float,
    weight_decay: float,
    no_weight_decay: Sequence[str] = (),
) -> list[dict]:
    """Split the trainable parameters of ``model`` into optimizer parameter groups.

    Args:
        model: the module whose ``named_parameters()`` are grouped.
        groups: group specs in priority order (first match wins).
        lr: base LR for groups without their own and for unmatched parameters.
        weight_decay: base weight decay.
        no_weight_decay: globs of parameter names that get weight decay 0 (e.g. ``"*.bias"``).

    Returns:
        A list of dicts for ``torch.optim`` with keys ``params``, ``lr``, ``weight_decay``, ``name`` and
        ``param_names``. Empty groups are omitted.

    Raises:
        ValueError: no trainable parameter at all, or a pattern that matches no trainable parameter and no
            frozen parameter either (almost always a typo).
    """
    named = list(model.named_parameters())
    trainable = [(n, p) for n, p in named if p.requires_grad]
    if not trainable:
        raise ValueError("the model has no trainable parameters (is everything frozen?)")
    all_names = [n for n, _ in named]
    for g in groups:
        if not any(fnmatch.fnmatchcase(n, g.pattern) for n in all_names):
            raise ValueError(
                f"parameter group pattern {g.pattern!r} matches no parameter; names look like "
                f"{all_names[0]!r}, {all_names[-1]!r}"
            )
    buckets: dict[tuple[str, bool], list[tuple[str, nn.Parameter]]] = {}
    spec_of: dict[str, GroupSpec] = {g.pattern: g for g in groups}
    for n, p in trainable:
        key = next((g.pattern for g in groups if fnmatch.fnmatchcase(n, g.pattern)), "default")
        nwd = any(fnmatch.fnmatchcase(n, pat) for pat in no_weight_decay)
        buckets.setdefault((key, nwd), []).append((n, p))
    out: list[dict] = []
    order = [g.pattern for g in groups] + ["default"]
    for key in order:
        for nwd in (False, True):
            items = buckets.get((key, nwd))
            if not items:
                continue
            spec = spec_of.get(key)
            g_lr = spec.lr if spec is not None and spec.lr is not None else lr
            g_wd = spec.weight_decay if spec is not None and spec.weight_decay is not None else weight_decay
            out.append(
                {
                    "params": [p for _, p in items],
                    "param_names": [n for n, _ in items],
                    "lr": float(g_lr),
                    "weight_decay": 0.0 if nwd else float(g_wd),
                    "name": key + (" (no wd)" if nwd else ""),
                }
            )
    for pg in out:
        log.info(
            "param group %s: %d tensors, lr %.3g, wd %.3g",
            pg["name"],
            len(pg["params"]),
            pg["lr"],
            pg["weight_decay"],
        )
    return out


def build_optimizer(
    model: nn.Module,
    *,
    name: str = "adamw",
    lr: float = 1e-3,
    weight_decay: float = 0.01,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    groups: Sequence[GroupSpec] = (),
    no_weight_decay: Sequence[str] = (),
) -> torch.optim.Optimizer:
    """Build the optimizer over ``model``'s trainable parameters.

    Args:
        model: usually a ``DepthModel`` (frozen encoder parameters are skipped automatically).
        name: ``"adamw"`` (the paper's optimizer) or ``"adam"``/``"sgd"`` for experiments.
        lr, weight_decay, betas, eps: base hyper-parameters.
        groups, no_weight_decay: see ``build_param_groups``.

    Raises:
        ValueError: unknown optimizer name, or see ``build_param_groups``.
    """
    pg = build_param_groups(model, groups, lr=lr, weight_decay=weight_decay, no_weight_decay=no_weight_decay)
    b = cast("tuple[float, float]", tuple(betas))  # configs may hand over a 2-element list
    if name == "adamw":
        return torch.optim.AdamW(pg, lr=lr, betas=b, eps=eps, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(pg, lr=lr, betas=b, eps=eps, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(pg, lr=lr, momentum=betas[0], weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; valid: ['adamw', 'adam', 'sgd']")
