"""Training under hostile conditions (issue #18 items 1, 9, 10): divergence stopped before backward with the last
good checkpoint kept, run-directory hygiene (fresh runs refuse non-empty directories, resume drops records past
the checkpoint, torn records), byte-identical model files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

import anydepth
from anydepth.cli.main import main
from anydepth.engine.checkpoint import find_latest, load_training_state
from anydepth.engine.config import TrainConfig
from anydepth.engine.trainer import fit
from fault_corpus import strict_json_load
from test_train_loop import tiny as loop_tiny

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(*extra: str) -> TrainConfig:
    """The tiny recipe of test_train_loop with a checkpoint every step and no warm-up."""
    return loop_tiny("train.max_steps=4", "train.ckpt_every=1", "schedule.warmup_steps=0", *extra)


def _cli(tmp: Path, *extra: str) -> list[str]:
    """``--config`` (the tiny recipe as a YAML file) and ``--set`` arguments for ``anydepth train``."""
    from anydepth.config import config_to_yaml

    cfg = tmp / "tiny.yaml"
    cfg.write_text(config_to_yaml(tiny()))
    return ["--config", str(cfg), *[a for s in extra for a in ("--set", s)]]


def test_divergence_stops_before_backward_and_keeps_the_last_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # lr=1e30: step 1 is finite, its update makes every weight huge, the forward of step 2 is NaN. Before the
    # fix, step 2's backward crashed the process (SIGSEGV); now it stops there, before backward, exit 1.
    out = tmp_path / "run"
    rc = main(
        [
            "train",
            "--output",
            str(out),
            "--no-progress",
            *_cli(tmp_path, "optim.lr=1e30", "optim.grad_clip=0"),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 1, err
    line = err.strip().splitlines()[-1]
    assert "non-finite loss" in line and "before backward" in line and "Traceback" not in err
    ckpt = find_latest(out / "checkpoints")
    assert ckpt is not None and ckpt.name == "step_00000001.pt" and str(ckpt) in line
    state = load_training_state(ckpt)  # complete and loadable
    assert state["step"] == 1 and all(torch.isfinite(v).all() for v in state["model"].values())
    assert not (out / "model_final.safetensors").exists()
    for ln in (out / "metrics.jsonl").read_text().splitlines():
        json.loads(ln, parse_constant=lambda t: pytest.fail(f"bare {t} in metrics.jsonl"))


def test_nonfinite_gradient_stops_before_the_optimizer_step(tmp_path: Path) -> None:
    from anydepth.engine.distributed import DistInfo
    from anydepth.engine.trainer import setup, training_step

    run = setup(tiny(), tmp_path / "run", dist_info=DistInfo(), resume=False)
    before = {
        k: v.detach().clone() for k, v in run.model.named_parameters()
    }  # (BN statistics move in forward)
    p = run.trainable[0]
    p.register_hook(lambda g: torch.full_like(g, float("inf")))
    with pytest.raises(FloatingPointError, match="non-finite gradient norm.*before the optimizer step"):
        training_step(run)
    after = dict(run.model.named_parameters())
    assert all(torch.equal(v, after[k]) for k, v in before.items()), "weights changed by a non-finite step"
    run.logger.close()


def test_run_directory_rules(tmp_path: Path) -> None:
    out = tmp_path / "run"
    fit(tiny("train.max_steps=2"), out, progress=False)
    # a killed run's directory: a fresh run refuses it, naming what it holds and the two ways on
    with pytest.raises(FileExistsError, match=r"not empty.*--resume.*--overwrite"):
        fit(tiny("train.max_steps=2"), out, progress=False)
    (out / "notes.txt").write_text("mine")  # a user's file next to the run
    res = fit(tiny("train.max_steps=3"), out, progress=False, overwrite=True)
    assert res.step == 3
    steps = [json.loads(ln)["step"] for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3], "records of the previous run kept"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [f"step_{i:08d}.pt" for i in (1, 2, 3)]
    assert (out / "notes.txt").read_text() == "mine"
    # an unrelated non-empty directory is refused as well
    other = tmp_path / "other"
    other.mkdir()
    (other / "data.csv").write_text("x")
    with pytest.raises(FileExistsError, match="data.csv"):
        fit(tiny(), other, progress=False)


def test_resume_truncates_records_past_the_checkpoint_and_torn_lines(tmp_path: Path) -> None:
    out = tmp_path / "run"
    fit(tiny("train.max_steps=4", "train.ckpt_every=2"), out, progress=False, stop_after=3)
    # as if killed after step 3 was logged, in the middle of writing step 4's record
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "split": "tr')
    (out / "checkpoints" / "step_00000003.pt").unlink()  # the newest checkpoint is step 2
    fit(tiny("train.max_steps=4", "train.ckpt_every=2"), out, progress=False, resume=True)
    recs = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs if r["split"] == "train"] == [1, 2, 3, 4]


def test_cli_overwrite_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    args = ["train", "--output", str(out), "--no-progress", *_cli(tmp_path, "train.max_steps=1")]
    assert main(args) == 0
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    strict_json_load(out / "version.json")


def test_save_model_is_byte_identical(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = anydepth.create_model("sdt_test")
    digests = set()
    for i in range(4):
        p = anydepth.save_model(
            model, tmp_path / f"m{i}.safetensors", metadata={"z": 1, "a": [1, 2], "m": "x"}
        )
        digests.add(hashlib.sha256(p.read_bytes()).hexdigest())
    assert len(digests) == 1
    back = anydepth.load_model(tmp_path / "m0.safetensors")
    assert all(torch.equal(v, back.state_dict()[k]) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="metadata.*finite"):
        anydepth.save_model(model, tmp_path / "nan.safetensors", metadata={"loss": float("nan")})
    assert not (tmp_path / "nan.safetensors").exists()
