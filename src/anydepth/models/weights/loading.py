"""Load DINOv3/DINOv2 weights from local files into our backbones, exactly or not at all.

``read_checkpoint`` reads ``.pth``/``.pt``/``.bin``/``.ckpt`` (``torch.load(weights_only=True)``), ``.safetensors``,
or a transformers ``save_pretrained`` directory (``model.safetensors``, sharded ``model.safetensors.index.json``
or ``pytorch_model.bin``) as stored; ``read_state_dict`` also unwraps the usual nesting.
``load_backbone_weights`` converts any supported layout (see ``anydepth.models.weights.backbones``) to Meta's
names and copies it into the module. ``encoder_hash`` identifies the encoder weights a model was built with.

Loading is exact: an unknown key, a missing key or a shape mismatch raises ``ValueError`` listing them. The
only tolerated differences (always reported in the returned dict) are:

* **dropped from the file**: ``depth_head.*`` (Depth-Anything-V2), RoPE ``inv_freq``/timm ``rope`` buffers
  (derived), ``local_cls_norm.*`` when the backbone has none (Meta uses it only when training on local
  crops), an all-zero ``attn.qkv.bias`` when the backbone has no qkv bias (a no-op), and a ``bias_mask``
  that masks nothing when the backbone has no K mask;
* **kept at their built value when the file lacks them**: ``mask_token`` (pretraining only), ``*.bias_mask``
  (fixed pattern), ``rope_embed.periods`` (computed from the config), ``local_cls_norm.*``.

When the file has ``rope_embed.periods`` or ``bias_mask`` they are loaded like every other tensor (this is what
Meta's ``load_state_dict(strict=True)`` does), after checking that ``bias_mask`` has the expected pattern.
A position embedding learned for another grid (DINOv2 ``pos_embed`` shape) is an error: build the backbone
with the matching ``img_size`` (the message names it); it is then resampled at run time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from anydepth.models.weights.backbones import (
    LAYOUTS,
    detect_layout,
    layout_family,
    to_meta_with_dropped,
    unwrap_state_dict,
)

if TYPE_CHECKING:
    from anydepth.models.depth_model import DepthModel

__all__ = [
    "read_checkpoint",
    "read_state_dict",
    "load_backbone_weights",
    "tensor_hash",
    "encoder_hash",
    "describe_load_error",
]

log = logging.getLogger(__name__)

_TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
_MAX_LISTED = 20


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Read a checkpoint file or transformers directory into a flat ``{name: tensor}`` dict on the CPU.

    ``read_checkpoint`` followed by ``unwrap_state_dict`` (the usual ``model``/``state_dict``/... nesting).

    Raises:
        FileNotFoundError, ValueError: as ``read_checkpoint``; ValueError also when no tensors are found.
    """
    return unwrap_state_dict(read_checkpoint(path), os.fspath(path))


