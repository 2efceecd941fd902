"""Import of official AnyDepth checkpoints (github.com/AIGeeksGroup/AnyDepth) into ``anydepth`` modules.

Pure functions on state dicts; ``anydepth.models.checkpoint.load_official_checkpoint`` builds the model. Every official key is mapped explicitly; an unknown key, a
missing key or a shape that does not fit the inferred decoder is an error (nothing is silently dropped
except the official DySample ``init_pos`` buffers, which are constants: they are checked, then dropped).

Layouts understood (``docs/decoders.md`` has the full key tables and what was verified):

* bare heads: ``SDTHead.state_dict()`` / ``DPTHead.state_dict()`` (``weighted_fusion.*`` ... / ``reassemble_blocks.*``);
* the official ``build_depther(...)`` ``Sequential``: ``0.encoder.backbone.*`` (the DINOv3 ViT, Meta names)
  and ``0.decoder.*`` (the head); ``1`` (``FeaturesToDepth``) has no tensors;
* the two released DINOv2-based checkpoints on Hugging Face ``AIGeeksGroup/AnyDepth``:
  ``dav2_sdt_vitb.pth`` (Depth Anything V2 ViT-B/14 + SDT, keys ``pretrained.*`` + ``depth_head.*``,
  ``fusion_channels=128``) and ``da3_sdt_vitl.pth`` (Depth Anything 3 ViT-L/14 + SDT, keys
  ``backbone.pretrained.*`` + ``head.*``, possibly under ``model.``; reported without the class-token
  readout and without the SDE);
* common nesting: a ``state_dict`` / ``model`` / ``module`` sub-dict, and ``module.`` / ``model.`` prefixes.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

import torch

from anydepth.models.decoders.dpt import DPTDecoder
from anydepth.models.decoders.sdt import SDTDecoder
from anydepth.models.layers.dysample import dysample_init_pos
from anydepth.models.weights.layers import ENCODER_LAYERS

__all__ = [
    "detect_official",
    "convert_official_state_dict",
    "to_official_state_dict",
    "unwrap_state_dict",
    "OFFICIAL_COMMIT",
    "RELEASES",
]

log = logging.getLogger(__name__)

# The official code the key tables were derived from (model/sdt_head.py, model/dpt_head.py).
OFFICIAL_COMMIT = "8603751493ce8c439079c8b978a6d0d9a1b66939"

# Released checkpoints (README "Weights" section of the official repo, Feb 2026).
RELEASES: dict[str, dict[str, Any]] = {
    "dav2_sdt_vitb": {
        "file": "dav2_sdt_vitb.pth",
        "url": "https://huggingface.co/AIGeeksGroup/AnyDepth/resolve/main/dav2_sdt_vitb.pth",
        "encoder": "dinov2_vitb14",
        "layer_indices": ENCODER_LAYERS["dinov2_vitb14"],
    },
    "da3_sdt_vitl": {
        "file": "da3_sdt_vitl.pth",
        "url": "https://huggingface.co/AIGeeksGroup/AnyDepth/resolve/main/da3_sdt_vitl.pth",
        # DA3's DINOv2 ViT-L as in DA3Mono/DA3Metric-Large (plain blocks, final LayerNorm eps 1e-5). A file that
        # carries DA3-Large's any-view extras (camera_token, q/k norms) maps to ``da3_vitl14`` instead.
        "encoder": "da3mono_vitl14",
        "layer_indices": ENCODER_LAYERS["da3mono_vitl14"],
    },
}

# ----------------------------------------------------------------------------------------------------------
# Key tables: (official template, our template). Placeholders: {i} layer index, {k}/{j} stage/block 1-2,
# {p} weight|bias, {bn} any BatchNorm entry. ``None`` as our template = checked constant, dropped.
# ----------------------------------------------------------------------------------------------------------
_PLACEHOLDERS = {
    "i": r"\d+",
    "k": r"[12]",
    "j": r"[12]",
    "p": r"weight|bias",
    "bn": r"weight|bias|running_mean|running_var|num_batches_tracked",
}

_SDT_TABLE: list[tuple[str, str | None]] = [
    ("weighted_fusion.readout_projects.{i}.0.{p}", "fusion.readouts.{i}.{p}"),
    ("weighted_fusion.projections.{i}.0.weight", "fusion.projections.{i}.weight"),
    ("weighted_fusion.layer_weights", "fusion.layer_weights"),
    ("detail_enhancer.dwconv.weight", "sde.dwconv.weight"),
    ("detail_enhancer.norm.{bn}", "sde.bn.{bn}"),
    ("upsample_{k}.dysample{j}.0.offset.{p}", "upsample{k}.block{j}.up.offset.{p}"),
    ("upsample_{k}.dysample{j}.0.scope.weight", "upsample{k}.block{j}.up.scope.weight"),
    ("upsample_{k}.dysample{j}.0.init_pos", None),
    ("upsample_{k}.dysample{j}.1.weight", "upsample{k}.block{j}.conv.weight"),
    ("upsample_{k}.dysample{j}.2.{bn}", "upsample{k}.block{j}.bn.{bn}"),
    ("refinement_{k}.0.{p}", "refine{k}.conv.{p}"),
    ("refinement_{k}.1.{bn}", "refine{k}.bn.{bn}"),
    ("output_conv.0.{p}", "head.conv1.{p}"),
    ("output_conv.2.{p}", "head.conv2.{p}"),
    ("output_conv.4.{p}", "head.conv_out.{p}"),
]

_DPT_TABLE: list[tuple[str, str | None]] = [
    ("reassemble_blocks.readout_projects.{i}.0.{p}", "reassemble.readouts.{i}.{p}"),
    ("reassemble_blocks.batchnorm_layers.{i}.{bn}", "reassemble.norms.{i}.{bn}"),
    ("reassemble_blocks.projects.{i}.conv.{p}", "reassemble.projects.{i}.{p}"),
    ("reassemble_blocks.resize_layers.{i}.{p}", "reassemble.resizes.{i}.{p}"),
    ("convs.{i}.conv.weight", "layer_convs.{i}.weight"),
    ("fusion_blocks.{i}.project.conv.{p}", "fusions.{i}.project.{p}"),
    ("fusion_blocks.{i}.res_conv_unit{k}.conv{j}.conv.weight", "fusions.{i}.res{k}.conv{j}.weight"),
    ("project.conv.{p}", "project.{p}"),
    ("conv_depth.head.0.{p}", "head.conv1.{p}"),
    ("conv_depth.head.2.{p}", "head.conv2.{p}"),
    ("conv_depth.head.4.{p}", "head.conv_out.{p}"),
]

# First key component of every official head module (used to tell head keys from encoder keys).
_HEAD_ROOTS = {
    "sdt": (
        "weighted_fusion",
        "detail_enhancer",
        "upsample_1",
        "upsample_2",
        "refinement_1",
        "refinement_2",
        "output_conv",
    ),
    "dpt": ("reassemble_blocks", "convs", "fusion_blocks", "project", "conv_depth"),
}
# Keys whose presence identifies a head and its prefix.
_ANCHORS = {
    "sdt": ("weighted_fusion.projections.0.0.weight",),
    "dpt": ("reassemble_blocks.projects.0.conv.weight",),
}
# Where official code puts the head: bare, build_depther Sequential, EncoderDecoder, DAv2 model, DA3 model,
# DA3 adapter wrapper.
_DECODER_PREFIXES: dict[str, str] = {
    "": "head",
    "0.decoder.": "build_depther",
    "decoder.": "encoder_decoder",
    "depth_head.": "dav2",
    "head.": "da3",
    "head.sdt_head.": "da3_adapter",
    "sdt_head.": "adapter",
}
# Where official code puts the ViT (Meta parameter names below the prefix).
_ENCODER_PREFIXES: tuple[str, ...] = (
    "0.encoder.backbone.",
    "encoder.backbone.",
    "backbone.pretrained.",
    "pretrained.",
)
_NESTING_KEYS = ("state_dict", "model", "module", "model_state_dict", "net")
_STRIP_PREFIXES = ("module.", "model.", "_orig_mod.")


def _compile(template: str) -> re.Pattern[str]:
    out, pos = "", 0
    for m in re.finditer(r"\{(\w+)\}", template):
        out += re.escape(template[pos : m.start()]) + f"(?P<{m.group(1)}>{_PLACEHOLDERS[m.group(1)]})"
        pos = m.end()
    return re.compile(out + re.escape(template[pos:]) + r"\Z")


_COMPILED: dict[str, list[tuple[re.Pattern[str], str | None, re.Pattern[str] | None, str]]] = {
    kind: [(_compile(off), ours, _compile(ours) if ours else None, off) for off, ours in table]
    for kind, table in (("sdt", _SDT_TABLE), ("dpt", _DPT_TABLE))
}


def _fmt(keys: list[str] | set[str], n: int = 8) -> str:
    keys = sorted(keys)
    more = f" ... (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


# ----------------------------------------------------------------------------------------------------------
# Nesting / prefixes
# ----------------------------------------------------------------------------------------------------------
def unwrap_state_dict(obj: Any) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Find the flat tensor state dict inside a loaded checkpoint object.

    Descends into ``state_dict`` / ``model`` / ``module`` / ``model_state_dict`` / ``net`` sub-dicts and strips
    prefixes shared by every key (``module.`` from DDP, ``model.`` from Lightning-style wrappers, ``_orig_mod.``
    from ``torch.compile``).

    Returns:
        ``(state_dict, steps)`` where ``steps`` lists what was unwrapped (e.g. ``["model", "strip:module."]``).

    Raises:
        ValueError: no tensor state dict found, or non-tensor values mixed into it.
    """
    steps: list[str] = []
    while isinstance(obj, Mapping):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        for key in _NESTING_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                steps.append(key)
                break
        else:
            bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
            raise ValueError(
                f"no tensor state dict found: entries {_fmt([str(b) for b in bad])} are not tensors and none of "
                f"{list(_NESTING_KEYS)} holds a state dict"
            )
    if not isinstance(obj, Mapping) or not obj:
        raise ValueError(
            f"expected a non-empty state dict (mapping of name -> tensor), got {type(obj).__name__}"
        )
    sd = {str(k): v for k, v in obj.items()}
    changed = True
    while changed:
        changed = False
        for prefix in _STRIP_PREFIXES:
            if all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix) :]: v for k, v in sd.items()}
                steps.append(f"strip:{prefix}")
                changed = True
    return sd, steps


