"""``anydepth convert SRC DST``: official / Meta / Hugging Face / timm / Depth-Anything-V2 files -> project format.

* An official AnyDepth checkpoint (released ``.pth`` files, or any official ``SDTHead``/``DPTHead``/``build_depther``
  ``state_dict()``) becomes a project model checkpoint (safetensors with the ``ModelConfig`` embedded).
* An encoder checkpoint in any supported layout becomes a Meta-named safetensors file that
  ``create_model(..., encoder_weights=DST)`` loads directly; with ``--encoder NAME`` it is first loaded strictly
  into that architecture, so a file that does not fit fails here rather than later.
"""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="convert official/Meta/HF/timm/Depth-Anything-V2 weights to the project's format",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "src", help="source file (.pth/.pt/.safetensors) or transformers save_pretrained directory"
    )
    p.add_argument("dst", help="destination .safetensors file")
    p.add_argument(
        "--encoder", default=None, help="encoder registry name to validate an encoder file against"
    )
    p.add_argument(
        "--preset", default=None, help="model preset for official head-only files (default: by width)"
    )
    p.add_argument(
        "--encoder-weights", default=None, help="encoder weights for official decoder-only checkpoints"
    )
    p.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from anydepth.models.encoders.convert import detect_layout, to_meta_with_dropped, unwrap_state_dict
    from anydepth.models.encoders.loading import read_state_dict

    src, dst = Path(args.src), Path(args.dst)
    if not src.exists():
        raise FileNotFoundError(f"source not found: {src}")
    if dst.suffix != ".safetensors":
        raise ValueError(f"destination must be a .safetensors file, got {dst}")
    if dst.exists() and not args.overwrite:
        raise FileExistsError(f"{dst} already exists (use --overwrite)")

    sd = read_state_dict(src) if src.is_dir() else None
    if sd is None:
        sd = _read_any(src)
    from anydepth.models.official import detect_official

    if detect_official(sd):
        import anydepth
        from anydepth.models.official import load_official_checkpoint

        model = load_official_checkpoint(src, encoder_weights=args.encoder_weights, preset=args.preset)
        # self-contained output when the encoder weights were inside the source file itself
        src_is_encoder = model.encoder_source is not None and model.encoder_source.get("path") == str(src)
        anydepth.save_model(
            model,
            dst,
            contents="full" if src_is_encoder else "auto",
            overwrite=args.overwrite,
            metadata={"converted_from": str(src)},
        )
        print(f"official AnyDepth checkpoint -> {dst} (model {model.config.name or model.config.encoder})")
        return 0

    flat = unwrap_state_dict(sd, what=str(src))
    try:
        layout = detect_layout(flat)
    except ValueError as e:
        raise ValueError(
            f"{src}: not a recognised checkpoint (neither an official AnyDepth file nor a Meta/HF/timm/"
            f"Depth-Anything-V2 encoder): {e}"
        ) from None
    meta_sd, dropped = to_meta_with_dropped(flat, layout)
    if args.encoder:
        from anydepth.models.encoders.loading import load_backbone_weights
        from anydepth.registry import ENCODERS

        backbone = ENCODERS.get(args.encoder)()
        load_backbone_weights(backbone, meta_sd)
    from safetensors.torch import save_file

    from anydepth.atomic import atomic_path

    tensors = {k: v.detach().contiguous() for k, v in meta_sd.items()}
    meta = {"format": "anydepth.encoder.v1", "source_layout": layout, "source": str(src)}
    if args.encoder:
        meta["encoder_name"] = args.encoder
    with atomic_path(dst, overwrite=args.overwrite) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    extra = f", dropped {len(dropped)} key(s) on purpose" if dropped else ""
    print(f"{layout} encoder weights -> {dst} ({len(tensors)} tensors, Meta names{extra})")
    return 0


def _read_any(path):  # type: ignore[no-untyped-def]
    """Raw (possibly nested) checkpoint object: safetensors dict or a weights-only torch pickle."""
    import torch

    from anydepth.models.weights.loading import describe_load_error

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:
            raise ValueError(f"{path}: not a readable safetensors file ({describe_load_error(e)})") from e
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: not a readable torch checkpoint ({describe_load_error(e)})") from e
