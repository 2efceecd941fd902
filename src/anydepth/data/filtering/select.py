"""The selection rule of the AnyDepth data filter: which scored samples are kept (paper §4.3.1 / Appendix A.2).

Rule (defaults = the paper and this project's reading of its silent points):

1. Samples that could not be read are removed (reason ``unreadable``).
2. Samples whose valid fraction is below ``min_valid`` (0.2) are removed (``low_valid``).
3. Among the remaining ("eligible") samples of each group (each dataset with ``scope="dataset"``, all together
   with ``scope="global"``), the lowest ``drop_dist`` (20%) by ``S_dist`` and the lowest ``drop_grad`` (20%) by
   ``S_grad`` are removed. With ``mode="union"`` both sets are chosen independently from the eligible samples and
   their union is removed (reasons ``low_s_dist``, ``low_s_grad`` or ``low_s_dist+low_s_grad``); with
   ``mode="sequential"`` the ``S_dist`` cut is applied first and the ``S_grad`` fraction is taken of what remains.

Counting and ties (deterministic, independent of the order of the input lists):

* The number removed from ``n`` eligible samples is ``floor(fraction * n)`` (never more than the stated fraction).
* Samples are ranked by ``(score, rgb_path, depth_path, dataset, index)`` ascending, so among equal scores the
  sample whose path sorts first is removed first. A nan score ranks lowest.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["SelectionConfig", "SelectionResult", "GroupCut", "select", "REASONS", "n_to_drop"]

#: Every removal reason, in the order they are tested.
REASONS: tuple[str, ...] = ("unreadable", "low_valid", "low_s_dist", "low_s_grad", "low_s_dist+low_s_grad")


@dataclass(frozen=True)
class SelectionConfig:
    """Options of the selection rule.

    Attributes:
        min_valid: remove samples whose valid fraction is below this (0.2).
        drop_dist: fraction of eligible samples removed for the lowest ``S_dist`` (0.2).
        drop_grad: fraction removed for the lowest ``S_grad`` (0.2).
        mode: ``"union"`` (independent cuts, union removed; default) or ``"sequential"`` (``S_dist`` cut first,
            then the ``S_grad`` fraction of the rest).
        scope: ``"dataset"`` (fractions per dataset; default) or ``"global"`` (over all datasets together).
    """

    min_valid: float = 0.2
    drop_dist: float = 0.2
    drop_grad: float = 0.2
    mode: str = "union"
    scope: str = "dataset"

    def __post_init__(self) -> None:
        for name in ("min_valid", "drop_dist", "drop_grad"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}")
        if self.mode not in ("union", "sequential"):
            raise ValueError(f"mode must be 'union' or 'sequential', got {self.mode!r}")
        if self.scope not in ("dataset", "global"):
            raise ValueError(f"scope must be 'dataset' or 'global', got {self.scope!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GroupCut:
    """What the rule did in one group (a dataset, or ``"*"`` for the global scope).

    ``cutoff_s_dist``/``cutoff_s_grad`` are the highest score that was removed by that metric (None if nothing
    was); samples strictly above it were kept by that metric.
    """

    n_eligible: int = 0
    n_drop_dist: int = 0
    n_drop_grad: int = 0
    cutoff_s_dist: float | None = None
    cutoff_s_grad: float | None = None


@dataclass
class SelectionResult:
    """Per-record decisions (``reasons[i] == ""`` means kept) and the cut of each group."""

    reasons: list[str]
    groups: dict[str, GroupCut] = field(default_factory=dict)

    @property
    def kept(self) -> list[bool]:
        return [r == "" for r in self.reasons]


def n_to_drop(fraction: float, n: int) -> int:
    """``floor(fraction * n)``, robust to binary rounding (0.29 * 100 -> 29)."""
    return int(math.floor(fraction * n + 1e-9))


def _score(v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return -math.inf
    return -math.inf if math.isnan(f) else f


def _lowest(records: Sequence[Mapping[str, Any]], idx: list[int], key: str, n_drop: int) -> list[int]:
    """Indices (into records) of the ``n_drop`` lowest by ``key`` with the documented tie-break."""
    if n_drop <= 0:
        return []
    order = sorted(
        idx,
        key=lambda i: (
            _score(records[i][key]),
            str(records[i]["rgb_path"]),
            str(records[i]["depth_path"]),
            str(records[i]["dataset"]),
            int(records[i]["index"]),
        ),
    )
    return order[:n_drop]


def select(records: Sequence[Mapping[str, Any]], config: SelectionConfig | None = None) -> SelectionResult:
    """Apply the selection rule to a score table.

    Args:
        records: one mapping per sample with keys ``dataset``, ``index``, ``rgb_path``, ``depth_path``,
            ``status`` (``"ok"`` or ``"error"``), ``valid_fraction``, ``s_dist``, ``s_grad``.
        config: the rule's options (defaults: the paper's).

    Returns:
        :class:`SelectionResult` with one reason per record (``""`` = kept) and the cut of every group.
    """
    cfg = config or SelectionConfig()
    reasons = [""] * len(records)
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        if r.get("status", "ok") != "ok":
            reasons[i] = "unreadable"
            continue
        vf = _score(r["valid_fraction"])
        if vf < cfg.min_valid:
            reasons[i] = "low_valid"
            continue
        g = str(r["dataset"]) if cfg.scope == "dataset" else "*"
        groups.setdefault(g, []).append(i)
    cuts: dict[str, GroupCut] = {}
    for g, idx in groups.items():
        n = len(idx)
        nd = n_to_drop(cfg.drop_dist, n)
        low_d = _lowest(records, idx, "s_dist", nd)
        if cfg.mode == "union":
            rest = idx
        else:
            removed = set(low_d)
            rest = [i for i in idx if i not in removed]
        ng = n_to_drop(cfg.drop_grad, len(rest))
        low_g = _lowest(records, rest, "s_grad", ng)
        set_d, set_g = set(low_d), set(low_g)
        for i in set_d | set_g:
            if i in set_d and i in set_g:
                reasons[i] = "low_s_dist+low_s_grad"
            elif i in set_d:
                reasons[i] = "low_s_dist"
            else:
                reasons[i] = "low_s_grad"
        cuts[g] = GroupCut(
            n_eligible=n,
            n_drop_dist=nd,
            n_drop_grad=ng,
            cutoff_s_dist=max((_score(records[i]["s_dist"]) for i in low_d), default=None),
            cutoff_s_grad=max((_score(records[i]["s_grad"]) for i in low_g), default=None),
        )
    return SelectionResult(reasons=reasons, groups=cuts)
