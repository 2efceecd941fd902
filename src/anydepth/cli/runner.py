"""Command-line choices -> a runner: the one place that builds the network of ``infer``, ``serve`` and ``eval``,
and the one device / dtype vocabulary of every command (``bench`` too).

Vocabulary:

* ``--device``: ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda``, ``cuda:N``, ``mps``.
* ``--dtype``: ``float32`` (default), ``bfloat16``, ``float16`` (the ``torch.dtype`` names; low precision runs
  under ``torch.autocast``, or in the ``--fast`` model's own mixed precision). The older spellings ``fp32``,
  ``bf16``, ``fp16`` are still accepted and log a deprecation warning.

``build_runner(args)`` reads ``--checkpoint`` / ``--model`` (preset) / ``--encoder-weights``, ``--device``,
``--dtype``, ``--fast`` and (where the command has them) ``--backend`` / ``--onnx``, and returns a
``BuiltRunner``: the ``ops.runner.Runner`` every command then passes to the shared forward path, plus what the
command records about its source.
"""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CHECKPOINT_HELP",
    "DTYPES",
    "DEVICE_HELP",
    "ENCODER_WEIGHTS_HELP",
    "BuiltRunner",
    "add_runtime_args",
    "build_runner",
    "canonical_dtype",
    "resolve_device",
    "resolve_dtype",
]

log = logging.getLogger(__name__)

#: Accepted ``--dtype`` values (``torch.dtype`` names).
DTYPES = ("float32", "bfloat16", "float16")
#: Older spellings still accepted (with a deprecation warning) -> the current name.
DEPRECATED_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
#: Help of ``--checkpoint`` / ``--encoder-weights`` in ``infer``, ``eval``, ``serve``, ``export``: every name
#: ``anydepth.hub`` resolves.
CHECKPOINT_HELP = (
    "project, official or converted checkpoint: a file, hf://ORG/REPO/FILE[@REVISION] or an alias such as "
    "anydepth/dav2_sdt_vitb (fetched once into the Hugging Face cache; see `anydepth download`)"
)
ENCODER_WEIGHTS_HELP = (
    "encoder weights (decoder-only checkpoints, presets): a file or hf://ORG/REPO/FILE[@REVISION]"
)
DEVICE_HELP = (
    "auto (CUDA, under torchrun cuda:LOCAL_RANK, then MPS, then CPU; default), cpu, cuda, cuda:N or mps"
)


def canonical_dtype(name: str, flag: str = "--dtype") -> str:
    """The current name of a dtype spelling (``fp16`` -> ``float16``, with a deprecation warning).

    Raises:
        ValueError: an unknown name (lists the valid ones).
    """
    key = str(name).strip().lower()
    if key in DEPRECATED_DTYPES:
        new = DEPRECATED_DTYPES[key]
        log.warning("%s %s is deprecated; use %s %s (same meaning)", flag, name, flag, new)
        return new
    if key not in DTYPES:
        raise ValueError(f"{flag}: unknown dtype {name!r}; expected one of {', '.join(DTYPES)}")
    return key


def resolve_dtype(name: str, flag: str = "--dtype") -> Any:
    """``--dtype`` -> ``torch.dtype`` (see ``canonical_dtype``)."""
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[
        canonical_dtype(name, flag)
    ]


def resolve_device(name: str, flag: str = "--device") -> Any:
    """``--device`` -> ``torch.device``: ``auto`` picks CUDA, then MPS, then CPU; explicit devices must exist.

    Under torchrun (``LOCAL_RANK`` set), ``auto`` picks ``cuda:LOCAL_RANK``, so that the processes of a node (e.g.
    the shards of ``infer`` / ``eval``) use one GPU each.

    Raises:
        ValueError: an unknown name, or a device this machine does not have.
    """
    import torch

    mps = getattr(torch.backends, "mps", None)
    mps_ok = bool(mps is not None and mps.is_available())
    key = str(name).strip().lower()
    if key == "auto":
        local_rank = os.environ.get("LOCAL_RANK")
        if local_rank is not None and local_rank.isdigit() and torch.cuda.is_available():
            return torch.device("cuda", int(local_rank) % torch.cuda.device_count())
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps_ok else "cpu")
    try:
        dev = torch.device(key)
    except (RuntimeError, ValueError):
        raise ValueError(f"{flag}: unknown device {name!r}; expected {DEVICE_HELP}") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"{flag}: unsupported device {name!r}; expected {DEVICE_HELP}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{flag} {name}: CUDA is not available on this machine (try {flag} auto)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{flag} {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not mps_ok:
        raise ValueError(f"{flag} {name}: MPS is not available on this machine (try {flag} auto)")
    return dev


def add_runtime_args(
    group: Any,
    *,
    fast_help: str | None = None,
    backend_group: Any | None = None,
    onnx_group: Any | None = None,
) -> None:
    """Add ``--device``, ``--dtype``, ``--fast`` to ``group`` and, when ``backend_group`` is given,
    ``--backend`` / ``--onnx`` to it (``--onnx`` to ``onnx_group`` if given, e.g. a mutually exclusive group of
    model sources): the same flags and vocabulary in every command."""
    if backend_group is not None:
        backend_group.add_argument(
            "--backend",
            default="torch",
            choices=["torch", "onnxruntime"],
            help="inference backend (default: torch)",
        )
        (onnx_group or backend_group).add_argument(
            "--onnx", metavar="FILE", help="ONNX file from `anydepth export` (for --backend onnxruntime)"
        )
    group.add_argument("--device", default="auto", metavar="DEVICE", help=DEVICE_HELP)
    group.add_argument(
        "--dtype",
        default="float32",
        metavar="DTYPE",
        help="compute dtype: float32 (default), bfloat16, float16 (fp32/bf16/fp16: deprecated spellings)",
    )
    group.add_argument(
        "--fast",
        action="store_true",
        help=fast_help
        or "optimised inference path (folded BN, row tiling, Winograd on CPU; same depth within 1e-4, "
        "less time and memory; see docs/efficiency.md)",
    )


