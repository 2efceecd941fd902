"""Schedule values, epoch->step conversion, parameter groups, EMA, sharding sampler, checkpoint atomicity."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from anydepth.engine.checkpoint import (
    atomic_torch_save,
    capture_rng_state,
    find_latest,
    load_training_state,
    prune_checkpoints,
    restore_rng_state,
    save_training_state,
)
from anydepth.engine.distributed import ShardedSampler
from anydepth.engine.ema import ModelEMA
from anydepth.engine.optim import GroupSpec, build_optimizer, build_param_groups
from anydepth.engine.schedule import WarmupPoly, build_scheduler, steps_from_epochs


# ---------------------------------------------------------------------------------------------- schedule
def test_warmup_poly_known_values() -> None:
    f = WarmupPoly(total_steps=100, warmup_steps=40, power=0.9, start_factor=0.0, end_factor=0.0)
    assert f(0) == 0.0
    assert f(10) == pytest.approx(0.25)
    assert f(20) == pytest.approx(0.5)
    assert f(40) == pytest.approx(1.0)  # peak exactly at the end of the warm-up
    assert f(70) == pytest.approx(0.5**0.9)  # half-way through the decay
    assert f(99) == pytest.approx((1 / 60) ** 0.9)
    assert f(100) == 0.0 and f(1000) == 0.0
    g = WarmupPoly(total_steps=10, warmup_steps=0, power=1.0, start_factor=0.5, end_factor=0.1)
    assert g(0) == pytest.approx(1.0) and g(5) == pytest.approx(0.1 + 0.9 * 0.5)
    h = WarmupPoly(total_steps=10, warmup_steps=4, start_factor=0.001)
    assert h(0) == pytest.approx(0.001) and h(2) == pytest.approx(0.001 + 0.999 * 0.5)
    with pytest.raises(ValueError, match="warmup_steps"):
        WarmupPoly(total_steps=10, warmup_steps=10)


def test_paper_schedule_two_of_five_epochs() -> None:
    # 5 epochs of 1000 steps, warm-up = 2 epochs: LR peaks at step 2000 and decays over 3000 steps
    sched = WarmupPoly(total_steps=5000, warmup_steps=2000, power=0.9, start_factor=0.001)
    assert sched(1000) == pytest.approx(0.001 + 0.999 * 0.5)
    assert sched(2000) == 1.0
    assert sched(3500) == pytest.approx(0.5**0.9)


def test_scheduler_drives_group_lrs_and_is_picklable() -> None:
    model = nn.Linear(2, 2)
    opt = torch.optim.AdamW(
        [{"params": [model.weight], "lr": 1e-3}, {"params": [model.bias], "lr": 1e-5}], lr=1e-3
    )
    sch = build_scheduler(opt, total_steps=10, warmup_steps=2, power=0.9, start_factor=0.0)
    lrs = []
    for _ in range(4):
        lrs.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sch.step()
    assert lrs[0] == [0.0, 0.0]
    assert lrs[1] == pytest.approx([0.5e-3, 0.5e-5])
    assert lrs[2] == pytest.approx([1e-3, 1e-5])
    assert lrs[3] == pytest.approx([1e-3 * (7 / 8) ** 0.9, 1e-5 * (7 / 8) ** 0.9])
    state = sch.state_dict()
    pickle.dumps(state)
    sch2 = build_scheduler(opt, total_steps=10, warmup_steps=2, power=0.9, start_factor=0.0)
    sch2.load_state_dict(state)
    assert sch2.last_epoch == sch.last_epoch


def test_steps_from_epochs() -> None:
    # paper: 369,297 samples, 5 epochs, global batch 16 (8 GPUs x 2)
    spe, total = steps_from_epochs(369_297, batch_size=2, world_size=8, epochs=5)
    assert spe == math.ceil(369_297 / 8) // 2 == 23_081
    assert total == 5 * 23_081
    assert steps_from_epochs(10, batch_size=3, epochs=2) == (3, 6)  # 3 full batches, last one dropped
    assert steps_from_epochs(10, batch_size=3, grad_accum=2, epochs=1) == (1, 1)
    assert steps_from_epochs(10, batch_size=2, world_size=2, epochs=1.5) == (2, 3)  # 5 per rank -> 2 batches
    with pytest.raises(ValueError, match="too small"):
        steps_from_epochs(3, batch_size=4)


# ------------------------------------------------------------------------------------------ param groups
class _Toy(nn.Module):
    def __init__(self, freeze_encoder: bool = True) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3))
        self.decoder = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))
        if freeze_encoder:
            self.encoder.requires_grad_(False)


def _names(group: dict) -> set[str]:
    return set(group["param_names"])


def test_param_groups_by_glob_frozen_encoder_is_excluded() -> None:
    m = _Toy(freeze_encoder=True)
    groups = build_param_groups(
        m, [GroupSpec("decoder.*"), GroupSpec("encoder.*", lr=1e-5)], lr=1e-3, weight_decay=0.01
    )
    assert len(groups) == 1
    assert groups[0]["name"] == "decoder.*" and groups[0]["lr"] == 1e-3 and groups[0]["weight_decay"] == 0.01
    assert _names(groups[0]) == {n for n, _ in m.decoder.named_parameters(prefix="decoder")}


def test_param_groups_unfrozen_encoder_first_match_no_decay_and_default() -> None:
    m = _Toy(freeze_encoder=False)
    groups = build_param_groups(
        m,
        [GroupSpec("decoder.2.*", lr=5e-4, weight_decay=0.1), GroupSpec("encoder.*", lr=1e-5)],
        lr=1e-3,
        weight_decay=0.01,
        no_weight_decay=["*.bias"],
    )
    by_name = {g["name"]: g for g in groups}
    assert by_name["decoder.2.*"]["param_names"] == ["decoder.2.weight"]
    assert by_name["decoder.2.*"]["lr"] == 5e-4 and by_name["decoder.2.*"]["weight_decay"] == 0.1
    assert by_name["decoder.2.* (no wd)"]["param_names"] == ["decoder.2.bias"]
    assert by_name["decoder.2.* (no wd)"]["weight_decay"] == 0.0
    assert by_name["encoder.*"]["lr"] == 1e-5 and "encoder.0.weight" in _names(by_name["encoder.*"])
    # unmatched decoder parameters land in the default group with the base LR
    assert {"decoder.0.weight", "decoder.1.weight"} <= _names(by_name["default"])
    assert by_name["default"]["lr"] == 1e-3
    covered = set().union(*(_names(g) for g in groups))
    assert covered == {n for n, _ in m.named_parameters()}


def test_param_group_errors_and_optimizer() -> None:
    m = _Toy(freeze_encoder=True)
    with pytest.raises(ValueError, match="matches no parameter"):
        build_param_groups(m, [GroupSpec("decodr.*")], lr=1e-3, weight_decay=0.0)
    m.decoder.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable"):
        build_param_groups(m, [], lr=1e-3, weight_decay=0.0)
    m2 = _Toy()
    opt = build_optimizer(m2, lr=2e-3, weight_decay=0.05, betas=(0.8, 0.9), groups=[GroupSpec("decoder.*")])
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.defaults["betas"] == (0.8, 0.9)
    assert opt.param_groups[0]["lr"] == 2e-3 and opt.param_groups[0]["weight_decay"] == 0.05
    with pytest.raises(ValueError, match="unknown optimizer"):
        build_optimizer(m2, name="lion")


# ----------------------------------------------------------------------------------------------------- EMA
def test_ema_update_swap_and_state() -> None:
    torch.manual_seed(0)
    m = nn.Linear(2, 1)
    ema = ModelEMA(m, decay=0.5, warmup=False)
    w0 = m.weight.detach().clone()
    with torch.no_grad():
        m.weight.add_(1.0)
    ema.update(m)
    assert torch.allclose(ema.shadow["weight"], w0 + 0.5)
    with ema.swapped(m):
        assert torch.allclose(m.weight, w0 + 0.5)
    assert torch.allclose(m.weight, w0 + 1.0)
    ema2 = ModelEMA(m, decay=0.5, warmup=False)
    ema2.load_state_dict(ema.state_dict())
    assert torch.equal(ema2.shadow["weight"], ema.shadow["weight"]) and ema2.updates == 1
    assert ModelEMA(m, decay=0.999, warmup=True).current_decay() == pytest.approx(0.1)


# ------------------------------------------------------------------------------------------------- sampler
def test_sharded_sampler_partitions_and_resumes() -> None:
    n, world = 10, 3
    shards = [ShardedSampler(n, rank=r, world_size=world, seed=5) for r in range(world)]
    for s in shards:
        s.set_epoch(2)
    parts = [list(s) for s in shards]
    assert all(len(p) == 4 for p in parts)  # ceil(10/3), padded by wrapping
    assert set().union(*map(set, parts)) == set(range(n))
    again = ShardedSampler(n, rank=1, world_size=world, seed=5)
    again.set_epoch(2, skip=3)
    assert list(again) == parts[1][3:] and len(again) == 1
    e3 = ShardedSampler(n, seed=5)
    e3.set_epoch(3)
    e2 = ShardedSampler(n, seed=5)
    e2.set_epoch(2)
    assert list(e3) != list(e2) and sorted(e3) == list(range(n))
    tup = ShardedSampler(4, shuffle=False, with_epoch=True)
    tup.set_epoch(7)
    assert list(tup) == [(7, 0), (7, 1), (7, 2), (7, 3)]


# --------------------------------------------------------------------------------------------- checkpoints
def test_atomic_save_leaves_no_partial_file(tmp_path: Path) -> None:
    dst = tmp_path / "ckpt.pt"
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        atomic_torch_save({"ok": torch.zeros(3), "bad": lambda x: x}, dst)  # lambdas cannot be pickled
    assert not dst.exists()
    assert list(tmp_path.iterdir()) == []
    atomic_torch_save({"v": torch.ones(2)}, dst)
    before = dst.read_bytes()
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        atomic_torch_save({"v": torch.zeros(2), "bad": lambda x: x}, dst)
    assert dst.read_bytes() == before  # the previous checkpoint is intact
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_training_state_round_trip_rng_and_pruning(tmp_path: Path) -> None:
    import random

    import numpy as np

    torch.manual_seed(3)
    random.seed(3)
    np.random.seed(3)
    rng = capture_rng_state()
    expected = (torch.rand(3), random.random(), np.random.rand())
    for step in (5, 10, 15):
        save_training_state(
            tmp_path / f"step_{step:08d}.pt", {"step": step, "rng": rng, "w": torch.arange(3)}
        )
    assert find_latest(tmp_path).name == "step_00000015.pt"
    state = load_training_state(find_latest(tmp_path))
    assert state["step"] == 15 and torch.equal(state["w"], torch.arange(3))
    restore_rng_state(state["rng"])
    assert torch.equal(torch.rand(3), expected[0])
    assert random.random() == expected[1] and np.random.rand() == expected[2]
    removed = prune_checkpoints(tmp_path, keep_last=2)
    assert [p.name for p in removed] == ["step_00000005.pt"]
    (tmp_path / "notes.pt").write_bytes(b"x")
    with pytest.raises(ValueError, match="not an anydepth training checkpoint"):
        load_training_state(tmp_path / "notes.pt")
    with pytest.raises(FileNotFoundError):
        load_training_state(tmp_path / "missing.pt")