def _find_head(sd: Mapping[str, torch.Tensor]) -> tuple[str, str] | None:
    """``(kind, prefix)`` of the official head in ``sd``, or None. Raises if several heads are present."""
    found: list[tuple[str, str]] = []
    for kind, anchors in _ANCHORS.items():
        for key in sd:
            for anchor in anchors:
                if key == anchor or key.endswith("." + anchor):
                    found.append((kind, key[: len(key) - len(anchor)]))
    found = sorted(set(found))
    if len(found) > 1:
        raise ValueError(f"state dict holds several official heads: {found}")
    return found[0] if found else None


def detect_official(sd: Any) -> bool:
    """True if ``sd`` (a loaded checkpoint object, possibly nested) contains an official SDT or DPT head."""
    try:
        flat, _ = unwrap_state_dict(sd)
        return _find_head(flat) is not None
    except ValueError:
        return False


# ----------------------------------------------------------------------------------------------------------
# Key mapping
# ----------------------------------------------------------------------------------------------------------
def _map_head(kind: str, head: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Official head keys (prefix removed) -> our decoder keys. Returns ``(ours, dropped_keys)``."""
    ours: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    unknown: list[str] = []
    init_pos = dysample_init_pos(2, 4)
    for key, value in head.items():
        for pattern, target, _, _ in _COMPILED[kind]:
            m = pattern.match(key)
            if m is None:
                continue
            if target is None:  # DySample init_pos: a constant of the official code, check and drop
                if tuple(value.shape) != tuple(init_pos.shape) or not torch.equal(
                    value.float().cpu(), init_pos
                ):
                    raise ValueError(
                        f"official key {key!r}: init_pos {tuple(value.shape)} differs from DySample(scale=2, "
                        "groups=4, style='lp'); this checkpoint was not made with the official SDTHead"
                    )
                dropped.append(key)
            else:
                ours[target.format(**m.groupdict())] = value
            break
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"unknown official {kind.upper()} head key(s): {_fmt(unknown)}")
    return ours, dropped


def _indices(sd: Mapping[str, torch.Tensor], pattern: str) -> list[int]:
    rx = re.compile(pattern)
    idx = sorted({int(m.group(1)) for k in sd if (m := rx.match(k))})
    if idx != list(range(len(idx))):
        raise ValueError(f"layer indices {idx} of {pattern!r} are not contiguous from 0")
    return idx


def _infer_sdt(sd: Mapping[str, torch.Tensor]) -> tuple[tuple[int, ...], dict[str, Any], int]:
    layers = _indices(sd, r"fusion\.projections\.(\d+)\.weight\Z")
    in_dims = tuple(int(sd[f"fusion.projections.{i}.weight"].shape[1]) for i in layers)
    fusion = int(sd["fusion.projections.0.weight"].shape[0])
    try:
        head = (int(sd["head.conv1.weight"].shape[0]), int(sd["head.conv2.weight"].shape[0]))
        n_out = int(sd["head.conv_out.weight"].shape[0])
    except KeyError as e:
        raise ValueError(f"official SDT head is missing {e.args[0]!r} (mapped name)") from None
    kwargs = {
        "fusion_channels": fusion,
        "head_channels": head,
        "use_cls_token": any(k.startswith("fusion.readouts.") for k in sd),
        "use_sde": any(k.startswith("sde.") for k in sd),
    }
    return in_dims, kwargs, n_out


def _infer_dpt(sd: Mapping[str, torch.Tensor]) -> tuple[tuple[int, ...], dict[str, Any], int]:
    layers = _indices(sd, r"reassemble\.projects\.(\d+)\.weight\Z")
    in_dims = tuple(int(sd[f"reassemble.projects.{i}.weight"].shape[1]) for i in layers)
    post = tuple(int(sd[f"reassemble.projects.{i}.weight"].shape[0]) for i in layers)
    try:
        channels = int(sd["layer_convs.0.weight"].shape[0])
        n_out = int(sd["head.conv_out.weight"].shape[0])
    except KeyError as e:
        raise ValueError(f"official DPT head is missing {e.args[0]!r} (mapped name)") from None
    kwargs = {
        "channels": channels,
        "post_process_channels": post,
        # "add" and "ignore" have no parameters; the official build_depther only ever uses "ignore".
        "readout": "project" if any(k.startswith("reassemble.readouts.") for k in sd) else "ignore",
        "use_batchnorm": any(k.startswith("reassemble.norms.") for k in sd),
    }
    return in_dims, kwargs, n_out


def _check_against_decoder(
    kind: str, in_dims: tuple[int, ...], kwargs: dict[str, Any], sd: dict
) -> list[str]:
    """Build the inferred decoder on the meta device and require identical keys and shapes.

    Missing BatchNorm ``num_batches_tracked`` counters (very old checkpoints) are filled with 0 and reported.
    """
    cls = SDTDecoder if kind == "sdt" else DPTDecoder
    try:
        with torch.device("meta"):
            ref = cls(in_dims, **kwargs).state_dict()
    except ValueError as e:
        raise ValueError(f"official {kind.upper()} head does not fit our decoder: {e}") from None
    filled = [k for k in ref if k not in sd and k.endswith("num_batches_tracked")]
    for k in filled:
        sd[k] = torch.zeros((), dtype=torch.long)
    missing = sorted(set(ref) - set(sd))
    unexpected = sorted(set(sd) - set(ref))
    if missing or unexpected:
        raise ValueError(
            f"official {kind.upper()} head (inferred {kwargs}) does not match: missing {_fmt(missing)}; "
            f"unexpected {_fmt(unexpected)}"
        )
    bad = [f"{k}: {tuple(sd[k].shape)} vs {tuple(v.shape)}" for k, v in ref.items() if sd[k].shape != v.shape]
    if bad:
        raise ValueError(f"official {kind.upper()} head has unexpected shapes: {_fmt(bad)}")
    return filled


# ----------------------------------------------------------------------------------------------------------
# Encoder description
# ----------------------------------------------------------------------------------------------------------
_SIZES_V2 = {384: "vits", 768: "vitb", 1024: "vitl", 1536: "vitg"}
_SIZES_V3 = {384: "vits", 768: "vitb", 1024: "vitl", 1280: "vith", 4096: "vit7b"}


def _describe_encoder(enc: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    for key in ("cls_token", "patch_embed.proj.weight"):
        if key not in enc:
            raise ValueError(
                f"encoder weights lack {key!r}; not a DINOv2/DINOv3 ViT in Meta naming: {_fmt(list(enc))}"
            )
    dim = int(enc["cls_token"].shape[-1])
    patch = int(enc["patch_embed.proj.weight"].shape[-1])
    blocks = {int(m.group(1)) for k in enc if (m := re.match(r"blocks\.(\d+)\.", k))}
    swiglu = any(re.match(r"blocks\.0\.mlp\.w(12|1|2|3)\.", k) for k in enc)
    if "storage_tokens" in enc or "rope_embed.periods" in enc:
        family = "dinov3"
        size = _SIZES_V3.get(dim)
        # Meta's names: vits16, vitsplus16 (SwiGLU), vitb16, vitl16, vitl16plus (SwiGLU), vith16plus, vit7b16
        if size is None:
            name = None
        elif size == "vits" and swiglu:
            size, name = "vitsplus", f"dinov3_vitsplus{patch}"
        elif size in ("vitl", "vith") and (swiglu or size == "vith"):
            name = f"dinov3_{size}{patch}plus"
        else:
            name = f"dinov3_{size}{patch}"
    elif "pos_embed" in enc:
        family = "dinov2"
        size = _SIZES_V2.get(dim)
        name = (
            None if size is None else f"dinov2_{size}{patch}" + ("_reg" if "register_tokens" in enc else "")
        )
    else:
        raise ValueError(
            "encoder weights are neither DINOv2 (pos_embed) nor DINOv3 (storage_tokens / rope_embed)"
        )
    return {
        "encoder_family": family,
        "encoder_size": size,
        "encoder_name": name,
        "encoder_embed_dim": dim,
        "encoder_feature_dim": dim,
        "encoder_patch_size": patch,
        "encoder_depth": len(blocks) if blocks else None,
    }


# ----------------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------------
def convert_official_state_dict(
    sd: Any,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None, dict[str, Any]]:
    """Map an official AnyDepth state dict to ``anydepth`` names.

    Args:
        sd: the object loaded from an official checkpoint: a flat state dict or one nested under
            ``state_dict``/``model``/``module``, with or without ``module.``/``model.`` prefixes.

    Returns:
        ``(decoder_sd, encoder_sd, info)``:

        * ``decoder_sd``: state dict for ``SDTDecoder``/``DPTDecoder(info["in_dims"], **info["decoder_kwargs"])``
          (complete and exact; load with ``strict=True``).
        * ``encoder_sd``: the ViT weights with the wrapper prefix removed (Meta DINOv2/DINOv3 names; the
          DAv2/DA3 checkpoints include DINOv2's unused ``mask_token``), or None for head-only files.
        * ``info``: ``decoder`` ("sdt"/"dpt"), ``in_dims``, ``embed_dim`` (C if all layers share it),
          ``decoder_kwargs``, ``n_output_channels``, ``layout`` (``head``, ``build_depther``, ``dav2``, ``da3``,
          ...), ``decoder_prefix``, ``encoder_prefix``, ``encoder_family`` (``dinov2``/``dinov3``/``da3``)/``encoder_size``/
          ``encoder_name``/``encoder_embed_dim``/``encoder_feature_dim`` (tapped width: 2x for DA3-Large)/
          ``encoder_patch_size``/``encoder_depth`` (None without encoder weights),
          ``release`` (e.g. ``"dav2_sdt_vitb"``) and ``layer_indices`` (release hint) when recognised,
          ``unwrapped`` (nesting steps), ``dropped_keys`` (checked constants) and ``notes``.

    Raises:
        ValueError: no official head found, unknown keys (in the head or outside it), missing keys, shapes that
            do not fit, or a head with more than one output channel.
    """
    flat, steps = unwrap_state_dict(sd)
    found = _find_head(flat)
    if found is None:
        raise ValueError(
            "not an official AnyDepth checkpoint: no SDT head (weighted_fusion.*) or DPT head "
            f"(reassemble_blocks.*) found among keys {_fmt(list(flat))}"
        )
    kind, prefix = found
    if prefix not in _DECODER_PREFIXES:
        raise ValueError(
            f"official {kind.upper()} head found under unknown prefix {prefix!r}; known: {list(_DECODER_PREFIXES)}"
        )
    roots = _HEAD_ROOTS[kind]
    head: dict[str, torch.Tensor] = {}
    rest: dict[str, torch.Tensor] = {}
    for key, value in flat.items():
        sub = key[len(prefix) :] if key.startswith(prefix) else None
        if sub is not None and sub.split(".", 1)[0] in roots:
            head[sub] = value
        else:
            rest[key] = value
    notes: list[str] = []
    decoder_sd, dropped = _map_head(kind, head)
    if kind == "sdt":
        in_dims, kwargs, n_out = _infer_sdt(decoder_sd)
    else:
        in_dims, kwargs, n_out = _infer_dpt(decoder_sd)
    if n_out != 1:
        raise ValueError(
            f"official {kind.upper()} head has {n_out} output channels; anydepth decoders predict 1 channel "
            "(the official default n_output_channels=256 belongs to DINOv3's binned depth head, not AnyDepth)"
        )
    filled = _check_against_decoder(kind, in_dims, kwargs, decoder_sd)
    if filled:
        notes.append(f"filled {len(filled)} missing BatchNorm num_batches_tracked counters with 0")

    encoder_sd: dict[str, torch.Tensor] | None = None
    enc_prefix: str | None = None
    enc_info: dict[str, Any] = dict.fromkeys(
        (
            "encoder_family",
            "encoder_size",
            "encoder_name",
            "encoder_embed_dim",
            "encoder_feature_dim",
            "encoder_patch_size",
            "encoder_depth",
        )
    )
    if rest:
        enc_prefix = next((p for p in _ENCODER_PREFIXES if any(k.startswith(p) for k in rest)), None)
        stray = [k for k in rest if enc_prefix is None or not k.startswith(enc_prefix)]
        if stray:
            raise ValueError(
                f"unknown key(s) outside the {kind.upper()} head: {_fmt(stray)} (encoder weights must sit under "
                f"one of {list(_ENCODER_PREFIXES)})"
            )
        assert enc_prefix is not None
        encoder_sd = {k[len(enc_prefix) :]: v for k, v in rest.items()}
        enc_info = _describe_encoder(encoder_sd)

    layout = _DECODER_PREFIXES[prefix]
    if layout == "head" and enc_prefix is not None:
        layout = {"pretrained.": "dav2", "backbone.pretrained.": "da3"}.get(enc_prefix, "build_depther")
    layer_indices = None
    if enc_info["encoder_family"] == "dinov2" and (
        layout.startswith("da3")
        or enc_prefix == "backbone.pretrained."
        or "camera_token" in (encoder_sd or {})
    ):
        # Depth Anything 3's ViT (DA3 code names it backbone.pretrained): any-view DA3-Large if the file has
        # its camera token / q-k norms (tapped features are then [prev, cur] concatenations, 2C wide), else the
        # plain DINOv2-style ViT of DA3Mono/DA3Metric (final LayerNorm eps 1e-5).
        anyview = any(k == "camera_token" or ".attn.q_norm." in k for k in encoder_sd or {})
        enc_info["encoder_family"] = "da3"
        if enc_info["encoder_size"] == "vitl":
            enc_info["encoder_name"] = "da3_vitl14" if anyview else "da3mono_vitl14"
            layer_indices = ENCODER_LAYERS[enc_info["encoder_name"]]
        else:
            enc_info["encoder_name"] = None
        if anyview:
            enc_info["encoder_feature_dim"] = 2 * enc_info["encoder_embed_dim"]
    if encoder_sd is not None and enc_info["encoder_feature_dim"] not in in_dims:
        raise ValueError(
            f"encoder feature width {enc_info['encoder_feature_dim']} does not match the head's input dims {in_dims}"
        )
    release = None
    if (
        kind == "sdt"
        and enc_info["encoder_family"] in ("dinov2", "da3")
        and layout in ("dav2", "da3", "da3_adapter")
    ):
        release = f"{'dav2' if layout == 'dav2' else 'da3'}_sdt_{enc_info['encoder_size']}"
        if release in RELEASES and layout == "dav2":
            layer_indices = RELEASES[release]["layer_indices"]
        notes.append(
            f"recognised as the released {release} checkpoint layout ({enc_info['encoder_name']} encoder under "
            f"{enc_prefix!r}, SDT head under {prefix!r})"
        )
    embed = in_dims[0] if len(set(in_dims)) == 1 else None
    info: dict[str, Any] = {
        "decoder": kind,
        "in_dims": in_dims,
        "embed_dim": embed,
        "decoder_kwargs": kwargs,
        "n_output_channels": n_out,
        "layout": layout,
        "decoder_prefix": prefix,
        "encoder_prefix": enc_prefix,
        **enc_info,
        "release": release,
        "layer_indices": layer_indices,
        "unwrapped": steps,
        "dropped_keys": sorted(prefix + k for k in dropped),
        "notes": notes,
        "official_commit": OFFICIAL_COMMIT,
    }
    return decoder_sd, encoder_sd, info


def to_official_state_dict(decoder_sd: Mapping[str, torch.Tensor], decoder: str, prefix: str = "") -> dict:
    """Inverse of the head mapping: our ``SDTDecoder``/``DPTDecoder`` state dict -> official head names.

    The DySample ``init_pos`` constants are added back, so the result loads into the official ``SDTHead``
    with ``strict=True`` (when the decoder uses every official module).

    Args:
        decoder_sd: our decoder state dict.
        decoder: ``"sdt"`` or ``"dpt"``.
        prefix: prepended to every key (``"0.decoder."`` for a ``build_depther`` model, ``"depth_head."`` ...).

    Raises:
        ValueError: a key with no official counterpart (e.g. the bilinear-upsampler ablation, which has no
            DySample, or uniform fusion weights).
    """
    if decoder not in _COMPILED:
        raise ValueError(f"decoder must be 'sdt' or 'dpt', got {decoder!r}")
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in decoder_sd.items():
        for _, _, ours_rx, official in _COMPILED[decoder]:
            if ours_rx is not None and (m := ours_rx.match(key)):
                out[prefix + official.format(**m.groupdict())] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"no official {decoder.upper()} counterpart for key(s): {_fmt(unknown)}")
    if decoder == "sdt":
        for k in (1, 2):
            for j in (1, 2):
                if f"upsample{k}.block{j}.up.offset.weight" not in decoder_sd:
                    raise ValueError("the official SDTHead always uses DySample; this decoder has none")
                ref = decoder_sd[f"upsample{k}.block{j}.up.offset.weight"]
                out[f"{prefix}upsample_{k}.dysample{j}.0.init_pos"] = dysample_init_pos(2, 4).to(ref.dtype)
        if "fusion.layer_weights" not in decoder_sd:
            raise ValueError("the official SDTHead always has learned fusion weights; this decoder has none")
    return out