def read_checkpoint(path: str | os.PathLike[str]) -> Any:
    """Read a checkpoint file or transformers directory as stored (tensors on the CPU, nesting kept).

    Nothing is ever unpickled: ``torch.load(weights_only=True)`` or safetensors only.

    Args:
        path: ``.pth``/``.pt``/``.bin``/``.ckpt`` (loaded with ``weights_only=True``), ``.safetensors``, or a
            directory holding ``model.safetensors``, ``model.safetensors.index.json`` (+ shards) or
            ``pytorch_model.bin``.

    Raises:
        FileNotFoundError: if the path or the expected file in a directory does not exist.
        ValueError: if the file cannot be parsed or holds no tensors.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    if p.is_dir():
        for name in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"):
            if (p / name).is_file():
                p = p / name
                break
        else:
            raise FileNotFoundError(
                f"{path}: directory holds none of model.safetensors, model.safetensors.index.json, "
                "pytorch_model.bin"
            )
    if p.name.endswith(".safetensors.index.json"):
        return _read_sharded(p)
    suffix = p.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            obj: Any = load_file(str(p), device="cpu")
        except Exception as e:  # safetensors raises its own error types
            raise ValueError(f"{p}: not a readable safetensors file ({describe_load_error(e)})") from e
    elif suffix in _TORCH_SUFFIXES:
        try:
            obj = torch.load(str(p), map_location="cpu", weights_only=True)
        except Exception as e:  # pickle with non-tensor objects, zip errors: report the file, keep the cause
            raise ValueError(
                f"{p}: not a readable PyTorch checkpoint ({describe_load_error(e)}); anydepth reads weights-only "
                "checkpoints and never unpickles arbitrary objects: re-save the state dict alone "
                "(torch.save(model.state_dict(), ...))"
            ) from e
    else:
        raise ValueError(
            f"{p}: unsupported checkpoint extension {suffix!r}; expected .safetensors, "
            f"{', '.join(_TORCH_SUFFIXES)} or a transformers directory"
        )
    return obj


def describe_load_error(e: BaseException) -> str:
    """A one-line cause for a failed ``torch.load`` / safetensors read: the exception type and the informative
    line of its message (for a weights-only refusal, the Python object the file tried to create)."""
    text = str(e)
    m = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if m:
        return (
            f"it holds a Python object ({m.group(1).rstrip('.,')}) that a weights-only load refuses to create"
        )
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return f"{type(e).__name__}: {first}"[:300]


def tensor_hash(tensors: Mapping[str, Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of ``tensors`` (order-independent)."""
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].detach().to("cpu").contiguous()
        h.update(k.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def encoder_hash(model: DepthModel) -> str:
    """SHA-256 of the encoder backbone's persistent tensors (names, dtypes, shapes and bytes)."""
    return tensor_hash(dict(model.encoder.backbone.state_dict()))


def _read_sharded(index: Path) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (ValueError, KeyError) as e:
        raise ValueError(f"{index}: not a safetensors index (needs a 'weight_map')") from e
    out: dict[str, Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        f = index.parent / shard
        if not f.is_file():
            raise FileNotFoundError(f"{index}: shard {shard} is missing")
        try:
            out.update(load_file(str(f), device="cpu"))
        except Exception as e:
            raise ValueError(f"{f}: not a readable safetensors file ({e})") from e
    return out


def _backbone_of(module: nn.Module) -> Any:
    if getattr(module, "family", None) in ("dinov3", "dinov2"):
        return module
    inner = getattr(module, "backbone", None)
    if isinstance(inner, nn.Module) and getattr(inner, "family", None) in ("dinov3", "dinov2"):
        return inner
    raise TypeError(
        f"{type(module).__name__} is not a DINOv3/DINOv2 backbone of anydepth (or an EncoderWrapper around one)"
    )


def _is_optional(key: str) -> bool:
    return (
        key == "mask_token"
        or key.endswith(".bias_mask")
        or key == "rope_embed.periods"
        or key.startswith("local_cls_norm.")
    )


def _listing(title: str, items: list[str]) -> str:
    shown = items[:_MAX_LISTED]
    more = f" ... and {len(items) - len(shown)} more" if len(items) > len(shown) else ""
    return f"{title} ({len(items)}): {shown}{more}"


def load_backbone_weights(
    backbone: nn.Module,
    source: str | os.PathLike[str] | Mapping[str, Any],
    *,
    layout: str = "auto",
) -> dict[str, Any]:
    """Copy weights from a local checkpoint into a DINOv3/DINOv2 backbone (in place).

    Args:
        backbone: a ``DinoV3ViT``/``DinoV2ViT`` (or an ``EncoderWrapper`` around one), already built with the
            checkpoint's architecture (e.g. ``ENCODERS.get("dinov3_vitl16")()``).
        source: a path (see ``read_state_dict``) or an in-memory state dict (nesting is unwrapped).
        layout: ``"auto"`` or one of ``backbones.LAYOUTS``.

    Returns:
        ``{"source", "layout", "family", "loaded" (number of tensors copied), "dropped" (file keys not loaded,
        on purpose), "kept_default" (backbone keys the file lacked and that kept their built value)}``.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: unreadable file, unknown layout, wrong family (DINOv2 file into a DINOv3 backbone),
            unknown/missing keys, shape mismatches, inconsistent transformers ``config.json``, a ``bias_mask``
            with an unexpected pattern, or a non-zero K bias that the backbone would ignore.
    """
    if getattr(getattr(backbone, "backbone", backbone), "family", None) == "vggt":  # VGGT's own file layout
        from anydepth.models.weights.vggt import load_vggt_aggregator

        return load_vggt_aggregator(backbone, source)
    model = _backbone_of(backbone)
    family = str(model.family)
    hf_config: dict[str, Any] | None = None
    if isinstance(source, (str, os.PathLike)):
        what = str(source)
        sd = read_state_dict(source)
        cfg_path = Path(source) / "config.json"
        if Path(source).is_dir() and cfg_path.is_file():
            try:
                hf_config = json.loads(cfg_path.read_text())
            except ValueError as e:
                raise ValueError(f"{cfg_path}: not valid JSON ({e})") from e
    elif isinstance(source, Mapping):
        what = "<state dict>"
        sd = unwrap_state_dict(source, what)
    else:
        raise TypeError(f"source must be a path or a state dict, got {type(source).__name__}")

    if layout == "auto":
        layout = detect_layout(sd)
    elif layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; valid: auto, {', '.join(LAYOUTS)}")
    src_family = layout_family(layout)
    if src_family != family:
        raise ValueError(
            f"{what}: {layout} checkpoint holds {src_family} weights but the backbone is {family}"
        )
    if hf_config is not None:
        _check_hf_config(hf_config, model, what)

    meta, dropped = to_meta_with_dropped(sd, layout)
    target = model.state_dict()
    loadable: dict[str, Tensor] = {}
    unknown: list[str] = []
    for k, v in meta.items():
        if k in target:
            loadable[k] = v
        elif k.startswith("local_cls_norm."):
            dropped.append(k)
        elif k.endswith(".attn.qkv.bias") and not torch.any(v != 0):
            dropped.append(k)  # all-zero bias, backbone built without qkv bias: no effect
        elif k.endswith(".attn.qkv.bias_mask") and torch.all(v == 1):
            dropped.append(k)  # masks nothing
        else:
            unknown.append(k)
    missing = [k for k in target if k not in loadable and not _is_optional(k)]
    kept_default = [k for k in target if k not in loadable and _is_optional(k)]
    mismatched = [
        f"{k}: file {tuple(v.shape)} vs backbone {tuple(target[k].shape)}"
        for k, v in loadable.items()
        if tuple(v.shape) != tuple(target[k].shape)
    ]
    problems = []
    if unknown:
        problems.append(_listing("unknown keys", sorted(unknown)))
    if missing:
        problems.append(_listing("missing keys", missing))
    if mismatched:
        problems.append(_listing("shape mismatches", mismatched))
        if "pos_embed" in loadable and tuple(loadable["pos_embed"].shape) != tuple(target["pos_embed"].shape):
            problems.append(_pos_embed_hint(loadable["pos_embed"], model))
    if problems:
        raise ValueError(
            f"{what}: cannot load {layout} weights into {type(model).__name__} "
            f"({model.embed_dim}-d, {model.n_blocks} blocks): " + "; ".join(problems)
        )
    _check_bias_masks(loadable, target, what)
    if layout != "meta_dinov3":
        _check_k_bias(loadable, model, what, layout)
    _log_periods(loadable, model)

    result = model.load_state_dict(loadable, strict=False)
    leftover = [k for k in result.missing_keys if not _is_optional(k)]
    if leftover or result.unexpected_keys:  # pragma: no cover - guarded by the checks above
        raise RuntimeError(f"internal error loading {what}: {leftover} {result.unexpected_keys}")
    report = {
        "source": what,
        "layout": layout,
        "family": family,
        "loaded": len(loadable),
        "dropped": sorted(dropped),
        "kept_default": kept_default,
    }
    log.info("loaded %d tensors from %s (%s); dropped %d keys", len(loadable), what, layout, len(dropped))
    return report


def _pos_embed_hint(pos: Tensor, model: Any) -> str:
    n = int(pos.shape[1]) - 1
    side = int(round(n**0.5))
    p = int(model.patch_size)
    return (
        f"the file's pos_embed is a {side}x{side} grid (img_size={side * p}); build the backbone with "
        f"img_size={side * p} (positions are resampled to any input size at run time)"
    )


def _check_bias_masks(loadable: dict[str, Tensor], target: dict[str, Tensor], what: str) -> None:
    for k, v in loadable.items():
        if k.endswith(".bias_mask") and not torch.equal(v.float(), target[k].float()):
            raise ValueError(
                f"{what}: {k} does not have the expected pattern (1 for q and v, 0 for k); "
                "the checkpoint would change the attention's bias semantics"
            )


def _check_k_bias(loadable: dict[str, Tensor], model: Any, what: str, layout: str) -> None:
    cfg = getattr(model, "config", None)
    if not getattr(cfg, "mask_k_bias", False):
        return
    for k, v in loadable.items():
        if k.endswith(".attn.qkv.bias"):
            d = v.shape[0] // 3
            if torch.any(v[d : 2 * d] != 0):
                raise ValueError(
                    f"{what}: {layout} checkpoint has a non-zero key bias in {k}, which a masked-K-bias backbone "
                    "would ignore; build the backbone with mask_k_bias=False"
                )


def _log_periods(loadable: dict[str, Tensor], model: Any) -> None:
    periods = loadable.get("rope_embed.periods")
    rope = getattr(model, "rope_embed", None)
    if periods is None or rope is None:
        return
    expected = rope.compute_periods()
    rel = float(((periods.float() - expected).abs() / expected).max())
    if rel > 1e-6:
        log.info("rope_embed.periods from the checkpoint differ from the computed ones (max rel %.2e)", rel)


def _check_hf_config(cfg: dict[str, Any], model: Any, what: str) -> None:
    """Compare the architecture fields of a transformers ``config.json`` that the weights cannot reveal."""
    c = model.config
    checks: list[tuple[str, Any, Any]] = [
        ("layer_norm_eps", cfg.get("layer_norm_eps"), c.norm_eps),
        ("patch_size", cfg.get("patch_size"), c.patch_size),
    ]
    if model.family == "dinov3":
        checks.append(("rope_theta", cfg.get("rope_theta"), c.rope_base))
        gated = c.ffn_layer != "mlp"
        checks.append(("hidden_act", cfg.get("hidden_act"), "silu" if gated else "gelu"))
    else:
        if c.ffn_layer == "mlp":
            checks.append(("hidden_act", cfg.get("hidden_act"), "gelu"))
    bad = [
        f"{name}={got!r} (backbone expects {exp!r})"
        for name, got, exp in checks
        if got is not None and not _same(got, exp)
    ]
    if bad:
        raise ValueError(f"{what}: config.json does not match the backbone: {', '.join(bad)}")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(float(a) - float(b)) <= 1e-12 * max(1.0, abs(float(b)))
    return bool(a == b)
