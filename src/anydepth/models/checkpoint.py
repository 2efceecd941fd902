"""Model checkpoints: safetensors files with the ``ModelConfig`` embedded.

Layout of a project checkpoint (``.safetensors``):

* tensors: ``decoder.*`` always; ``encoder.*`` only for *full* checkpoints;
* metadata (strings): ``format`` = ``"anydepth.model.v1"``, ``model_config`` (JSON), ``contents``
  (``"decoder"`` or ``"full"``), ``encoder_name``, ``encoder_sha256`` (content hash of the encoder weights the
  decoder was trained with), ``anydepth_version``, ``user`` (JSON of caller metadata).

Decoder-only checkpoints are the default when the encoder weights came from a file (the encoder is frozen, so it is
identified by name and hash instead of being copied). When the encoder is randomly initialised (tests, the demo),
``save_model`` stores the full model because those weights could not be recovered otherwise.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Literal

import torch

from anydepth.atomic import atomic_path
from anydepth.hub import push_checkpoint, resolve_weights
from anydepth.models.config import ModelConfig
from anydepth.models.depth_model import DepthModel

__all__ = ["FORMAT", "save_model", "load_model", "encoder_hash", "read_checkpoint_metadata"]

log = logging.getLogger(__name__)

FORMAT = "anydepth.model.v1"


def _tensor_hash(tensors: dict[str, torch.Tensor]) -> str:
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
    return _tensor_hash(dict(model.encoder.backbone.state_dict()))


def save_model(
    model: DepthModel,
    path: str | os.PathLike[str],
    *,
    contents: Literal["auto", "decoder", "full"] = "auto",
    overwrite: bool = False,
    metadata: dict[str, Any] | None = None,
    repo_id: str | None = None,
) -> Path:
    """Write ``model`` to a safetensors checkpoint (atomically), optionally publishing it on the Hub.

    Args:
        model: the model to save.
        path: destination ``.safetensors`` file.
        contents: ``"decoder"`` (decoder weights only), ``"full"`` (encoder too) or ``"auto"``: decoder-only when
            the encoder weights were loaded from a file, full otherwise.
        overwrite: replace an existing file.
        metadata: JSON-serialisable extra information stored under ``user``.
        repo_id: also upload the checkpoint with a model card to this Hugging Face repository (``ORG/REPO``;
            ``anydepth.hub.push_checkpoint`` with its defaults; use it directly for metrics, licence, ...).

    Returns:
        The path written.
    """
    from safetensors.torch import save_file

    from anydepth import __version__

    if contents == "auto":
        contents = "decoder" if model.encoder_source is not None else "full"
    if contents not in ("decoder", "full"):
        raise ValueError(f"contents must be 'auto', 'decoder' or 'full', got {contents!r}")
    sd = {k: v for k, v in model.state_dict().items() if contents == "full" or k.startswith("decoder.")}
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in sd.items()}
    meta = {
        "format": FORMAT,
        "model_config": model.config.to_json(),
        "contents": contents,
        "encoder_name": model.config.encoder,
        "encoder_sha256": encoder_hash(model),
        "encoder_source": json.dumps(model.encoder_source),
        "anydepth_version": __version__,
        "user": json.dumps(metadata or {}),
    }
    with atomic_path(path, overwrite=overwrite) as tmp:
        save_file(tensors, os.fspath(tmp), metadata=meta)
    if repo_id is not None:
        push_checkpoint(path, repo_id)
    return Path(path)


def read_checkpoint_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The metadata strings of a safetensors file (empty dict if it has none)."""
    from safetensors import safe_open

    with safe_open(os.fspath(path), framework="pt") as f:
        return dict(f.metadata() or {})


def load_model(
    path: str | os.PathLike[str],
    *,
    encoder_weights: str | os.PathLike[str] | None = None,
    check_encoder_hash: bool = True,
) -> DepthModel:
    """Load a checkpoint and return the model in eval mode on the CPU.

    Accepts the project's safetensors checkpoints and the official AnyDepth checkpoints (``.pth``/``.pt`` or
    safetensors in the layouts the official code's ``state_dict()`` produces; see ``anydepth.models.official``).
    Never unpickles arbitrary objects (``torch.load(weights_only=True)`` or safetensors only).

    Args:
        path: checkpoint file, ``hf://ORG/REPO/FILE[@REVISION]`` or an official alias such as
            ``anydepth/dav2_sdt_vitb`` (downloaded into the Hugging Face cache; see ``anydepth.hub``).
        encoder_weights: encoder weights (file or Hub name), required for decoder-only checkpoints.
        check_encoder_hash: for decoder-only checkpoints, require the given encoder weights to have the hash
            recorded at save time (a mismatch means the decoder was trained on another encoder).

    Raises:
        FileNotFoundError, ValueError: missing file, unrecognised format, missing/mismatched encoder weights.
    """
    from anydepth.models.factory import build_model, create_model

    p = resolve_weights(path)  # local path, hf://ORG/REPO/FILE[@REV] or an alias (anydepth.hub)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    meta: dict[str, str] = {}
    if p.suffix == ".safetensors":
        try:
            meta = read_checkpoint_metadata(p)
        except Exception as e:  # safetensors raises its own error types for corrupt headers
            raise ValueError(f"{p}: not a readable safetensors file ({e})") from e
    if meta.get("format") != FORMAT:
        from anydepth.models.official import load_official_checkpoint

        return load_official_checkpoint(p, encoder_weights=encoder_weights)

    from safetensors.torch import load_file

    cfg = ModelConfig.from_json(meta["model_config"])
    tensors = load_file(os.fspath(p))
    contents = meta.get("contents", "decoder")
    if contents == "full":
        model = build_model(cfg)
        if encoder_weights is not None:
            raise ValueError(f"{p} is a full checkpoint (encoder included); do not pass encoder_weights")
        src = json.loads(meta.get("encoder_source", "null"))
        model.encoder_source = src
    else:
        if encoder_weights is None:
            raise ValueError(
                f"{p} holds decoder weights only; pass encoder_weights= (the {meta.get('encoder_name')} weights "
                f"with sha256 {meta.get('encoder_sha256', '?')[:16]}...)"
            )
        model = create_model(cfg, encoder_weights=encoder_weights)
        want = meta.get("encoder_sha256")
        got = model.encoder_source["sha256"] if model.encoder_source else None
        if check_encoder_hash and want and got != want:
            raise ValueError(
                f"encoder weights {encoder_weights} (sha256 {str(got)[:16]}...) differ from those the checkpoint {p} "
                f"was trained with ({want[:16]}...); pass check_encoder_hash=False to load anyway"
            )
    expected = {k for k in model.state_dict() if contents == "full" or k.startswith("decoder.")}
    missing = sorted(expected - set(tensors))
    unexpected = sorted(set(tensors) - expected)
    if missing or unexpected:
        raise ValueError(
            f"{p}: checkpoint does not match its config: missing {missing[:8]}, unexpected {unexpected[:8]}"
        )
    model.load_state_dict(tensors, strict=False)
    return model.eval()
