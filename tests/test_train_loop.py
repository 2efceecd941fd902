"""End-to-end training on the procedural dataset with the tiny preset: loss, resume equivalence, run directory."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import anydepth
from anydepth.cli.main import main
from anydepth.config import load_config
from anydepth.engine.config import TrainConfig
from anydepth.engine.distributed import DistInfo
from anydepth.engine.trainer import build_model_for_training, fit, setup, training_step

REPO = Path(__file__).resolve().parents[1]

TINY = [
    "model.preset=sdt_test",
    "data.train=[{name: synthetic, kwargs: {length: 8, size: [32, 32], seed: 0}}]",
    "data.val=[]",
    "data.size=[32, 32]",
    "data.num_workers=0",
    "train.batch_size=2",
    "train.epochs=0",
    "train.max_steps=6",
    "train.log_every=1",
    "train.ckpt_every=2",
    "train.keep_last=0",
    "train.tensorboard=false",
    "schedule.warmup_steps=2",
]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: no intra-op thread contention


def tiny(*extra: str) -> TrainConfig:
    return load_config(TrainConfig, [], [*TINY, *extra])


def _decoder_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k.startswith("decoder.")}


def _train_records(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == "train"]


def test_few_steps_on_one_batch_reduce_the_loss(tmp_path: Path) -> None:
    # a fixed batch without augmentation and a constant LR: the loss must go down
    cfg = tiny(
        "data.train=[{name: synthetic, kwargs: {length: 2, size: [32, 32], seed: 3}}]",
        "data.augment={hflip: 0.0, rotate_prob: 0.0}",
        "train.max_steps=6",
        "schedule.warmup_steps=0",
        "schedule.power=0.0",
        "optim.lr=3e-3",
    )
    res = fit(cfg, tmp_path / "run", progress=False)
    losses = [r["loss"] for r in _train_records(tmp_path / "run")]
    assert res.step == 6 and len(losses) == 6
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]
    assert min(losses[3:]) < 0.9 * losses[0]


def test_frozen_encoder_untouched_and_only_decoder_optimised(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = tiny("train.max_steps=2")
    ref = build_model_for_training(cfg)
    res = fit(cfg, tmp_path / "run", progress=False)
    model = res.model
    assert model is not None and model.encoder.frozen
    enc_before = {k: v for k, v in ref.state_dict().items() if k.startswith("encoder.")}
    enc_after = {k: v for k, v in model.state_dict().items() if k.startswith("encoder.")}
    assert all(torch.equal(enc_before[k], enc_after[k]) for k in enc_before)
    assert all(p.grad is None for p in model.encoder.parameters())
    dec_before, dec_after = _decoder_state(ref), _decoder_state(model)
    assert any(not torch.equal(dec_before[k], dec_after[k]) for k in dec_before)


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """The uninterrupted reference run of ``tiny()`` (6 steps, 4 micro-batches per epoch)."""
    run = tmp_path_factory.mktemp("straight") / "a"
    res = fit(tiny(), run, progress=False)
    return run, _decoder_state(res.model)


def test_setup_and_training_steps_are_fit(tmp_path: Path, straight_run: tuple[Path, dict]) -> None:
    # fit = setup + training_step per optimizer step (+ logging / validation / checkpoints around them)
    run = setup(tiny(), tmp_path / "run", dist_info=DistInfo(), resume=False)
    losses = []
    while run.step < run.total_steps:
        losses.append(float(training_step(run).loss))
    assert run.step == 6 and run.epoch == 1 and run.batch_in_epoch == 2  # 4 micro-batches per epoch
    ref, got = straight_run[1], _decoder_state(run.model)
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    logged = [r["loss"] for r in _train_records(straight_run[0])]
    assert losses == logged


def test_resume_reproduces_uninterrupted_run(tmp_path: Path, straight_run: tuple[Path, dict]) -> None:
    cfg = tiny()  # the resume point (step 3) is mid-epoch; the run then crosses an epoch boundary
    run_a, a = straight_run
    first = fit(cfg, tmp_path / "b", progress=False, stop_after=3)
    assert first.step == 3 and first.final_path is None
    assert (tmp_path / "b" / "checkpoints" / "step_00000003.pt").is_file()
    resumed = fit(cfg, tmp_path / "b", progress=False, resume=True)
    assert resumed.step == 6
    b = _decoder_state(resumed.model)
    assert a.keys() == b.keys()
    worst = max(float((a[k].double() - b[k].double()).abs().max()) if a[k].numel() else 0.0 for k in a)
    assert worst <= 1e-7, f"resumed run differs by {worst}"
    # the log of the resumed run holds each step once, with the same losses as the uninterrupted run
    la = [(r["step"], r["loss"]) for r in _train_records(run_a)]
    lb = [(r["step"], r["loss"]) for r in _train_records(tmp_path / "b")]
    assert [s for s, _ in lb] == [1, 2, 3, 4, 5, 6]
    assert [s for s, _ in la] == [s for s, _ in lb]
    assert [v for _, v in lb] == pytest.approx([v for _, v in la], abs=1e-6)


def test_resume_after_kill_between_checkpoints(tmp_path: Path, straight_run: tuple[Path, dict]) -> None:
    # run 5 of 6 steps with checkpoints every 2 steps, then lose everything after step 4 (as if killed at step 5)
    cfg = tiny()
    _, a = straight_run
    fit(cfg, tmp_path / "b", progress=False, stop_after=5)
    ckpts = tmp_path / "b" / "checkpoints"
    (ckpts / "step_00000005.pt").unlink()  # the kill happened before this one was written
    resumed = fit(cfg, tmp_path / "b", progress=False, resume=True)
    b = _decoder_state(resumed.model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["step"] for r in _train_records(tmp_path / "b")] == [1, 2, 3, 4, 5, 6]


def test_run_directory_contents_and_validation(tmp_path: Path) -> None:
    cfg = tiny(
        "data.val=[{name: synthetic, kwargs: {length: 3, size: [32, 32], seed: 99}}]",
        "val.every_steps=2",
        "val.batch_size=2",
        "train.max_steps=4",
        "train.keep_last=1",
        "train.tensorboard=true",
        "ema.enabled=true",
        "ema.decay=0.9",
    )
    run = tmp_path / "run"
    res = fit(cfg, run, progress=False)
    assert load_config(TrainConfig, [run / "config.yaml"]) == cfg
    version = json.loads((run / "version.json").read_text())
    assert version["anydepth_version"] == anydepth.__version__ and "git_commit" in version
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in recs if r["split"] == "val"]
    assert [r["step"] for r in val] == [2, 4]
    assert all(0 <= r["abs_rel"] and 0 <= r["delta1"] <= 1 and r["num_images"] == 3 for r in val)
    assert {"loss", "loss_ssi", "loss_grad", "lr", "grad_norm", "images_per_s"} <= set(recs[0])
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step_00000004.pt"]  # keep_last=1
    assert res.best_path is not None and res.best_path.is_file() and res.final_path is not None
    best = anydepth.load_model(res.best_path)
    assert best.config.name == "sdt_test"
    with torch.no_grad():
        out = best(torch.rand(1, 3, 32, 32))
    assert out.shape == (1, 1, 32, 32) and torch.isfinite(out).all()
    pytest.importorskip("tensorboard")
    assert any((run / "tb").iterdir())


def test_refuses_to_clobber_and_needs_checkpoint_to_resume(tmp_path: Path) -> None:
    cfg = tiny("train.max_steps=2")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        fit(cfg, tmp_path / "run", progress=False, resume=True)
    fit(cfg, tmp_path / "run", progress=False)
    with pytest.raises(FileExistsError, match="--resume"):
        fit(cfg, tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match="total_steps"):
        fit(tiny("train.max_steps=3"), tmp_path / "run", progress=False, resume=True)


@pytest.mark.parametrize(
    "extra",
    [
        ("train.precision=bf16",),
        ("train.precision=fp16", "train.grad_accum=2", "train.batch_size=1"),
        ("model.freeze_encoder=false", "optim.encoder_lr=1e-4", "loss.ssi=lstsq", "loss.trim=0.2"),
    ],
    ids=["bf16", "fp16-accum", "unfrozen-lstsq"],
)
def test_precision_accumulation_and_unfrozen_encoder(tmp_path: Path, extra: tuple[str, ...]) -> None:
    torch.manual_seed(0)
    cfg = tiny("train.max_steps=2", *extra)
    ref = build_model_for_training(cfg)
    res = fit(cfg, tmp_path / "run", progress=False)
    assert res.step == 2 and math.isfinite(res.last_loss)
    enc_changed = any(
        not torch.equal(v, res.model.state_dict()[k])
        for k, v in ref.state_dict().items()
        if k.startswith("encoder.")
    )
    assert enc_changed == (not cfg.model.freeze_encoder)
    if cfg.train.grad_accum == 2:  # 2 steps x 2 micro-batches of 1 = 4 samples consumed
        state = torch.load(tmp_path / "run" / "checkpoints" / "step_00000002.pt", weights_only=True)
        assert state["batch_in_epoch"] == 4 and state["scaler"] is not None


def test_cli_train_stop_and_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg_path = REPO / "configs" / "train" / "cpu_tiny.yaml"
    out = tmp_path / "cli"
    sets = [
        "--set", "data.train=[{name: synthetic, kwargs: {length: 8, size: [32, 32]}}]",
        "--set", "data.val=[]", "--set", "data.size=[32,32]", "--set", "train.tensorboard=false",
    ]  # fmt: skip
    rc = main(
        [
            "train",
            "--config",
            str(cfg_path),
            *sets,
            "--output",
            str(out),
            "--no-progress",
            "--stop-after",
            "1",
        ]
    )
    assert rc == 0
    assert "continue with --resume" in capsys.readouterr().out
    # resume from the saved config; a different config is refused
    assert main(["train", "--output", str(out), "--resume", "--no-progress", "--set", "optim.lr=1"]) == 2
    assert "differs" in capsys.readouterr().err
    assert main(["train", "--output", str(out), "--resume", "--no-progress"]) == 0
    assert (out / "model_final.safetensors").is_file()
    assert main(["train", "--config", str(cfg_path), "--set", "optim.lrr=1", "--print-config"]) == 2
    assert "optim.lrr" in capsys.readouterr().err
    assert main(["train", "--config", str(cfg_path), "--print-config"]) == 0
    assert "name: cpu_tiny" in capsys.readouterr().out
