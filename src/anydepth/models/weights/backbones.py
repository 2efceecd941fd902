"""Pure state-dict converters: DINOv3/DINOv2 checkpoints in foreign layouts -> Meta's original key names.

Nothing here touches files or imports transformers/timm. Layouts (``LAYOUTS``):

* ``meta_dinov3``: Meta's DINOv3 ``.pth`` (``storage_tokens``, ``blocks.N.attn.qkv`` + ``bias_mask``,
  ``ls1.gamma``, ``rope_embed.periods``); returned unchanged.
* ``meta_dinov2``: Meta's DINOv2 ``.pth`` (``pos_embed``, ``register_tokens``); chunked-block names
  ``blocks.C.N.*`` (``block_chunks > 0``) are flattened to ``blocks.N.*``. timm's DINOv2 files without
  registers and without SwiGLU have exactly these names and are detected as this layout.
* ``hf_dinov3``: transformers ``DINOv3ViTModel`` / ``DINOv3ViTBackbone``: on-disk ``layer.N.*`` and the 5.x
  in-memory ``model.layer.N.*``; separate ``q/k/v_proj`` are fused into ``qkv`` (missing biases -> zeros).
* ``hf_dinov2``: transformers ``Dinov2Model`` / ``Dinov2WithRegistersModel`` (also ``*Backbone``): 4.x / on-disk
  ``attention.attention.{query,key,value}``, ``attention.output.dense``, ``mlp.weights_in/out`` and the 5.x
  in-memory ``attention.{q,k,v,o}_proj``, ``mlp.{gate,up,down}_proj``.
* ``timm_dinov3``: timm ``Eva`` DINOv3 (``reg_token``, ``gamma_1``, ``attn.q_bias``/``v_bias``,
  ``mlp.fc1_g``/``fc1_x``); the q/v biases become ``qkv.bias`` with a zero K third; a checkpoint of a timm model
  without q/v bias (non-``_qkvb`` names) gets an explicit all-zero ``qkv.bias`` (exactly what timm computes).
* ``timm_dinov2``: timm ``VisionTransformer`` DINOv2 with registers (``reg_token``, ``pos_embed`` without the
  class position, which timm folded into ``cls_token``) and/or packed SwiGLU ``mlp.fc1``/``fc2`` (ViT-g).
* ``dav2``: Depth-Anything-V2 ``.pth``: Meta DINOv2 keys behind ``pretrained.``; the DPT head
  (``depth_head.*``) is dropped.
* ``da3``: Depth Anything 3 hub ``model.safetensors``: DA3's ViT behind ``[model.]backbone.pretrained.``; the head
  and camera encoder/decoder (``head.*``, ``cam_enc.*``, ``cam_dec.*``) are dropped.

``to_meta_with_dropped`` also returns the keys dropped on purpose (``depth_head.*``, RoPE ``inv_freq``); keys it
cannot map are passed through unchanged so that the loader reports them as unknown.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "LAYOUTS",
    "layout_family",
    "detect_layout",
    "to_meta",
    "to_meta_with_dropped",
    "unwrap_state_dict",
]

LAYOUTS: tuple[str, ...] = (
    "meta_dinov3",
    "meta_dinov2",
    "hf_dinov3",
    "hf_dinov2",
    "timm_dinov3",
    "timm_dinov2",
    "dav2",
    "da3",
)

_NEST_KEYS = ("state_dict", "model", "module", "model_state_dict", "teacher", "model_ema")


def layout_family(layout: str) -> str:
    """``"dinov3"`` or ``"dinov2"`` for a layout name.

    Raises:
        ValueError: for an unknown layout.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown checkpoint layout {layout!r}; valid: {', '.join(LAYOUTS)}")
    return "dinov3" if layout.endswith("dinov3") else "dinov2"


