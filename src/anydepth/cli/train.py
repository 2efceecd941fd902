"""``anydepth train``: train a decoder from a YAML recipe (single process, or DDP under torchrun).

Examples::

    anydepth train --config configs/train/cpu_tiny.yaml --output runs/tiny
    anydepth train --config configs/train/anydepth_vitb16.yaml --set train.batch_size=4 --set optim.lr=5e-4
    anydepth train --output runs/tiny --resume                     # continue from the newest checkpoint
    torchrun --nproc_per_node 8 -m anydepth.cli.main train --config configs/train/anydepth_vitl16.yaml
"""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model from a YAML config",
        description="Train an AnyDepth decoder (frozen encoder) from configs/train/*.yaml. "
        "Distributed: launch with torchrun; the process group is read from the environment.",
    )
    p.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="YAML",
        help="training config; repeat to merge several files (later wins). With --resume it defaults to "
        "OUTPUT/config.yaml",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key (dotted path, YAML value), e.g. --set optim.lr=5e-4; repeatable",
    )
    p.add_argument("--output", "-o", default=None, help="run directory (default: runs/<config name>)")
    p.add_argument(
        "--resume", action="store_true", help="continue the run in OUTPUT from its newest checkpoint"
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start a fresh run in an OUTPUT that already holds files (they are deleted: config, metrics, "
        "checkpoints, models); without it a fresh run refuses a non-empty OUTPUT",
    )
    p.add_argument(
        "--device", default="auto", help="auto (CUDA LOCAL_RANK if available, else CPU), cpu, cuda or cuda:N"
    )
    p.add_argument(
        "--stop-after",
        type=int,
        default=None,
        metavar="STEPS",
        help="stop (with a checkpoint) after this many optimizer steps in total, keeping the schedule; "
        "continue later with --resume",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=run)


def _resolve_config(args: argparse.Namespace):  # -> TrainConfig
    from pathlib import Path

    from anydepth.config import config_to_dict, load_config
    from anydepth.engine.config import TrainConfig

    # the run's saved config, when resuming a run that has one
    saved = Path(args.output) / "config.yaml" if args.output else None
    if not (args.resume and saved is not None and saved.is_file()):
        saved = None
    if not args.config:
        if saved is not None:
            cfg = load_config(TrainConfig, [saved], args.overrides)
        else:
            raise ValueError("--config is required (or --resume with --output pointing to an existing run)")
    else:
        cfg = load_config(TrainConfig, args.config, args.overrides)
    if saved is not None:
        old = config_to_dict(load_config(TrainConfig, [saved]))
        diff = [k for k in _diff_keys(old, config_to_dict(cfg)) if not k.startswith(_RESUME_SAFE)]
        if diff:
            raise ValueError(
                f"--resume: the config differs from the run's saved {saved} at {diff[:8]}; an exact resume needs "
                f"the same recipe (only {', '.join(_RESUME_SAFE)} may change)"
            )
    return cfg


# keys that do not change the trained weights and may differ when resuming
_RESUME_SAFE = (
    "train.log_every",
    "train.ckpt_every",
    "train.keep_last",
    "train.tensorboard",
    "data.num_workers",
    "val.",
    "data.val",
    "notes",
)


def _diff_keys(a: object, b: object, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b)):
            p = f"{prefix}.{k}" if prefix else str(k)
            if k not in a or k not in b:
                out.append(p)
            else:
                out += _diff_keys(a[k], b[k], p)
        return out
    return [] if a == b else [prefix or "<root>"]


def run(args: argparse.Namespace) -> int:
    import logging
    import os
    import sys

    from anydepth.config import config_to_yaml

    cfg = _resolve_config(args)
    if args.print_config:
        sys.stdout.write(config_to_yaml(cfg))
        return 0
    out = args.output or os.path.join("runs", cfg.name)

    import torch

    from anydepth.engine.distributed import cleanup_distributed, init_distributed
    from anydepth.engine.trainer import fit

    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True)
    info = init_distributed(args.device)
    if not info.is_main:
        logging.getLogger().setLevel(logging.WARNING)
    try:
        res = fit(
            cfg,
            out,
            dist_info=info,
            resume=args.resume,
            overwrite=args.overwrite,
            stop_after=args.stop_after,
            progress=not args.no_progress,
        )
    except FloatingPointError as e:  # diverged: a clear error and a non-zero exit, no traceback
        print(f"anydepth train: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C: checkpoints are atomic, the newest one is complete
        print(
            f"anydepth train: interrupted; the newest checkpoint in {out}/checkpoints is complete: continue with "
            f"--resume --output {out}",
            file=sys.stderr,
        )
        return 130
    finally:
        cleanup_distributed(info)
    if info.is_main:
        msg = (
            f"trained {res.step}/{res.total_steps} steps, last loss {res.last_loss:.4f}; run directory {out}"
        )
        if res.best_metric is not None:
            msg += f"; best {cfg.val.metric} {res.best_metric:.4f} -> {res.best_path}"
        if res.step < res.total_steps:
            msg += f"; stopped early: continue with --resume --output {out}"
        print(msg)
    return 0
