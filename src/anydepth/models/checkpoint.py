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

import json
import logging
import os
from pathlib import Path
from typing import Any, Literal

from anydepth.atomic import atomic_path, json_text
from anydepth.hub import push_checkpoint, resolve_weights
from anydepth.models.config import ModelConfig
from anydepth.models.depth_model import DepthModel
from anydepth.models.factory import build_model, create_model, get_model_config, load_encoder_weights
from anydepth.models.weights.layers import ENCODER_LAYERS
from anydepth.models.weights.loading import encoder_hash, read_checkpoint
from anydepth.models.weights.official import convert_official_state_dict
from anydepth.models.weights.vggt import is_vggt_checkpoint, load_vggt_model
from anydepth.registry import ENCODERS
from anydepth.version import __version__

__all__ = [
    "FORMAT",
    "save_model",
    "load_model",
    "load_official_checkpoint",
    "encoder_hash",
    "read_checkpoint_metadata",
]

log = logging.getLogger(__name__)

FORMAT = "anydepth.model.v1"


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
        "encoder_source": _strict_json(model.encoder_source, "encoder_source"),
        "anydepth_version": __version__,
        "user": _strict_json(metadata or {}, "metadata"),
    }
    with atomic_path(path, overwrite=overwrite) as tmp:
        save_file(tensors, os.fspath(tmp), metadata=meta)
        _canonical_header(tmp)
    if repo_id is not None:
        push_checkpoint(path, repo_id)
    return Path(path)


def _strict_json(obj: Any, what: str) -> str:
    try:
        return json_text(obj, sort_keys=True)
    except ValueError as e:
        raise ValueError(f"save_model: {what} must be JSON-serialisable with finite numbers: {e}") from None


def _canonical_header(path: Path) -> None:
    """Rewrite the JSON header of the safetensors file ``path`` with sorted keys, so that identical models give
    byte-identical files (safetensors writes its metadata map in a random order). The tensor data is untouched:
    the header is rewritten in place (padded with spaces, as the format allows) or, if it grew, the file is
    rewritten through a temporary copy."""
    import shutil

    with open(path, "r+b") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        if len(text) <= n:
            f.seek(8)
            f.write(text + b" " * (n - len(text)))
            return
    padded = text + b" " * (-len(text) % 8)
    tmp = path.with_name(path.name + ".hdr")
    try:
        with open(path, "rb") as src, open(tmp, "wb") as dst:
            src.seek(8 + n)
            dst.write(len(padded).to_bytes(8, "little") + padded)
            shutil.copyfileobj(src, dst, 1 << 24)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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

    Accepts the project's safetensors checkpoints, the official AnyDepth checkpoints (``.pth``/``.pt`` or
    safetensors in the layouts the official code's ``state_dict()`` produces; see ``load_official_checkpoint``) and
    whole original VGGT, Depth Anything V2 and Depth Anything 3 models (``anydepth.models.weights.vggt`` /
    ``.dav2`` / ``.da3``).
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
        if is_vggt_checkpoint(p):  # facebook/VGGT-1B model.pt / model.safetensors: aggregator + depth head
            if encoder_weights is not None:
                raise ValueError(f"{p} is a whole VGGT model (encoder included); do not pass encoder_weights")
            vggt = load_vggt_model(p)
            vggt.encoder_source = {"path": os.fspath(p), "sha256": encoder_hash(vggt)}
            return vggt
        from anydepth.models.weights.da3 import is_da3_state_dict, load_da3_checkpoint
        from anydepth.models.weights.dav2 import checkpoint_keys, is_dav2_state_dict, load_dav2_checkpoint

        # whole original models: Depth Anything V2 (.pth), Depth Anything 3 (hub model.safetensors)
        keys = checkpoint_keys(p)
        if is_dav2_state_dict(keys):
            return load_dav2_checkpoint(p, encoder_weights=encoder_weights)
        if is_da3_state_dict(keys):
            return load_da3_checkpoint(p, encoder_weights=encoder_weights)
        return load_official_checkpoint(p, encoder_weights=encoder_weights)

    from safetensors.torch import load_file

    cfg = _embedded_config(p, meta)
    try:
        tensors = load_file(os.fspath(p))
    except Exception as e:  # safetensors' own error types for truncated / corrupt data
        raise ValueError(
            f"{p}: cannot read the tensors of the checkpoint ({' '.join(str(e).split())})"
        ) from None
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
    state = model.state_dict()
    wrong = [
        f"{k} {tuple(v.shape)} (config expects {tuple(state[k].shape)})"
        for k, v in sorted(tensors.items())
        if tuple(v.shape) != tuple(state[k].shape)
    ]
    if wrong:
        raise ValueError(
            f"{p}: tensor shapes do not match the checkpoint's embedded model_config ({len(wrong)} differ): "
            + "; ".join(wrong[:3])
        )
    model.load_state_dict(tensors, strict=False)
    return model.eval()


