"""Distributed data parallel on CPU: 2 processes with gloo train in lockstep; only rank 0 writes files."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

REPO = Path(__file__).resolve().parents[1]

TINY = [
    "model.preset=sdt_test",
    "data.train=[{name: synthetic, kwargs: {length: 10, size: [32, 32], seed: 0}}]",
    "data.val=[{name: synthetic, kwargs: {length: 3, size: [32, 32], seed: 5}}]",
    "data.size=[32, 32]",
    "data.num_workers=0",
    "train.batch_size=2",
    "train.epochs=0",
    "train.max_steps=3",
    "train.log_every=1",
    "train.ckpt_every=0",
    "train.tensorboard=false",
    "schedule.warmup_steps=1",
    "val.batch_size=2",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    from anydepth.config import load_config
    from anydepth.engine.config import TrainConfig
    from anydepth.engine.distributed import cleanup_distributed, init_distributed
    from anydepth.engine.trainer import fit

    info = init_distributed("cpu")
    assert info.world_size == world and info.rank == rank and info.distributed
    cfg = load_config(TrainConfig, [], TINY)
    # every rank gets its own run directory so we can check that only rank 0 writes
    res = fit(cfg, Path(out) / f"run{rank}", dist_info=info, progress=False)
    params = {n: p.detach().clone() for n, p in res.model.named_parameters() if n.startswith("decoder.")}
    torch.save({"params": params, "step": res.step, "loss": res.last_loss, "best": res.best_metric},
               Path(out) / f"rank{rank}.pt")  # fmt: skip
    cleanup_distributed(info)


def test_two_process_gloo_lockstep(tmp_path: Path) -> None:
    world = 2
    mp.spawn(_worker, args=(world, _free_port(), str(tmp_path)), nprocs=world, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["step"] == r1["step"] == 3
    assert r0["loss"] == r1["loss"]  # the logged loss is the all-reduced mean
    assert r0["best"] == r1["best"]  # validation metrics are gathered over both shards
    assert r0["params"].keys() == r1["params"].keys()
    for k in r0["params"]:
        assert torch.equal(r0["params"][k], r1["params"][k]), f"{k} differs across ranks"
    # the weights moved away from the (seeded, identical) initialisation
    from anydepth.config import load_config
    from anydepth.engine.config import TrainConfig
    from anydepth.engine.trainer import build_model_for_training

    torch.manual_seed(0)
    init = dict(build_model_for_training(load_config(TrainConfig, [], TINY)).named_parameters())
    assert any(not torch.equal(init[k], r0["params"][k]) for k in r0["params"])
    # only rank 0 wrote anything
    files0 = {
        p.relative_to(tmp_path / "run0").as_posix() for p in (tmp_path / "run0").rglob("*") if p.is_file()
    }
    assert {"config.yaml", "version.json", "metrics.jsonl", "checkpoints/step_00000003.pt"} <= files0
    assert {"model_best.safetensors", "model_final.safetensors"} <= files0
    rank1 = tmp_path / "run1"
    assert not rank1.exists() or not [p for p in rank1.rglob("*") if p.is_file()]
    state = torch.load(tmp_path / "run0" / "checkpoints" / "step_00000003.pt", weights_only=True)
    # 10 samples / 2 ranks / batch 2 -> 2 micro-batches per epoch: step 3 is the first batch of epoch 1
    assert state["world_size"] == 2 and state["epoch"] == 1 and state["batch_in_epoch"] == 1


@pytest.mark.slow
def test_torchrun_cli_two_processes(tmp_path: Path) -> None:
    """The documented launch command: ``torchrun --nproc_per_node 2 -m anydepth.cli.main train ...``."""
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun not installed next to the interpreter")
    sets = [a for item in TINY for a in ("--set", item)]
    cmd = [
        str(torchrun), "--nproc_per_node", "2", "--master_port", str(_free_port()), "-m", "anydepth.cli.main",
        "train", "--config", str(REPO / "configs" / "train" / "cpu_tiny.yaml"), *sets,
        "--output", str(tmp_path / "run"), "--device", "cpu", "--no-progress",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "trained 3/3 steps" in proc.stdout
    assert (tmp_path / "run" / "model_final.safetensors").is_file()
