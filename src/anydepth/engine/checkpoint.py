"""Training-state checkpoints (for ``--resume``), written atomically.

A training checkpoint (``<run>/checkpoints/step_<N>.pt`` plus ``last.pt``) holds everything needed to continue
a run bit-for-bit:

* ``model``: the trainable part of the model state (``decoder.*``; ``encoder.*`` too when the encoder is
  trained; a frozen encoder is identified by ``encoder_sha256`` instead);
* ``optimizer``, ``scheduler``, ``scaler`` (fp16), ``ema`` state dicts;
* ``rng``: Python, NumPy, torch CPU and CUDA generator states;
* ``step`` (optimizer steps done), ``epoch`` and ``batch_in_epoch`` (micro-batches consumed in the current
  epoch: the data-loader position), ``world_size``;
* ``config`` (resolved training config as a dict), ``model_config`` (JSON), ``anydepth_version``.

Files are written with ``torch.save`` to a temporary file in the same directory, fsynced and renamed into place
(``os.replace``), so a crash never leaves a partial checkpoint under the final name. They contain only tensors
and plain Python values and are loaded with ``weights_only=True``. (Best-model files for inference use the
lead's safetensors ``anydepth.models.checkpoint.save_model`` instead.)
"""

from __future__ import annotations

import logging
import os
import random
import re
import tempfile
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

__all__ = [
    "FORMAT",
    "atomic_torch_save",
    "capture_rng_state",
    "restore_rng_state",
    "save_training_state",
    "load_training_state",
    "find_latest",
    "prune_checkpoints",
]

log = logging.getLogger(__name__)

FORMAT = "anydepth.train_state.v1"
_STEP_RE = re.compile(r"^step_(\d+)\.pt$")


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` to ``path`` through a temporary file in the same directory and ``os.replace``.

    On any failure (including a serialisation error) the temporary file is removed and ``path`` keeps its
    previous content (or does not exist).
    """
    dst = Path(path)
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dst


def capture_rng_state() -> dict[str, Any]:
    """Snapshot of the Python, NumPy, torch CPU and (if available) CUDA global RNG states."""
    py = random.getstate()
    # legacy tuple form ("MT19937", key, pos, has_gauss, cached_gaussian); numpy's stubs pick the dict overload
    np_state = cast("tuple[str, np.ndarray, int, int, float]", np.random.get_state())
    state: dict[str, Any] = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": {
            "key": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore the global RNG states captured by ``capture_rng_state``."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:
            log.warning(
                "CUDA RNG state saved for %d devices, %d present: not restored",
                len(cuda),
                torch.cuda.device_count(),
            )


def save_training_state(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Write a training-state dict (see module docstring) atomically; adds the ``format`` tag."""
    return atomic_torch_save({"format": FORMAT, **state}, path)


def load_training_state(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Load a training-state checkpoint.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not an anydepth training checkpoint.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"training checkpoint not found: {p}")
    try:
        state = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # unpickling errors come in many types
        raise ValueError(
            f"{p}: not an anydepth training checkpoint (unreadable: {type(e).__name__})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{p}: not an anydepth training checkpoint (expected format {FORMAT!r})")
    return state


def find_latest(ckpt_dir: str | os.PathLike[str]) -> Path | None:
    """The checkpoint to resume from in ``ckpt_dir``: the ``step_<N>.pt`` with the largest N, else None."""
    d = Path(ckpt_dir)
    if not d.is_dir():
        return None
    steps = [(int(m.group(1)), p) for p in d.iterdir() if (m := _STEP_RE.match(p.name))]
    return max(steps)[1] if steps else None


def prune_checkpoints(ckpt_dir: str | os.PathLike[str], keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` ``step_<N>.pt`` files in ``ckpt_dir`` (0 keeps everything).

    Only files written by the trainer (matching ``step_<N>.pt``) are ever removed. Returns the deleted paths.
    """
    if keep_last <= 0:
        return []
    d = Path(ckpt_dir)
    steps = sorted((int(m.group(1)), p) for p in d.iterdir() if (m := _STEP_RE.match(p.name)))
    removed = []
    for _, p in steps[:-keep_last]:
        p.unlink(missing_ok=True)
        removed.append(p)
    return removed