def _embedded_config(p: Path, meta: dict[str, str]) -> ModelConfig:
    """The ``ModelConfig`` stored in a project checkpoint's metadata; errors name the file."""
    if "model_config" not in meta:
        raise ValueError(f"{p}: checkpoint metadata has no model_config")
    try:
        return ModelConfig.from_json(meta["model_config"])
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: the embedded model_config is not valid JSON ({e})") from None
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        raise ValueError(f"{p}: invalid embedded model_config: {e}") from None


def load_official_checkpoint(
    path: str | os.PathLike[str],
    *,
    encoder_weights: str | os.PathLike[str] | None = None,
    preset: str | Any | None = None,
    use_backbone_norm: bool | None = None,
) -> DepthModel:
    """Load an official AnyDepth checkpoint into a ``DepthModel`` (eval mode, CPU).

    The decoder structure always comes from the checkpoint's shapes. The encoder and tapped layers come from
    ``preset`` if given, else from the checkpoint's encoder weights (DINOv2/DINOv3 size -> ``dinov2_vitb14`` ...,
    layers of the release or of the preset table), else (head-only files) from the DINOv3 preset of the head's
    width, with a warning.

    Args:
        path: ``.pth``/``.pt`` (read with ``weights_only=True``) or ``.safetensors`` file.
        encoder_weights: encoder weights for head-only checkpoints (any layout ``create_model`` accepts).
            Must be None when the checkpoint contains the encoder.
        preset: preset name or ``ModelConfig`` whose encoder, layer indices and other settings to use (its
            decoder must be of the checkpoint's kind; its decoder options are replaced by the inferred ones).
        use_backbone_norm: override the LayerNorm-on-tapped-tokens choice. Defaults: the preset's value (False,
            the official ``build_depther`` default) for DINOv3; True for the DINOv2-based releases (the default of
            DAv2's ``get_intermediate_layers``, used by the DAv2+SDT release script; not verified against data).

    Returns:
        The ``DepthModel``; ``model.config`` records what was inferred, ``model.encoder_source`` the file.

    Raises:
        FileNotFoundError: missing file. ValueError: not an official checkpoint or any mismatch.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    decoder_sd, encoder_sd, info = convert_official_state_dict(read_checkpoint(p))
    kind, kwargs = info["decoder"], dict(info["decoder_kwargs"])
    if encoder_sd is not None and encoder_weights is not None:
        raise ValueError(f"{p} already contains encoder weights; do not pass encoder_weights")

    if isinstance(preset, ModelConfig):
        base = preset
    elif preset is not None:
        base = get_model_config(preset)
    elif encoder_sd is not None:
        name = info["encoder_name"]
        layers = info["layer_indices"] or ENCODER_LAYERS.get(name or "")
        if name is None or name not in ENCODERS or layers is None:
            raise ValueError(
                f"{p}: no anydepth encoder for {info['encoder_family']} width {info['encoder_embed_dim']}; "
                "pass preset="
            )
        base = ModelConfig(
            encoder=name,
            decoder=kind,
            layer_indices=layers,
            name=f"official:{info['release'] or info['layout']}",
        )
    else:
        dims = {384: "dinov3_vits16", 768: "dinov3_vitb16", 1024: "dinov3_vitl16"}
        if info["embed_dim"] not in dims:
            raise ValueError(f"{p}: head-only checkpoint of width {list(info['in_dims'])}; pass preset=")
        preset = f"{kind}_{dims[info['embed_dim']]}"
        log.warning("%s holds only the %s head; assuming preset %s (pass preset= to choose)", p, kind, preset)
        base = get_model_config(preset)
    if base.decoder != kind:
        raise ValueError(f"preset {base.name!r} uses decoder {base.decoder!r} but {p} holds a {kind!r} head")

    norm = base.use_backbone_norm
    if info["layout"] in ("dav2", "da3", "da3_adapter"):
        norm = True
    if info["layout"] == "dav2":
        # The dav2_sdt_vitb release script resizes with align_corners=True and applies a plain ReLU.
        kwargs.update(min_output=0.0, resize_align_corners=True)
    if use_backbone_norm is not None:
        norm = bool(use_backbone_norm)
    cfg = base.replace(decoder_kwargs=kwargs, use_backbone_norm=norm)

    if encoder_sd is not None:
        model = build_model(cfg)
        layout = "meta_dinov3" if info["encoder_family"] == "dinov3" else "meta_dinov2"  # DA3: DINOv2 names
        try:
            report = load_encoder_weights(model, encoder_sd, path=p, layout=layout)
        except ValueError as e:
            raise ValueError(
                f"{p}: encoder weights (under {info['encoder_prefix']!r}) do not fit {cfg.encoder}: {e}"
            ) from None
        log.info("loaded %s encoder weights from %s: %s", cfg.encoder, p, report)
    else:
        if encoder_weights is None:
            log.warning(
                "%s: no encoder weights given; the %s encoder stays randomly initialised", p, cfg.encoder
            )
        model = create_model(cfg, encoder_weights=encoder_weights)
    model.decoder.load_state_dict(decoder_sd, strict=True)
    log.info(
        "loaded official %s checkpoint %s (%s)", kind.upper(), p, "; ".join(info["notes"]) or info["layout"]
    )
    return model.eval()