@dataclass
class BuiltRunner:
    """What ``build_runner`` returns.

    Attributes:
        runner: the ``ops.runner.Runner`` (``TorchRunner``, over the ``--fast`` model when asked, or ONNX).
        model: the ``DepthModel`` (None for ONNX).
        device: the resolved torch device (None for ONNX).
        dtype: the canonical dtype name.
        checkpoint, preset, encoder_weights, onnx: the source as given (None when not used).
        fast: the ``--fast`` model is used.
    """

    runner: Any
    model: Any = None
    device: Any = None
    dtype: str = "float32"
    checkpoint: str | None = None
    preset: str | None = None
    encoder_weights: str | None = None
    onnx: str | None = None
    fast: bool = False

    @property
    def random_decoder(self) -> bool:
        """A preset was built: the decoder has random weights."""
        return self.preset is not None

    def source(self, *, basenames: bool = False) -> dict[str, Any]:
        """``{"checkpoint" | "preset" | "onnx": ..., "encoder_weights"?: ..., "fast"?: True}`` for summaries;
        ``basenames``: file names without their directories (for what a server shows its clients)."""

        def name(p: str) -> str:
            return os.path.basename(p) if basenames else p

        if self.onnx is not None:
            return {"onnx": name(self.onnx)}
        d: dict[str, Any] = (
            {"checkpoint": name(self.checkpoint)} if self.checkpoint is not None else {"preset": self.preset}
        )
        if self.encoder_weights:
            d["encoder_weights"] = name(self.encoder_weights)
        if self.fast:
            d["fast"] = True
        return d


def _fast_torch_runner(model: Any, device: Any, dtype: Any, fast: bool) -> Any:
    from anydepth.ops.runner import TorchRunner

    if not fast:
        return TorchRunner(model, device=device, dtype=dtype)
    from anydepth import optimize_for_inference  # the public name (its module may move)

    # the optimised model runs its own precision (decoder in dtype, encoder under autocast)
    return TorchRunner(optimize_for_inference(model.eval().to(device), dtype=dtype), device=device)


def build_runner(args: argparse.Namespace) -> BuiltRunner:
    """Build the runner of ``infer`` / ``serve`` / ``eval`` from parsed arguments.

    Reads ``checkpoint``, ``model`` (preset), ``encoder_weights``, ``device``, ``dtype`` and, when present,
    ``fast`` (True, False, or ``"auto"``: the fast path when the decoder has one, else the eager model),
    ``backend``, ``onnx``. A preset without a checkpoint logs that its decoder is random.

    Raises:
        ValueError: contradictory or missing choices, an unknown device/dtype, or a device this machine lacks.
        FileNotFoundError: a missing checkpoint / weights / ONNX file.
    """
    import anydepth

    checkpoint = getattr(args, "checkpoint", None)
    preset = getattr(args, "model", None)
    fast_arg = getattr(args, "fast", False)  # True, False or "auto" (the fast path where the decoder has one)
    fast = fast_arg is True
    backend = getattr(args, "backend", "torch")
    onnx = getattr(args, "onnx", None)
    if backend == "onnxruntime" or onnx:
        from anydepth.export.onnx_runtime import OnnxRunner

        if backend != "onnxruntime" or not onnx or checkpoint or preset:
            raise ValueError(
                "ONNX inference takes --backend onnxruntime --onnx FILE (no --checkpoint/--model)"
            )
        if fast:
            raise ValueError("--fast applies to the torch backend (an ONNX graph is already optimised)")
        return BuiltRunner(OnnxRunner(onnx), onnx=str(onnx))
    device = resolve_device(args.device)
    dtype_name = canonical_dtype(args.dtype)
    dtype = resolve_dtype(dtype_name)
    if checkpoint and preset:
        raise ValueError("give either --checkpoint or --model, not both")
    weights = getattr(args, "encoder_weights", None)
    if checkpoint:
        model = anydepth.load_model(checkpoint, encoder_weights=weights)
    elif preset:
        model = anydepth.create_model(preset, encoder_weights=weights)
        log.warning(
            "--model %s builds a randomly initialised decoder: the depth is meaningless; use --checkpoint "
            "for a trained model",
            preset,
        )
    else:
        raise ValueError(
            "no model: give --checkpoint FILE (or --model PRESET for a random-weight smoke test)"
        )
    if fast_arg == "auto":
        from anydepth.models.fast import has_fast_path

        fast = has_fast_path(model.decoder)
        if not fast:
            log.info("no fast path for the %s decoder: running the eager model", type(model.decoder).__name__)
    return BuiltRunner(
        _fast_torch_runner(model, device, dtype, fast),
        model=model,
        device=device,
        dtype=dtype_name,
        checkpoint=str(checkpoint) if checkpoint else None,
        preset=preset if not checkpoint else None,
        encoder_weights=str(weights) if weights else None,
        fast=fast,
    )
