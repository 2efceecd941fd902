"""VGGT checkpoints (Hugging Face ``facebook/VGGT-1B``: ``model.pt`` or ``model.safetensors``).

The file is the plain ``state_dict()`` of ``vggt.models.vggt.VGGT`` (no prefix, 1797 tensors for VGGT-1B):

* ``aggregator.*`` (1210 tensors) -> ``encoder.backbone.*`` (``anydepth.models.encoders.vggt``, same names);
* ``depth_head.*`` (62 tensors) -> ``decoder.*`` (``anydepth.models.decoders.dpt_vggt``, same names);
* ``camera_head.*``, ``point_head.*``, ``track_head.*``: other tasks, dropped and listed in the load report.

Anything else in the file is an error, as is a missing key or a shape that does not fit the configuration.

Memory: ``.pt`` files are memory-mapped (``torch.load(mmap=True, weights_only=True)``) and safetensors are read
tensor by tensor; the model is built on the ``meta`` device and the file's tensors are assigned to it, so loading
VGGT-1B needs no second copy of its 5 GB of float32 weights. ``dtype=torch.bfloat16`` (or float16) converts
tensor by tensor while reading (2.5 GB resident); such a model takes inputs of that dtype.

Nothing is unpickled beyond tensors (``weights_only=True``) and nothing is downloaded.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from anydepth.models.config import ModelConfig
from anydepth.models.depth_model import DepthModel
from anydepth.models.encoders.base import EncoderWrapper
from anydepth.models.weights.backbones import unwrap_state_dict
from anydepth.models.weights.layers import ENCODER_LAYERS
from anydepth.registry import DECODERS, ENCODERS
from anydepth.types import DepthSpace

__all__ = [
    "VGGT_1B",
    "DROPPED_HEADS",
    "is_vggt_state_dict",
    "is_vggt_checkpoint",
    "read_vggt_state_dict",
    "split_vggt_state_dict",
    "load_vggt_aggregator",
    "load_vggt",
    "load_vggt_model",
]

log = logging.getLogger(__name__)

# Heads of VGGT that anydepth does not use: dropped on load, always listed.
DROPPED_HEADS: tuple[str, ...] = ("camera_head.", "point_head.", "track_head.")
_AGG, _HEAD = "aggregator.", "depth_head."
_FILES = ("model.safetensors", "model.pt")
_MAX_LISTED = 20

# The original VGGT-1B depth model: aggregator pairs [4, 11, 17, 23] (DPTHead's intermediate_layer_idx) and
# DPTHead(dim_in=2048, output_dim=2, activation="exp", conf_activation="expp1"). Its depth is up to an unknown
# scale (VGGT normalises each scene's scale); scale-invariant depth is a special case of affine-invariant depth.
VGGT_1B = ModelConfig(
    encoder="vggt_1b",
    decoder="dpt_vggt",
    layer_indices=ENCODER_LAYERS["vggt_1b"],
    output_space=DepthSpace.DEPTH_AFFINE_INVARIANT,
    name="vggt_1b_original",
)


def is_vggt_state_dict(keys: Any) -> bool:
    """True if the key collection looks like a ``VGGT.state_dict()`` (aggregator frame blocks present)."""
    return any(str(k).startswith(f"{_AGG}frame_blocks.") for k in keys)


def _resolve(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if p.is_dir():
        for name in _FILES:
            if (p / name).is_file():
                return p / name
        raise FileNotFoundError(f"{p}: directory holds none of {', '.join(_FILES)}")
    if not p.is_file():
        raise FileNotFoundError(f"VGGT checkpoint not found: {p}")
    return p


def _torch_load(p: Path) -> Any:
    try:
        return torch.load(str(p), map_location="cpu", mmap=True, weights_only=True)
    except RuntimeError:  # legacy (non-zip) serialisation cannot be memory-mapped
        return torch.load(str(p), map_location="cpu", weights_only=True)


def is_vggt_checkpoint(path: str | os.PathLike[str]) -> bool:
    """True if ``path`` (file or directory) is a readable VGGT checkpoint; never raises for other files."""
    try:
        p = _resolve(path)
        if p.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(p), framework="pt") as f:
                return is_vggt_state_dict(f.keys())
        return is_vggt_state_dict(unwrap_state_dict(_torch_load(p), str(p)))
    except Exception:  # any unreadable or foreign file: not ours, the caller's other loaders report it
        return False


def read_vggt_state_dict(
    path: str | os.PathLike[str], *, dtype: torch.dtype | None = None
) -> dict[str, Tensor]:
    """Read a VGGT checkpoint without copying it into memory.

    Args:
        path: ``model.pt`` / ``.pth`` (memory-mapped), ``model.safetensors``, or a directory holding one of them.
        dtype: convert floating-point tensors to this dtype while reading (e.g. ``torch.bfloat16``).

    Returns:
        The flat state dict (VGGT's names); without ``dtype`` the tensors of a ``.pt`` file are backed by the file.

    Raises:
        FileNotFoundError: missing file. ValueError: unreadable file.
    """
    p = _resolve(path)

    def cast(t: Tensor) -> Tensor:
        return t.to(dtype) if dtype is not None and t.is_floating_point() else t

    if p.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(p), framework="pt") as f:
                return {k: cast(f.get_tensor(k)) for k in f.keys()}  # noqa: SIM118  (safe_open is not a dict)
        except Exception as e:  # safetensors raises its own error types
            raise ValueError(f"{p}: not a readable safetensors file ({e})") from e
    try:
        obj = _torch_load(p)
    except Exception as e:  # pickle/zip errors: report the file, keep the cause
        raise ValueError(f"{p}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from e
    return {k: cast(v) for k, v in unwrap_state_dict(obj, str(p)).items()}


def split_vggt_state_dict(
    sd: Mapping[str, Tensor], what: str = "<state dict>"
) -> tuple[dict[str, Tensor], dict[str, Tensor], list[str]]:
    """Split a ``VGGT.state_dict()`` into aggregator and depth-head parts.

    Args:
        sd: the flat state dict (``aggregator.*``, ``depth_head.*``, other heads).
        what: name of the source for error messages.

    Returns:
        ``(aggregator, depth_head, dropped)``: the first two without their prefix; ``dropped`` lists the sorted keys
        of ``camera_head``/``point_head``/``track_head``.

    Raises:
        ValueError: keys outside these groups, or no aggregator weights.
    """
    agg: dict[str, Tensor] = {}
    head: dict[str, Tensor] = {}
    dropped: list[str] = []
    unknown: list[str] = []
    for k, v in sd.items():
        if k.startswith(_AGG):
            agg[k[len(_AGG) :]] = v
        elif k.startswith(_HEAD):
            head[k[len(_HEAD) :]] = v
        elif k.startswith(DROPPED_HEADS):
            dropped.append(k)
        else:
            unknown.append(k)
    if unknown:
        raise ValueError(f"{what}: not a VGGT state dict: {_listing('unexpected keys', sorted(unknown))}")
    if not agg:
        raise ValueError(f"{what}: no aggregator.* tensors (not a VGGT checkpoint)")
    return agg, head, sorted(dropped)


def _listing(title: str, items: list[str]) -> str:
    shown = items[:_MAX_LISTED]
    more = f" ... and {len(items) - len(shown)} more" if len(items) > len(shown) else ""
    return f"{title} ({len(items)}): {shown}{more}"


def _check_keys(module: nn.Module, sd: Mapping[str, Tensor], part: str, what: str) -> None:
    """Exact key and shape match between ``sd`` and ``module.state_dict()`` (shapes from the meta device too)."""
    target = module.state_dict()
    missing = [k for k in target if k not in sd]
    unknown = sorted(k for k in sd if k not in target)
    bad = [
        f"{k}: file {tuple(sd[k].shape)} vs model {tuple(v.shape)}"
        for k, v in target.items()
        if k in sd and sd[k].shape != v.shape
    ]
    problems = [
        _listing(title, items)
        for title, items in (("missing keys", missing), ("unknown keys", unknown), ("shape mismatches", bad))
        if items
    ]
    if problems:
        raise ValueError(f"{what}: cannot load {part} ({type(module).__name__}): " + "; ".join(problems))


def _report(what: str, loaded: int, dropped: list[str]) -> dict[str, Any]:
    counts = {h.rstrip("."): sum(k.startswith(h) for k in dropped) for h in DROPPED_HEADS}
    return {"source": what, "layout": "vggt", "family": "vggt", "loaded": loaded, "dropped": dropped,
            "dropped_heads": {k: n for k, n in counts.items() if n}, "kept_default": []}  # fmt: skip


def _source_state_dict(
    source: str | os.PathLike[str] | Mapping[str, Any], dtype: torch.dtype | None
) -> tuple[dict[str, Tensor], str]:
    if isinstance(source, (str, os.PathLike)):
        return read_vggt_state_dict(source, dtype=dtype), str(source)
    if isinstance(source, Mapping):
        return unwrap_state_dict(source, "<state dict>"), "<state dict>"
    raise TypeError(f"source must be a path or a state dict, got {type(source).__name__}")


def load_vggt_aggregator(
    backbone: nn.Module, source: str | os.PathLike[str] | Mapping[str, Any]
) -> dict[str, Any]:
    """Copy VGGT aggregator weights into a built ``VGGTAggregator`` (in place; ``load_backbone_weights`` for VGGT).

    Args:
        backbone: a ``VGGTAggregator`` or an ``EncoderWrapper`` around one.
        source: a VGGT checkpoint path, a ``VGGT.state_dict()`` or a bare aggregator state dict.

    Returns:
        ``{"source", "layout": "vggt", "family": "vggt", "loaded", "dropped" (file keys not loaded: the depth head
        and the other heads), "dropped_heads" (counts), "kept_default": []}``.

    Raises:
        ValueError: unknown/missing keys or shape mismatches (listed).
    """
    model = getattr(backbone, "backbone", backbone)
    if getattr(model, "family", None) != "vggt":
        raise TypeError(f"{type(model).__name__} is not a VGGT aggregator of anydepth")
    sd, what = _source_state_dict(source, None)
    if is_vggt_state_dict(sd):
        agg, head, dropped = split_vggt_state_dict(sd, what)
        dropped = sorted([*dropped, *(_HEAD + k for k in head)])
    else:
        agg, dropped = sd, []
    _check_keys(model, agg, "the aggregator", what)
    model.load_state_dict(agg, strict=True)
    log.info("loaded %d VGGT aggregator tensors from %s; dropped %d keys", len(agg), what, len(dropped))
    return _report(what, len(agg), dropped)


def load_vggt(
    source: str | os.PathLike[str] | Mapping[str, Any],
    *,
    dtype: torch.dtype | None = None,
    config: ModelConfig | None = None,
) -> tuple[DepthModel, dict[str, Any]]:
    """Load a whole VGGT depth model (aggregator + depth head) into a ``DepthModel``.

    Args:
        source: ``model.pt`` / ``model.safetensors`` / a directory with one of them, or a ``VGGT.state_dict()``.
        dtype: parameter dtype (default: the file's, float32 for VGGT-1B); the model then takes inputs of that dtype.
        config: the architecture (default: ``VGGT_1B``, read when called; tests pass tiny configurations). Its
            decoder must be ``dpt_vggt``.

    Returns:
        ``(model, report)``: the model in eval mode on the CPU (``forward``: ``[B,3,H,W]`` RGB in [0, 1], H and W
        multiples of 14 -> ``[B,1,H,W]`` depth up to scale, ``config.output_space``); the report lists the
        dropped keys (``camera_head``/``point_head``/``track_head``) as ``load_vggt_aggregator`` does.

    Raises:
        FileNotFoundError: missing file. ValueError: not a VGGT checkpoint, missing/unknown keys or shapes.
    """
    config = config or VGGT_1B
    if config.decoder != "dpt_vggt":
        raise ValueError(f"load_vggt needs a dpt_vggt decoder configuration, got decoder={config.decoder!r}")
    sd, what = _source_state_dict(source, dtype)
    if dtype is not None and not isinstance(source, (str, os.PathLike)):
        sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}
    agg, head, dropped = split_vggt_state_dict(sd, what)
    with torch.device("meta"):
        backbone: nn.Module = ENCODERS.get(config.encoder)(**config.encoder_kwargs)
        dims = tuple(int(getattr(backbone, "embed_dim")) for _ in config.layer_indices)  # noqa: B009
        decoder: nn.Module = DECODERS.get(config.decoder)(dims, **config.decoder_kwargs)
    _check_keys(backbone, agg, "the aggregator", what)
    _check_keys(decoder, head, "the depth head", what)
    # assign: the module takes the file's (memory-mapped) tensors instead of copying them
    backbone.load_state_dict(agg, strict=True, assign=True)
    decoder.load_state_dict(head, strict=True, assign=True)
    encoder = EncoderWrapper(
        backbone,
        config.layer_indices,
        use_backbone_norm=config.use_backbone_norm,
        frozen=config.freeze_encoder,
    )
    model = DepthModel(encoder, decoder, config)  # type: ignore[arg-type]
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:  # pragma: no cover - every tensor is persistent in these modules
        raise RuntimeError(f"internal error: tensors left on the meta device after loading {what}: {left}")
    report = _report(what, len(agg) + len(head), dropped)
    log.info(
        "loaded VGGT from %s: %d tensors; dropped %s",
        what,
        report["loaded"],
        report["dropped_heads"] or "nothing",
    )
    return model.eval(), report


def load_vggt_model(
    source: str | os.PathLike[str] | Mapping[str, Any],
    *,
    dtype: torch.dtype | None = None,
    config: ModelConfig | None = None,
) -> DepthModel:
    """``load_vggt`` without the report (the dropped heads are logged); what ``anydepth.load_model`` calls."""
    return load_vggt(source, dtype=dtype, config=config)[0]
