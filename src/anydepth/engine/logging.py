"""Run-directory logging: metrics as JSON lines, TensorBoard events (optional), code version.

Only the main process (rank 0) writes; on other ranks a ``RunLogger(enabled=False)`` does nothing. TensorBoard is
used when the ``tensorboard`` package is installed (``pip install anydepth[train]``); otherwise the JSONL file is
the only metrics record and a single info message says so.

Files written into the run directory:

* ``metrics.jsonl``: one JSON object per line, ``{"step": N, "split": "train"|"val", "time": unix, ...}``;
* ``tb/``: TensorBoard event files (scalars ``<split>/<name>``);
* ``version.json``: package version, git commit and dirty flag (if the code lives in a git checkout), torch
  version, command line.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from anydepth.atomic import json_text, write_json
from anydepth.extras import require

__all__ = ["RunLogger", "code_version"]

log = logging.getLogger(__name__)


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def code_version() -> dict[str, Any]:
    """Package version, git commit (``None`` outside a git checkout or before the first commit), dirty flag."""
    import torch

    from anydepth.version import __version__

    here = Path(__file__).resolve().parent
    commit = _git(["rev-parse", "HEAD"], here)
    dirty = None
    if commit is not None:
        status = _git(["status", "--porcelain", "--untracked-files=no"], here)
        dirty = bool(status) if status is not None else None
    return {
        "anydepth_version": __version__,
        "git_commit": commit,
        "git_dirty": dirty,
        "torch_version": torch.__version__,
        "python": sys.version.split()[0],
        "argv": list(sys.argv),
    }


def _clean(v: Any) -> Any:
    if hasattr(v, "item") and callable(v.item):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


class RunLogger:
    """Writes metrics of a run (JSONL + TensorBoard) on the main process.

    Args:
        run_dir: the run directory (created).
        enabled: False on non-main ranks: every method is then a no-op.
        tensorboard: also write TensorBoard events if the package is importable.
    """

    def __init__(
        self, run_dir: str | os.PathLike[str], *, enabled: bool = True, tensorboard: bool = True
    ) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = bool(enabled)
        self._tb: Any = None
        self._jsonl: Any = None
        if not self.enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        if tensorboard:
            try:
                require("tensorboard", "TensorBoard event files")
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                log.info("%s; metrics go to metrics.jsonl only", e)
            else:
                self._tb = SummaryWriter(log_dir=str(self.run_dir / "tb"))

    @property
    def has_tensorboard(self) -> bool:
        return self._tb is not None

    def log(self, step: int, metrics: dict[str, Any], split: str = "train") -> None:
        """Append one record and the TensorBoard scalars ``<split>/<name>`` for numeric values."""
        if not self.enabled:
            return
        rec = {"step": int(step), "split": split, "time": round(time.time(), 3)}
        rec.update({k: _clean(v) for k, v in metrics.items()})
        self._jsonl.write(json_text(rec) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for k, v in rec.items():
                if k in ("step", "split", "time") or isinstance(v, bool) or not isinstance(v, (int, float)):
                    continue
                self._tb.add_scalar(f"{split}/{k}", v, int(step))

    def write_json(self, name: str, data: dict[str, Any]) -> None:
        """Write ``<run_dir>/<name>`` (JSON) atomically."""
        if not self.enabled:
            return
        write_json(self.run_dir / name, data, overwrite=True, nonfinite="null", default=str)

    def flush(self) -> None:
        if self._jsonl is not None:
            self._jsonl.flush()
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def read_metrics(path: str | os.PathLike[str], split: str | None = None) -> list[dict[str, Any]]:
    """Read a ``metrics.jsonl`` file (optionally only records of one ``split``)."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                rec = json.loads(line)
                if split is None or rec.get("split") == split:
                    out.append(rec)
    return out


__all__.append("read_metrics")