def unwrap_state_dict(obj: Any, what: str = "checkpoint") -> dict[str, Tensor]:
    """Return the flat ``{name: tensor}`` dict inside a loaded checkpoint.

    Descends into the usual nesting (``{"model": ...}``, ``{"state_dict": ...}``, ``{"module": ...}``,
    ``{"teacher": ...}``, ``{"model_ema": ...}``) while the object holds no tensors itself, then strips a
    ``module.`` prefix (DataParallel/DDP) if every key has it. Non-tensor entries next to tensors (e.g.
    ``"epoch"``) are ignored.

    Args:
        obj: what ``torch.load`` / ``safetensors`` returned.
        what: name for error messages (usually the file path).

    Raises:
        ValueError: if no flat mapping of tensors is found.
    """
    for _ in range(4):
        if not isinstance(obj, Mapping):
            break
        if any(isinstance(v, Tensor) for v in obj.values()):
            break
        inner = next((obj[k] for k in _NEST_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise ValueError(
            f"{what}: expected a state dict (mapping of names to tensors), got {type(obj).__name__}"
        )
    sd = {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}
    if not sd:
        keys = list(obj)[:10]
        raise ValueError(f"{what}: no tensors found in the checkpoint (top-level keys: {keys})")
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd


def _has(sd: Mapping[str, Any], pattern: str) -> bool:
    rx = re.compile(pattern)
    return any(rx.search(k) for k in sd)


def detect_layout(sd: Mapping[str, Tensor]) -> str:
    """Guess the layout of a flat state dict (see the module docstring for the names).

    Raises:
        ValueError: if the keys match no known layout; the message lists a sample of keys.
    """
    if _has(sd, r"^pretrained\.(pos_embed|blocks\.)"):
        return "dav2"
    if _has(sd, r"^(model\.)?backbone\.pretrained\.(pos_embed|blocks\.)"):
        return "da3"
    if _has(sd, r"^(model\.)?layer\.\d+\.attention\.(q|k|v|o)_proj\.") and _has(
        sd, r"^embeddings\.patch_embeddings\.weight$"
    ):
        return "hf_dinov3"
    if _has(sd, r"^embeddings\.position_embeddings$") and _has(sd, r"^encoder\.layer\.\d+\."):
        return "hf_dinov2"
    if _has(sd, r"^blocks\.(\d+\.)+attn\.qkv\.weight$"):
        timm_keys = _has(sd, r"^reg_token$|\.gamma_[12]$|\.attn\.[qv]_bias$|\.mlp\.fc1_[gx]\.")
        if "pos_embed" in sd:
            if "reg_token" in sd or _timm_packed_swiglu(sd):
                return "timm_dinov2"
            return "meta_dinov2"
        return "timm_dinov3" if timm_keys else "meta_dinov3"
    sample = sorted(sd)[:12]
    raise ValueError(
        "unrecognised checkpoint layout: expected DINOv3/DINOv2 weights in Meta, Hugging Face transformers, "
        f"timm or Depth-Anything-V2 naming; first keys: {sample}"
    )


def _timm_packed_swiglu(sd: Mapping[str, Tensor]) -> bool:
    """timm ViT-g DINOv2 packs SwiGLU in ``mlp.fc1`` (2*hidden rows) with ``mlp.fc2`` taking ``hidden``."""
    fc1, fc2 = sd.get("blocks.0.mlp.fc1.weight"), sd.get("blocks.0.mlp.fc2.weight")
    return fc1 is not None and fc2 is not None and fc1.shape[0] == 2 * fc2.shape[1]


def to_meta(sd: Mapping[str, Tensor], layout: str = "auto") -> dict[str, Tensor]:
    """Convert a state dict to Meta's original key names (and tensor shapes).

    Args:
        sd: flat state dict.
        layout: one of ``LAYOUTS`` or ``"auto"`` (``detect_layout``).

    Returns:
        A new dict (input tensors are shared, not copied, where no reshaping is needed).
    """
    return to_meta_with_dropped(sd, layout)[0]


def to_meta_with_dropped(
    sd: Mapping[str, Tensor], layout: str = "auto"
) -> tuple[dict[str, Tensor], list[str]]:
    """Like ``to_meta`` but also return the source keys dropped on purpose (sorted)."""
    if layout == "auto":
        layout = detect_layout(sd)
    layout_family(layout)  # validates the name
    fn = {
        "meta_dinov3": _from_meta,
        "meta_dinov2": _from_meta_dinov2,
        "hf_dinov3": _from_hf_dinov3,
        "hf_dinov2": _from_hf_dinov2,
        "timm_dinov3": _from_timm_dinov3,
        "timm_dinov2": _from_timm_dinov2,
        "dav2": _from_dav2,
        "da3": _from_da3,
    }[layout]
    out, dropped = fn(dict(sd))
    return out, sorted(dropped)


def _from_meta(sd: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    return dict(sd), []


def _from_meta_dinov2(sd: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    # block_chunks > 0 names blocks ``blocks.<chunk>.<global index>.*``; flatten to ``blocks.<index>.*``.
    out = {re.sub(r"^blocks\.\d+\.(\d+)\.", r"blocks.\1.", k): v for k, v in sd.items()}
    if len(out) != len(sd):
        raise ValueError("meta_dinov2: block names collide after flattening chunked blocks")
    return out, []


def _from_dav2(sd: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    backbone: dict[str, Tensor] = {}
    dropped: list[str] = []
    for k, v in sd.items():
        if k.startswith("pretrained."):
            backbone[k[len("pretrained.") :]] = v
        elif k.startswith("depth_head."):
            dropped.append(k)
        else:
            backbone[k] = v  # unknown: reported by the loader
    out, more = _from_meta_dinov2(backbone)
    return out, dropped + more


def _from_da3(sd: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    backbone: dict[str, Tensor] = {}
    dropped: list[str] = []
    for k, v in sd.items():
        key = k[len("model.") :] if k.startswith("model.") else k
        if key.startswith("backbone.pretrained."):
            backbone[key[len("backbone.pretrained.") :]] = v
        elif key.startswith(("head.", "cam_enc.", "cam_dec.")):
            dropped.append(k)
        else:
            backbone[k] = v  # unknown: reported by the loader
    return backbone, dropped


def _cat_qkv(
    sd: dict[str, Tensor], out: dict[str, Tensor], names: tuple[str, str, str], dst: str, used: set[str]
) -> None:
    """Fuse separate q/k/v linears ``{names[i]}.weight/.bias`` into ``{dst}.weight/.bias``.

    A missing bias of one projection becomes zeros when another one has a bias (HF DINOv3 has no K bias).
    """
    ws = [sd.get(f"{n}.weight") for n in names]
    if any(w is None for w in ws):
        return  # incomplete: leave the pieces to be reported as unknown
    weights = [w for w in ws if w is not None]
    out[f"{dst}.weight"] = torch.cat(weights, dim=0)
    used.update(f"{n}.weight" for n in names)
    bs = [sd.get(f"{n}.bias") for n in names]
    if any(b is not None for b in bs):
        ref = next(b for b in bs if b is not None)
        parts = [
            b if b is not None else torch.zeros(w.shape[0], dtype=ref.dtype)
            for b, w in zip(bs, weights, strict=True)
        ]
        out[f"{dst}.bias"] = torch.cat(parts, dim=0)
        used.update(f"{n}.bias" for n, b in zip(names, bs, strict=True) if b is not None)


def _from_hf_dinov3(sd: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    sd = {re.sub(r"^model\.layer\.", "layer.", k): v for k, v in sd.items()}
    out: dict[str, Tensor] = {}
    dropped: list[str] = []
    used: set[str] = set()
    layers = sorted({int(m.group(1)) for k in sd if (m := re.match(r"^layer\.(\d+)\.", k))})
    for i in layers:
        a, b = f"layer.{i}.attention", f"blocks.{i}"
        _cat_qkv(sd, out, (f"{a}.q_proj", f"{a}.k_proj", f"{a}.v_proj"), f"{b}.attn.qkv", used)
    simple = [
        (r"^embeddings\.cls_token$", "cls_token"),
        (r"^embeddings\.register_tokens$", "storage_tokens"),
        (r"^embeddings\.patch_embeddings\.", "patch_embed.proj."),
        (r"^layer\.(\d+)\.norm([12])\.", r"blocks.\1.norm\2."),
        (r"^layer\.(\d+)\.attention\.o_proj\.", r"blocks.\1.attn.proj."),
        (r"^layer\.(\d+)\.layer_scale([12])\.lambda1$", r"blocks.\1.ls\2.gamma"),
        (r"^norm\.", "norm."),
    ]
    for k, v in sd.items():
        if k in used:
            continue
        if k == "embeddings.mask_token":
            out["mask_token"] = v.reshape(1, -1)  # HF [1,1,C] -> Meta [1,C]
            continue
        if k.endswith("inv_freq"):
            dropped.append(k)
            continue
        mlp = re.match(r"^layer\.(\d+)\.mlp\.(gate_proj|up_proj|down_proj)\.(weight|bias)$", k)
        if mlp:
            blk, proj, kind = mlp.groups()
            if f"layer.{blk}.mlp.gate_proj.weight" in sd:  # gated MLP: silu(gate) * up -> down
                table = {"gate_proj": "w1", "up_proj": "w2", "down_proj": "w3"}
            else:
                table = {"up_proj": "fc1", "down_proj": "fc2"}
            name = table.get(proj)
            out[f"blocks.{blk}.mlp.{name}.{kind}" if name else k] = v
            continue
        out[_rename(k, simple)] = v
    return out, dropped


def _from_hf_dinov2(sd: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    out: dict[str, Tensor] = {}
    used: set[str] = set()
    layers = sorted({int(m.group(1)) for k in sd if (m := re.match(r"^encoder\.layer\.(\d+)\.", k))})
    for i in layers:
        a, b = f"encoder.layer.{i}.attention", f"blocks.{i}"
        _cat_qkv(
            sd,
            out,
            (f"{a}.attention.query", f"{a}.attention.key", f"{a}.attention.value"),
            f"{b}.attn.qkv",
            used,
        )
        _cat_qkv(sd, out, (f"{a}.q_proj", f"{a}.k_proj", f"{a}.v_proj"), f"{b}.attn.qkv", used)
        # 5.x in-memory SwiGLU: gate_proj / up_proj -> packed w12 (gate first, as Meta's chunk order).
        mp = f"encoder.layer.{i}.mlp"
        for kind in ("weight", "bias"):
            g, u = sd.get(f"{mp}.gate_proj.{kind}"), sd.get(f"{mp}.up_proj.{kind}")
            if g is not None and u is not None:
                out[f"{b}.mlp.w12.{kind}"] = torch.cat([g, u], dim=0)
                used.update({f"{mp}.gate_proj.{kind}", f"{mp}.up_proj.{kind}"})
    simple = [
        (r"^embeddings\.cls_token$", "cls_token"),
        (r"^embeddings\.mask_token$", "mask_token"),
        (r"^embeddings\.register_tokens$", "register_tokens"),
        (r"^embeddings\.position_embeddings$", "pos_embed"),
        (r"^embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
        (r"^encoder\.layer\.(\d+)\.norm([12])\.", r"blocks.\1.norm\2."),
        (r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"blocks.\1.attn.proj."),
        (r"^encoder\.layer\.(\d+)\.attention\.o_proj\.", r"blocks.\1.attn.proj."),
        (r"^encoder\.layer\.(\d+)\.layer_scale([12])\.lambda1$", r"blocks.\1.ls\2.gamma"),
        (r"^encoder\.layer\.(\d+)\.mlp\.(fc[12])\.", r"blocks.\1.mlp.\2."),
        (r"^encoder\.layer\.(\d+)\.mlp\.weights_in\.", r"blocks.\1.mlp.w12."),
        (r"^encoder\.layer\.(\d+)\.mlp\.weights_out\.", r"blocks.\1.mlp.w3."),
        (r"^encoder\.layer\.(\d+)\.mlp\.down_proj\.", r"blocks.\1.mlp.w3."),
        (r"^layernorm\.", "norm."),
    ]
    for k, v in sd.items():
        if k not in used:
            out[_rename(k, simple)] = v
    return out, []


def _from_timm_dinov3(sd: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    out: dict[str, Tensor] = {}
    dropped: list[str] = []
    simple = [
        (r"^reg_token$", "storage_tokens"),
        (r"^blocks\.(\d+)\.gamma_([12])$", r"blocks.\1.ls\2.gamma"),
        (r"^blocks\.(\d+)\.mlp\.fc1_g\.", r"blocks.\1.mlp.w1."),
        (r"^blocks\.(\d+)\.mlp\.fc1_x\.", r"blocks.\1.mlp.w2."),
    ]
    for k, v in sd.items():
        if re.search(r"\.attn\.[qv]_bias$", k) or "rope" in k:
            if "rope" in k:
                dropped.append(k)  # timm's RoPE buffers are derived, never learned
            continue
        m = re.match(r"^blocks\.(\d+)\.mlp\.fc2\.(weight|bias)$", k)
        if m and f"blocks.{m.group(1)}.mlp.fc1_g.weight" in sd:
            out[f"blocks.{m.group(1)}.mlp.w3.{m.group(2)}"] = v
            continue
        out[_rename(k, simple)] = v
    blocks = sorted(
        {int(m.group(1)) for k in sd if (m := re.match(r"^blocks\.(\d+)\.attn\.qkv\.weight$", k))}
    )
    for i in blocks:
        w = sd[f"blocks.{i}.attn.qkv.weight"]
        qb, vb = sd.get(f"blocks.{i}.attn.q_bias"), sd.get(f"blocks.{i}.attn.v_bias")
        if f"blocks.{i}.attn.qkv.bias" in sd:
            continue
        dim = w.shape[0] // 3
        zeros = torch.zeros(dim, dtype=w.dtype)
        # Absent q/v biases mean zero biases in timm (its non-_qkvb DINOv3 models).
        out[f"blocks.{i}.attn.qkv.bias"] = torch.cat(
            [qb if qb is not None else zeros, zeros, vb if vb is not None else zeros]
        )
    return out, dropped


def _from_timm_dinov2(sd: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    out: dict[str, Tensor] = {}
    packed = _timm_packed_swiglu(sd)
    for k, v in sd.items():
        if k == "reg_token":
            out["register_tokens"] = v
        elif k == "pos_embed" and _is_square(v.shape[1]):
            # timm (no_embed_class) stores only patch positions; the class position was added to cls_token.
            out["pos_embed"] = torch.cat([torch.zeros_like(v[:, :1]), v], dim=1)
        elif packed and (m := re.match(r"^blocks\.(\d+)\.mlp\.fc([12])\.(weight|bias)$", k)):
            i, j, kind = m.groups()
            out[f"blocks.{i}.mlp.{'w12' if j == '1' else 'w3'}.{kind}"] = v
        else:
            out[k] = v
    return out, []


def _is_square(n: int) -> bool:
    r = math.isqrt(int(n))
    return r * r == int(n)


def _rename(key: str, rules: list[tuple[str, str]]) -> str:
    for pattern, repl in rules:
        new, count = re.subn(pattern, repl, key)
        if count:
            return new
    return key
