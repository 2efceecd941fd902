"""The selection rule of the data filter on hand-made score tables."""

from __future__ import annotations

import math
import random

import pytest

from anydepth.data.filtering.select import SelectionConfig, n_to_drop, select


def _row(ds: str, i: int, s_dist: float, s_grad: float, vf: float = 1.0, status: str = "ok") -> dict:
    return {
        "dataset": ds,
        "index": i,
        "rgb_path": f"{ds}/rgb/{i:03d}.png",
        "depth_path": f"{ds}/depth/{i:03d}.png",
        "status": status,
        "valid_fraction": vf,
        "s_dist": s_dist,
        "s_grad": s_grad,
    }


def _table() -> list[dict]:
    # dataset A: 10 eligible samples + 1 low-valid + 1 unreadable
    rows = [
        _row("A", i, s_dist=0.1 * (i + 1), s_grad=[0.9, 0.1, 0.8, 0.2, 0.7, 0.6, 0.5, 0.4, 0.3, 0.95][i])
        for i in range(10)
    ]
    rows.append(_row("A", 10, 0.0, 0.0, vf=0.19))
    rows.append(_row("A", 11, 0.0, 0.0, status="error"))
    # dataset B: 5 eligible samples with higher scores
    rows += [_row("B", i, 0.5 + 0.1 * i, 0.5 + 0.1 * i) for i in range(5)]
    return rows


def test_union_per_dataset() -> None:
    rows = _table()
    res = select(rows)
    r = {(x["dataset"], x["index"]): reason for x, reason in zip(rows, res.reasons, strict=True)}
    # A: floor(0.2 * 10) = 2 per metric; lowest S_dist = A0, A1; lowest S_grad = A1 (0.1), A3 (0.2)
    assert r[("A", 0)] == "low_s_dist"
    assert r[("A", 1)] == "low_s_dist+low_s_grad"
    assert r[("A", 3)] == "low_s_grad"
    assert r[("A", 10)] == "low_valid"
    assert r[("A", 11)] == "unreadable"
    assert [i for i in range(10) if r[("A", i)] == ""] == [2, 4, 5, 6, 7, 8, 9]
    # B: floor(0.2 * 5) = 1 per metric; B0 is lowest on both
    assert r[("B", 0)] == "low_s_dist+low_s_grad"
    assert all(r[("B", i)] == "" for i in range(1, 5))
    ca, cb = res.groups["A"], res.groups["B"]
    assert (ca.n_eligible, ca.n_drop_dist, ca.n_drop_grad) == (10, 2, 2)
    assert ca.cutoff_s_dist == pytest.approx(0.2) and ca.cutoff_s_grad == pytest.approx(0.2)
    assert (cb.n_eligible, cb.n_drop_dist, cb.cutoff_s_dist) == (5, 1, 0.5)
    assert res.kept.count(True) == 7 + 4


def test_sequential_mode() -> None:
    rows = _table()
    res = select(rows, SelectionConfig(mode="sequential"))
    r = {(x["dataset"], x["index"]): reason for x, reason in zip(rows, res.reasons, strict=True)}
    # A: S_dist drops A0, A1; of the 8 left, floor(1.6) = 1 by S_grad: A3 (0.2)
    assert (r[("A", 0)], r[("A", 1)], r[("A", 3)]) == ("low_s_dist", "low_s_dist", "low_s_grad")
    assert res.groups["A"].n_drop_grad == 1
    assert sum(1 for i in range(10) if r[("A", i)] == "") == 7


def test_global_scope_pools_datasets() -> None:
    rows = _table()
    res = select(rows, SelectionConfig(scope="global"))
    assert set(res.groups) == {"*"}
    g = res.groups["*"]
    assert (g.n_eligible, g.n_drop_dist, g.n_drop_grad) == (15, 3, 3)
    r = {(x["dataset"], x["index"]): reason for x, reason in zip(rows, res.reasons, strict=True)}
    # the 3 lowest S_dist overall are A0..A2 (B starts at 0.5); B is untouched by S_dist now
    assert r[("A", 2)] == "low_s_dist" and r[("B", 0)] == ""


def test_fractions_and_min_valid_are_options() -> None:
    rows = _table()
    res = select(rows, SelectionConfig(min_valid=0.0, drop_dist=0.0, drop_grad=0.5))
    r = {(x["dataset"], x["index"]): reason for x, reason in zip(rows, res.reasons, strict=True)}
    assert r[("A", 10)] != "low_valid"  # kept in the pool now: 11 eligible in A
    assert res.groups["A"].n_eligible == 11 and res.groups["A"].n_drop_grad == 5
    assert not any(x == "low_s_dist" for x in res.reasons)


def test_ties_are_broken_by_path_independent_of_input_order() -> None:
    rows = [_row("A", i, s_dist=0.5, s_grad=1.0) for i in range(10)]
    res = select(rows)
    dropped = {x["rgb_path"] for x, reason in zip(rows, res.reasons, strict=True) if reason}
    assert dropped == {"A/rgb/000.png", "A/rgb/001.png"}  # path order decides among equal scores
    shuffled = rows[:]
    random.Random(0).shuffle(shuffled)
    res2 = select(shuffled)
    dropped2 = {x["rgb_path"] for x, reason in zip(shuffled, res2.reasons, strict=True) if reason}
    assert dropped2 == dropped


def test_nan_scores_rank_lowest() -> None:
    rows = [_row("A", i, s_dist=0.5 + 0.01 * i, s_grad=0.5) for i in range(5)]
    rows[3]["s_dist"] = math.nan
    res = select(rows)
    assert res.reasons[3].startswith("low_s_dist")


def test_n_to_drop_and_config_validation() -> None:
    assert n_to_drop(0.2, 10) == 2 and n_to_drop(0.2, 4) == 0 and n_to_drop(0.29, 100) == 29
    assert n_to_drop(0.2, 39648) == 7929
    for bad in ({"min_valid": 1.5}, {"drop_dist": -0.1}, {"mode": "both"}, {"scope": "world"}):
        with pytest.raises(ValueError):
            SelectionConfig(**bad)
    assert select([]).reasons == []
