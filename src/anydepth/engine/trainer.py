"""The training loop: ``fit(cfg, run_dir)`` trains a ``DepthModel`` decoder (encoder frozen by default).

One loop serves every recipe (SDT or DPT decoder, any encoder, CPU or multi-GPU): variants are config values.
Per optimizer step it accumulates ``train.grad_accum`` micro-batches (DDP gradient sync only on the last one),
runs the model under autocast (``train.precision``), computes ``L_ssi + 2 L_gm`` on the per-image normalised
disparity target in float32, unscales (fp16), clips the global gradient norm, steps AdamW and the warm-up +
PolyLR schedule, and updates the optional EMA.

Run directory layout (written by rank 0 only)::

    <run_dir>/config.yaml           resolved TrainConfig
    <run_dir>/version.json          package version, git commit, torch version, command line
    <run_dir>/metrics.jsonl         one JSON record per logged train step / validation
    <run_dir>/tb/                   TensorBoard events (if tensorboard is installed)
    <run_dir>/checkpoints/step_N.pt training state for --resume (atomic; the newest ``keep_last`` kept)
    <run_dir>/model_best.safetensors  best model on the validation metric (anydepth.load_model)
    <run_dir>/model_final.safetensors model at the end of training

Resuming (``resume=True``) restores model, optimizer, scheduler, GradScaler, EMA, RNG states, the step and the
exact data-loader position (epoch + micro-batches consumed; the sampler is deterministic in the seed and epoch
and augmentations are seeded per sample), so an interrupted run that is resumed ends with the same weights as
an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from anydepth.config import config_to_dict, save_config
from anydepth.engine.checkpoint import (
    capture_rng_state,
    find_latest,
    load_training_state,
    prune_checkpoints,
    restore_rng_state,
    save_training_state,
)
from anydepth.engine.config import TrainConfig
from anydepth.engine.data import Batch, build_train_loader, build_val_loader, resolve_val_size
from anydepth.engine.distributed import DistInfo, all_reduce_mean, barrier, broadcast_object
from anydepth.engine.ema import ModelEMA
from anydepth.engine.logging import RunLogger, code_version
from anydepth.engine.optim import GroupSpec, build_optimizer
from anydepth.engine.schedule import build_scheduler, steps_from_epochs
from anydepth.losses import DepthLoss, disparity_target
from anydepth.models.checkpoint import load_model, save_model
from anydepth.models.depth_model import DepthModel
from anydepth.models.factory import create_model, get_model_config
from anydepth.models.weights.loading import encoder_hash
from anydepth.version import __version__

__all__ = [
    "FitResult",
    "TrainingRun",
    "StepStats",
    "fit",
    "setup",
    "training_step",
    "validate",
    "save_training_checkpoint",
    "build_model_for_training",
    "evaluate_model",
    "autocast_context",
    "set_output_bias",
]

log = logging.getLogger(__name__)

_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class FitResult:
    """What ``fit`` returns.

    Attributes:
        run_dir: the run directory.
        step: optimizer steps done when ``fit`` returned.
        total_steps: planned length of the run.
        last_loss: loss of the last step (mean over ranks), NaN if no step ran.
        best_metric: best validation value of ``val.metric`` (None without validation).
        best_path: path of ``model_best.safetensors`` (None without validation).
        final_path: path of ``model_final.safetensors`` (None when stopped early).
        val_history: validation records ``{"step", "abs_rel", "delta1", ...}``.
        model: the trained model (unwrapped, on the training device).
    """

    run_dir: Path
    step: int
    total_steps: int
    last_loss: float = float("nan")
    best_metric: float | None = None
    best_path: Path | None = None
    final_path: Path | None = None
    val_history: list[dict[str, Any]] = field(default_factory=list)
    model: DepthModel | None = None


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``bf16``/``fp16`` on ``device``; a null context for ``fp32``."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_AMP_DTYPES[precision])


def build_model_for_training(cfg: TrainConfig) -> DepthModel:
    """Create the model of ``cfg.model`` (preset + overrides + encoder weights + optional init checkpoint).

    Uses the global torch RNG for random initialisation: seed it first for reproducibility.
    """
    m = cfg.model
    overrides = dict(m.overrides)
    overrides["freeze_encoder"] = m.freeze_encoder
    try:
        mcfg = get_model_config(m.preset).replace(**overrides)
    except (TypeError, ValueError) as e:
        raise ValueError(f"model.overrides: {e}") from None
    model = create_model(mcfg, encoder_weights=m.encoder_weights)
    if m.output_bias_init is not None and not m.init_checkpoint:
        set_output_bias(model, m.output_bias_init)
    if m.init_checkpoint:
        src = load_model(m.init_checkpoint)
        missing, unexpected = model.load_state_dict(src.state_dict(), strict=False)
        dec_missing = [k for k in missing if k.startswith("decoder.")]
        if dec_missing or unexpected:
            raise ValueError(
                f"{m.init_checkpoint}: does not match preset {m.preset!r} "
                f"(missing {dec_missing[:3]}, unexpected {unexpected[:3]})"
            )
    return model


def set_output_bias(model: DepthModel, value: float) -> str:
    """Set the bias of the decoder's last 1-output-channel convolution to ``value``; returns its name.

    Raises:
        ValueError: the decoder has no such convolution with a bias.
    """
    name: str | None = None
    bias: torch.Tensor | None = None
    for n, mod in model.decoder.named_modules():
        if isinstance(mod, nn.Conv2d) and mod.out_channels == 1 and mod.bias is not None:
            name, bias = n, mod.bias
    if name is None or bias is None:
        raise ValueError(
            "model.output_bias_init: the decoder has no 1-channel output convolution with a bias"
        )
    with torch.no_grad():
        bias.fill_(float(value))
    return f"decoder.{name}.bias"


def _trainable_state(model: DepthModel, include_encoder: bool) -> dict[str, torch.Tensor]:
    return {
        k: v.detach().cpu().clone()
        for k, v in model.state_dict().items()
        if k.startswith("decoder.") or (include_encoder and k.startswith("encoder."))
    }


@torch.no_grad()
def evaluate_model(
    model: nn.Module,
    loader: Any,
    *,
    device: torch.device,
    precision: str = "fp32",
    alignment: str = "least_square_disparity",
    min_depth: float = 1e-3,
    max_depth: float = 100.0,
    dist_info: DistInfo | None = None,
) -> dict[str, float]:
    """AbsRel / delta1 of ``model`` on a validation loader, after per-image alignment to the ground truth.

    Predictions go through the shared forward path (``ops.runner.predict_resized`` with a ``TorchRunner`` in
    ``precision``; validation images already have a patch-multiple size, so nothing is resized) and are scored by
    the shared scoring function ``anydepth.eval.score_batch`` in float64: aligned per image
    (``least_square_disparity`` by default: scale and shift fitted in disparity space, clipped and inverted),
    clipped to ``[min_depth, max_depth]`` metres, and scored on ground-truth pixels inside ``(min_depth,
    max_depth)``. Images without such pixels are skipped. Metrics are averaged over images (gathered over all
    ranks when distributed).

    Returns:
        ``{"abs_rel": ..., "delta1": ..., "num_images": n}`` (AbsRel and delta1 as fractions, not x100).
    """
    from anydepth.eval.evaluate import score_batch
    from anydepth.ops.runner import TorchRunner, predict_resized

    was_training = model.training
    runner = TorchRunner(model, device=device, dtype=_AMP_DTYPES.get(precision, torch.float32))
    values: dict[str, list[float]] = {"abs_rel": [], "delta1": []}
    for batch in loader:
        b: Batch = batch
        img = b.image.to(device, non_blocking=True)
        hw = (int(img.shape[-2]), int(img.shape[-1]))
        pred = torch.stack(predict_resized(runner, img, hw))[:, 0].cpu().double()
        gt = b.depth[:, 0].double()
        valid = b.valid[:, 0].bool() & (gt > min_depth) & (gt < max_depth)
        keep = valid.flatten(1).any(1)
        if not bool(keep.any()):
            continue
        sc = score_batch(
            pred[keep],
            runner.output_space,
            gt[keep],
            valid[keep],
            alignment=alignment,
            min_depth=min_depth,
            max_depth=max_depth,
            metrics=("abs_rel", "delta1"),
        )
        for k in values:
            values[k] += [float(v) for v in sc.metrics[k]]
    if dist_info is not None and dist_info.distributed:
        import torch.distributed as dist

        gathered: list[Any] = [None] * dist_info.world_size
        dist.all_gather_object(gathered, values)
        values = {k: [v for part in gathered for v in part[k]] for k in values}
    model.train(was_training)
    n = len(values["abs_rel"])
    out = {k: (sum(v) / n if n else float("nan")) for k, v in values.items()}
    out["num_images"] = n
    return out


def _make_progress(total: int, initial: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True, leave=True)


@dataclass
class TrainingRun:
    """Everything one training run holds between optimizer steps (built by ``setup``, advanced by ``training_step``).

    Attributes:
        cfg, info, run_dir: the recipe, the process placement, the run directory.
        model: the ``DepthModel`` on ``info.device``; ``net`` is the module the step calls (``model`` or its DDP
            wrapper).
        loss_fn, optimizer, scheduler, scaler (fp16 only), ema (optional), trainable (parameters to clip).
        train_data: this rank's training stream; ``val_loader`` the validation loader (None without validation).
        logger: metrics / TensorBoard writer (rank 0 writes).
        total_steps: planned optimizer steps; ``step``, ``epoch``, ``batch_in_epoch``: the position (restored on
            resume; ``batch_in_epoch`` counts micro-batches).
        store_encoder: checkpoints hold the encoder too (trained, or not loaded from a file).
        best_metric, val_history: validation results so far.
    """

    cfg: TrainConfig
    info: DistInfo
    run_dir: Path
    model: DepthModel
    net: nn.Module
    loss_fn: DepthLoss
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler | None
    ema: ModelEMA | None
    trainable: list[nn.Parameter]
    train_data: Any
    val_loader: Any
    logger: RunLogger
    total_steps: int
    store_encoder: bool
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_metric: float | None = None
    val_history: list[dict[str, Any]] = field(default_factory=list)
    data_iter: Iterator[Batch] | None = None

    @property
    def device(self) -> torch.device:
        return self.info.device


@dataclass
class StepStats:
    """One optimizer step: loss terms (this rank, not reduced; 0-dim tensors), gradient norm, learning rate,
    images seen on all ranks."""

    loss: torch.Tensor
    loss_ssi: torch.Tensor
    loss_grad: torch.Tensor
    grad_norm: float
    lr: float
    images: int


def fit(
    cfg: TrainConfig,
    run_dir: str | Path,
    *,
    dist_info: DistInfo | None = None,
    resume: bool = False,
    overwrite: bool = False,
    stop_after: int | None = None,
    progress: bool = True,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> FitResult:
    """Train according to ``cfg``, writing everything into ``run_dir``.

    The data flow: ``setup`` (run directory, model, data, optimisation, resume) -> per optimizer step
    ``training_step`` (micro-batches -> loss -> backward -> clip -> optimizer / schedule / EMA), ``_log_step``,
    and periodically ``validate`` and ``save_training_checkpoint`` -> ``_finish`` (final validation, checkpoint
    and model).

    Args:
        cfg: the training recipe.
        run_dir: output directory. A fresh run refuses a non-empty directory unless ``overwrite``.
        dist_info: process placement and device from ``engine.distributed.init_distributed`` (default: one CPU
            process).
        resume: continue from the newest ``run_dir/checkpoints/step_N.pt`` (metrics records logged after that
            step by the interrupted run are dropped from ``metrics.jsonl``).
        overwrite: a fresh run in a non-empty ``run_dir`` first deletes the files a training run writes there
            (``RUN_FILES``); other files are left alone.
        stop_after: stop (after writing a checkpoint) once this many optimizer steps are done in total,
            without changing the schedule, as if the run had been interrupted there. For tests and time-boxed jobs.
        progress: show a tqdm progress bar (rank 0).
        on_step: callback ``(step, metrics)`` after each optimizer step (rank 0), e.g. for a live loss curve.

    Returns:
        ``FitResult``.

    Raises:
        FileExistsError: ``run_dir`` is not empty and neither ``resume`` nor ``overwrite`` is set.
        FileNotFoundError: ``resume`` is True but there is no checkpoint.
        ValueError: a checkpoint that does not belong to this configuration.
    """
    run = setup(cfg, run_dir, dist_info=dist_info or DistInfo(), resume=resume, overwrite=overwrite)
    t = cfg.train
    bar = _make_progress(run.total_steps, run.step, progress and run.info.is_main)
    last_loss = float("nan")
    stop_at = run.total_steps if stop_after is None else min(run.total_steps, int(stop_after))
    t_last = time.perf_counter()
    imgs_since = 0
    final_path = None
    try:
        while run.step < stop_at:
            stats = training_step(run)
            imgs_since += stats.images
            if run.step % max(t.log_every, 1) == 0 or run.step == stop_at or run.step == 1:
                now = time.perf_counter()
                last_loss = _log_step(run, stats, imgs_since / max(now - t_last, 1e-9), bar, on_step)
                t_last, imgs_since = now, 0
            if bar is not None:
                bar.update(1)
            if cfg.val.every_steps > 0 and run.step % cfg.val.every_steps == 0 and run.step < run.total_steps:
                validate(run)
            if t.ckpt_every > 0 and run.step % t.ckpt_every == 0 and run.step < stop_at:
                save_training_checkpoint(run)
        final_path = _finish(run)
    finally:
        if bar is not None:
            bar.close()
        run.logger.close()
    barrier()
    best_metric = cast("float | None", broadcast_object(run.best_metric))
    return FitResult(
        run_dir=run.run_dir,
        step=run.step,
        total_steps=run.total_steps,
        last_loss=last_loss,
        best_metric=best_metric,
        best_path=run.run_dir / "model_best.safetensors" if best_metric is not None else None,
        final_path=final_path,
        val_history=run.val_history,
        model=run.model,
    )


def setup(
    cfg: TrainConfig, run_dir: str | Path, *, dist_info: DistInfo, resume: bool, overwrite: bool = False
) -> TrainingRun:
    """Prepare a run: the run directory (config, version), the model, loss and data, the optimisation, and, with
    ``resume``, the state of the newest checkpoint; the data iterator starts at the run's position. Seeds the
    global torch RNG with ``train.seed`` first.

    Raises:
        FileExistsError, FileNotFoundError, ValueError: as ``fit``.
    """
    info = dist_info
    device = info.device
    run_dir = Path(run_dir)
    t = cfg.train
    state = _open_run_dir(run_dir, info, resume, overwrite)
    logger = RunLogger(run_dir, enabled=info.is_main, tensorboard=t.tensorboard)
    if info.is_main:
        save_config(cfg, run_dir / "config.yaml")
        logger.write_json("version.json", code_version())

    torch.manual_seed(t.seed)
    model = build_model_for_training(cfg).to(device)
    model.train()
    train_encoder = not cfg.model.freeze_encoder
    loss_fn = DepthLoss(
        variant=cfg.loss.ssi,
        trim=cfg.loss.trim,
        gradient_weight=cfg.loss.gradient_weight,
        scales=cfg.loss.gradient_scales,
        reduction=cfg.loss.reduction,
    )
    train_data = build_train_loader(
        cfg, rank=info.rank, world_size=info.world_size, pin_memory=device.type == "cuda"
    )
    val_loader = (
        build_val_loader(cfg, rank=info.rank, world_size=info.world_size, size=resolve_val_size(cfg))
        if cfg.data.val
        else None
    )
    total_steps, warmup = _plan_steps(cfg, train_data.num_samples, info.world_size)

    groups = [GroupSpec(g.pattern, g.lr, g.weight_decay) for g in cfg.optim.groups]
    if train_encoder and not any(g.pattern.startswith("encoder") for g in groups):
        groups.append(GroupSpec("encoder.*", lr=cfg.optim.encoder_lr))
    optimizer = build_optimizer(
        model,
        name=cfg.optim.name,
        lr=cfg.optim.lr,
        weight_decay=cfg.optim.weight_decay,
        betas=cast("tuple[float, float]", tuple(cfg.optim.betas)),
        eps=cfg.optim.eps,
        groups=groups,
        no_weight_decay=cfg.optim.no_weight_decay,
    )
    sc = cfg.schedule
    scheduler = build_scheduler(
        optimizer,
        total_steps=total_steps,
        warmup_steps=warmup,
        power=sc.power,
        start_factor=sc.start_factor,
        end_factor=sc.end_factor,
    )
    ema_include = (
        (lambda k: k.startswith("decoder.") or k.startswith("encoder."))
        if train_encoder
        else (lambda k: k.startswith("decoder."))
    )
    run = TrainingRun(
        cfg=cfg,
        info=info,
        run_dir=run_dir,
        model=model,
        net=model,
        loss_fn=loss_fn,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=torch.amp.GradScaler(device.type) if t.precision == "fp16" else None,
        ema=ModelEMA(model, cfg.ema.decay, include=ema_include, warmup=cfg.ema.warmup)
        if cfg.ema.enabled
        else None,
        trainable=[p for p in model.parameters() if p.requires_grad],
        train_data=train_data,
        val_loader=val_loader,
        logger=logger,
        total_steps=total_steps,
        store_encoder=train_encoder or cfg.model.encoder_weights is None,
    )
    if state is not None:
        _restore(run, state)
    if info.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        # heads with outputs the depth loss never reaches (DAv2's unused refinenet4 unit, DA3's sky/ray branches)
        unused = bool(getattr(model.decoder, "has_unused_parameters", False))
        run.net = DDP(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=unused
        )
    run.data_iter = _epoch_iter(train_data, run.epoch, run.batch_in_epoch)
    return run


#: what a training run writes into its run directory (``overwrite`` deletes exactly these)
RUN_FILES = (
    "config.yaml",
    "version.json",
    "metrics.jsonl",
    "tb",
    "checkpoints",
    "model_best.safetensors",
    "model_final.safetensors",
)


def _open_run_dir(run_dir: Path, info: DistInfo, resume: bool, overwrite: bool) -> dict[str, Any] | None:
    """Check the run directory against ``resume`` / ``overwrite``; the newest training state when resuming
    (metrics logged after it are dropped). A fresh run refuses a non-empty directory unless ``overwrite``, which
    deletes the files of the previous run (``RUN_FILES``) first."""
    ckpt_dir = run_dir / "checkpoints"
    ckpt_path = None
    if resume:
        ckpt_path = find_latest(ckpt_dir)
        if ckpt_path is None:
            raise FileNotFoundError(f"--resume: no checkpoint found in {ckpt_dir}")
    elif run_dir.is_dir() and any(run_dir.iterdir()):
        if not overwrite:
            held = sorted(p.name for p in run_dir.iterdir())
            raise FileExistsError(
                f"{run_dir} is not empty (holds {', '.join(held[:5])}{' ...' if len(held) > 5 else ''}); pass "
                "--resume to continue its run, --overwrite to start afresh there, or choose another output "
                "directory"
            )
        if info.is_main:
            _remove_run_files(run_dir)
    elif run_dir.exists() and not run_dir.is_dir():
        raise NotADirectoryError(f"output {run_dir} exists and is not a directory")
    state: dict[str, Any] | None = load_training_state(ckpt_path) if ckpt_path is not None else None
    if state is not None:
        state["_path"] = ckpt_path
        if info.is_main:
            _truncate_metrics(run_dir / "metrics.jsonl", int(state["step"]))
    barrier()
    return state


def _remove_run_files(run_dir: Path) -> None:
    """Delete what a previous training run wrote into ``run_dir`` (``RUN_FILES``), nothing else."""
    import shutil

    for name in RUN_FILES:
        p = run_dir / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()


def _plan_steps(cfg: TrainConfig, num_samples: int, world_size: int) -> tuple[int, int]:
    """``(total optimizer steps, warm-up steps)`` of the run."""
    t, sc = cfg.train, cfg.schedule
    steps_per_epoch, total_steps = steps_from_epochs(
        num_samples,
        batch_size=t.batch_size,
        world_size=world_size,
        grad_accum=t.grad_accum,
        epochs=t.epochs if t.epochs > 0 else 1.0,
    )
    if t.max_steps > 0:
        total_steps = t.max_steps if t.epochs <= 0 else min(total_steps, t.max_steps)
    warmup = sc.warmup_steps if sc.warmup_steps is not None else round(sc.warmup_epochs * steps_per_epoch)
    return total_steps, min(max(int(warmup), 0), total_steps - 1)


def _restore(run: TrainingRun, state: dict[str, Any]) -> None:
    """Load a training state (model, optimizer, scheduler, scaler, EMA, position, RNG) into ``run``."""
    ckpt_path = state["_path"]
    if state.get("total_steps") != run.total_steps or state.get("world_size") != run.info.world_size:
        raise ValueError(
            f"{ckpt_path}: saved for total_steps={state.get('total_steps')}, world_size="
            f"{state.get('world_size')}; this run has {run.total_steps}, {run.info.world_size} (resume needs the "
            "same config and number of processes)"
        )
    model = run.model
    if (
        state.get("encoder_sha256")
        and not run.store_encoder
        and state["encoder_sha256"] != encoder_hash(model)
    ):
        raise ValueError(f"{ckpt_path}: encoder weights differ from the ones this run was started with")
    missing, unexpected = model.load_state_dict(state["model"], strict=False)
    bad = [k for k in missing if k in state["model"] or k.startswith("decoder.")] + list(unexpected)
    if bad:
        raise ValueError(f"{ckpt_path}: model state does not match ({bad[:5]})")
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    if run.scaler is not None and state.get("scaler"):
        run.scaler.load_state_dict(state["scaler"])
    if run.ema is not None and state.get("ema"):
        run.ema.load_state_dict(state["ema"])
    run.step, run.epoch, run.batch_in_epoch = (
        int(state["step"]),
        int(state["epoch"]),
        int(state["batch_in_epoch"]),
    )
    run.best_metric = state.get("best_metric")
    run.val_history = list(state.get("val_history", []))
    restore_rng_state(state["rng"])
    log.info(
        "resumed from %s at step %d (epoch %d, batch %d)", ckpt_path, run.step, run.epoch, run.batch_in_epoch
    )


def _next_batch(run: TrainingRun) -> Batch:
    """The next micro-batch of this rank, starting the next epoch when one ends."""
    assert run.data_iter is not None
    try:
        batch = next(run.data_iter)
    except StopIteration:
        run.epoch += 1
        run.batch_in_epoch = 0
        run.data_iter = _epoch_iter(run.train_data, run.epoch, 0)
        batch = next(run.data_iter)
    run.batch_in_epoch += 1
    return batch


def training_step(run: TrainingRun) -> StepStats:
    """One optimizer step: ``train.grad_accum`` micro-batches (DDP gradient sync on the last one only) of
    disparity target -> forward under autocast -> ``L_ssi + w L_gm`` in float32 -> backward; then unscale (fp16),
    clip the global gradient norm, step the optimizer, the schedule and the EMA. Advances ``run.step``."""
    cfg, t, device = run.cfg, run.cfg.train, run.device
    run.optimizer.zero_grad(set_to_none=True)
    loss_sum = torch.zeros((), device=device)
    parts_sum = {"ssi": torch.zeros((), device=device), "grad": torch.zeros((), device=device)}
    images = 0
    for micro in range(t.grad_accum):
        batch = _next_batch(run)
        img = batch.image.to(device, non_blocking=True)
        depth = batch.depth.to(device, non_blocking=True)
        valid = batch.valid.to(device, non_blocking=True)
        target, mask = disparity_target(
            depth, valid, depth_space=list(batch.depth_space), far_plane=cfg.data.far_plane
        )
        sync = (
            run.net.no_sync()  # type: ignore[operator]
            if run.info.distributed and micro < t.grad_accum - 1
            else contextlib.nullcontext()
        )
        with sync:
            with autocast_context(device, t.precision):
                pred = run.net(img)
            loss, parts = run.loss_fn(pred.float(), target, mask)
            _check_finite(run, loss.detach(), "loss", "before backward")
            scaled = loss / t.grad_accum
            (run.scaler.scale(scaled) if run.scaler is not None else scaled).backward()
        loss_sum += loss.detach() / t.grad_accum
        for k in parts_sum:
            parts_sum[k] += parts[k] / t.grad_accum
        images += img.shape[0] * run.info.world_size
    if run.scaler is not None:
        run.scaler.unscale_(run.optimizer)
    clip = cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else float("inf")
    gnorm = torch.nn.utils.clip_grad_norm_(run.trainable, clip)
    if run.scaler is None:  # fp16: GradScaler itself skips steps with inf/NaN gradients
        _check_finite(run, gnorm.detach(), "gradient norm", "before the optimizer step")
    lr_now = run.optimizer.param_groups[0]["lr"]
    if run.scaler is not None:
        run.scaler.step(run.optimizer)
        run.scaler.update()
    else:
        run.optimizer.step()
    with warnings.catch_warnings():
        # fp16: GradScaler skips steps with inf/NaN gradients; the schedule still advances (standard AMP)
        warnings.filterwarnings("ignore", message="Detected call of")
        run.scheduler.step()
    if run.ema is not None:
        run.ema.update(run.model)
    run.step += 1
    return StepStats(loss_sum, parts_sum["ssi"], parts_sum["grad"], float(gnorm), lr_now, images)


def _check_finite(run: TrainingRun, value: torch.Tensor, what: str, when: str) -> None:
    """Raise ``FloatingPointError`` when ``value`` (0-dim) is not finite on any rank.

    Every rank takes the same decision (the flag is all-reduced), so none is left waiting in a collective. Called
    before ``backward`` and before the optimizer step: a NaN/inf loss must never reach backward (kernels such as
    ``grid_sample`` may crash on non-finite inputs) nor the weights. Checkpoints already written are kept.
    """
    bad = (~torch.isfinite(value)).to(torch.float32)
    if float(all_reduce_mean(bad)) > 0:
        ckpt = find_latest(run.run_dir / "checkpoints")
        kept = (
            f"the last good checkpoint {ckpt} is kept"
            if ckpt is not None
            else "no checkpoint was written yet"
        )
        raise FloatingPointError(
            f"non-finite {what} ({float(value)}) at step {run.step + 1}, {when}: training stopped, {kept}. "
            "Lower optim.lr (or raise schedule warm-up / optim.grad_clip) and check the data"
        )


def _log_step(
    run: TrainingRun,
    stats: StepStats,
    images_per_s: float,
    bar: Any,
    on_step: Callable[[int, dict[str, float]], None] | None,
) -> float:
    """Reduce the step's losses over ranks, log them (metrics, progress bar, ``on_step``); returns the mean loss.

    Raises:
        FloatingPointError: the loss is not finite.
    """
    loss_mean = all_reduce_mean(stats.loss).item()
    rec = {
        "loss": loss_mean,
        "loss_ssi": all_reduce_mean(stats.loss_ssi).item(),
        "loss_grad": all_reduce_mean(stats.loss_grad).item(),
        "lr": stats.lr,
        "grad_norm": stats.grad_norm,
        "epoch": run.epoch,
        "images_per_s": images_per_s,
    }
    run.logger.log(run.step, rec, split="train")
    if on_step is not None and run.info.is_main:
        on_step(run.step, rec)
    if bar is not None:
        bar.set_postfix(
            loss=f"{loss_mean:.4f}", lr=f"{stats.lr:.2e}", img_s=f"{images_per_s:.1f}", refresh=False
        )
    if not math.isfinite(loss_mean):
        raise FloatingPointError(f"non-finite loss {loss_mean} at step {run.step}")
    return loss_mean


def validate(run: TrainingRun) -> dict[str, float] | None:
    """Validate (with the EMA weights if enabled) through ``evaluate_model``; keep ``model_best.safetensors`` on
    an improvement of ``val.metric``; record and log the result. None without a validation set."""
    if run.val_loader is None:
        return None
    cfg, model = run.cfg, run.model
    ctx = run.ema.swapped(model) if run.ema is not None else contextlib.nullcontext()
    with ctx:
        res = evaluate_model(
            model,
            run.val_loader,
            device=run.device,
            precision=cfg.train.precision,
            alignment=cfg.val.alignment,
            min_depth=cfg.val.min_depth,
            max_depth=cfg.val.max_depth,
            dist_info=run.info,
        )
        key = cfg.val.metric
        val = res[key]
        best = run.best_metric
        better = best is None or (key == "abs_rel" and val < best) or (key == "delta1" and val > best)
        if better and math.isfinite(val):
            run.best_metric = val
            if run.info.is_main:
                _save_model(model, run.run_dir / "model_best.safetensors", {"step": run.step, key: val})
    run.val_history.append({"step": run.step, **res})
    run.logger.log(run.step, res, split="val")
    log.info("step %d validation: %s", run.step, res)
    return res


def save_training_checkpoint(run: TrainingRun) -> None:
    """Write ``checkpoints/step_N.pt`` (everything ``--resume`` needs; rank 0) and prune old ones."""
    if not run.info.is_main:
        return
    model = run.model
    state = {
        "step": run.step,
        "epoch": run.epoch,
        "batch_in_epoch": run.batch_in_epoch,
        "total_steps": run.total_steps,
        "world_size": run.info.world_size,
        "model": _trainable_state(model, run.store_encoder),
        "encoder_sha256": None if run.store_encoder else encoder_hash(model),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict() if run.scaler is not None else None,
        "ema": run.ema.state_dict() if run.ema is not None else None,
        "rng": capture_rng_state(),
        "best_metric": run.best_metric,
        "val_history": run.val_history,
        "config": config_to_dict(run.cfg),
        "model_config": model.config.to_json(),
        "anydepth_version": __version__,
    }
    ckpt_dir = run.run_dir / "checkpoints"
    save_training_state(ckpt_dir / f"step_{run.step:08d}.pt", state)
    prune_checkpoints(ckpt_dir, run.cfg.train.keep_last)


def _finish(run: TrainingRun) -> Path | None:
    """End of the loop: at the planned end, final validation, checkpoint and ``model_final.safetensors`` (EMA
    weights if enabled; its path is returned); when stopped early (``stop_after``), the checkpoint only."""
    if run.step < run.total_steps:
        save_training_checkpoint(run)
        return None
    if run.val_loader is not None:
        validate(run)
    save_training_checkpoint(run)
    if not run.info.is_main:
        return None
    ctx = run.ema.swapped(run.model) if run.ema is not None else contextlib.nullcontext()
    with ctx:
        return _save_model(run.model, run.run_dir / "model_final.safetensors", {"step": run.step})


def _epoch_iter(train_data: Any, epoch: int, skip_batches: int) -> Iterator[Batch]:
    return train_data.iterate(epoch, skip_batches)


def _save_model(model: DepthModel, path: Path, meta: dict[str, Any]) -> Path:
    return save_model(model, path, overwrite=True, metadata=meta)


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop records logged after ``step`` (written by an interrupted run past its last checkpoint)."""
    import json

    from anydepth.atomic import atomic_path

    if not path.is_file():
        return
    lines = [ln for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    keep = []
    for ln in lines:
        try:
            rec = json.loads(ln)
        except ValueError:  # a record torn by a kill in the middle of a write
            continue
        if isinstance(rec, dict) and int(rec.get("step", 0)) <= step:
            keep.append(ln)
    if len(keep) != len(lines):
        with atomic_path(path, overwrite=True) as tmp:
            tmp.write_text("".join(k + "\n" for k in keep), encoding="utf-8")
