#!/usr/bin/env python3
"""Numerical parity of anydepth's ``dpt_dav2`` / ``dpt_da3`` / ``dualdpt`` decoders with the original heads.

Not part of the package or the test suite. The original code is imported from checkouts given on the command line
(nothing is copied into this repository):

* ``--dav2-dir``: a Depth-Anything-V2 checkout (``depth_anything_v2/dpt.py``, ``depth_anything_v2/util/blocks.py``);
* ``--da3-dir``: a Depth-Anything-3 checkout (``src/depth_anything_3/model/{dpt,dualdpt}.py``,
  ``model/utils/head_utils.py``); DA3's modules import ``addict`` and ``einops`` (install them anywhere on
  ``PYTHONPATH``, e.g. ``pip install --target /tmp/refdeps addict einops``).

For example::

    git clone https://github.com/DepthAnything/Depth-Anything-V2 /tmp/dav2
    git clone https://github.com/ByteDance-Seed/Depth-Anything-3 /tmp/da3
    PYTHONPATH=/tmp/refdeps .venv/bin/python scripts/parity/dav2_da3_heads.py --dav2-dir /tmp/dav2 --da3-dir /tmp/da3

Only the heads' modules are imported. The packages' ``__init__`` files (which pull in the whole DA3 API) are not
executed: the package directories are registered as namespace modules. ``depth_anything_v2/dpt.py`` imports
``cv2``, ``torchvision.transforms.Compose``, its DINOv2 and its image transforms at module level for
``DepthAnythingV2.image2tensor`` / the ViT, which ``DPTHead`` never uses; when they are not installed, empty
placeholder modules stand in for them (printed).

For each configuration (DAv2 S/B/L heads, DA3Mono-Large ``DPT``, DA3-Large ``DualDPT``) it builds the original
head with random weights (fan-in scaled; see ``official_decoders.randomize``), checks the parameter count, maps
the state dict through ``anydepth.models.weights`` (in the real file layout: ``depth_head.*`` / ``model.head.*``),
runs both on the same random tokens at non-square token grids (fp32, CPU) and reports the max abs difference of
every output (DAv2: disparity; DA3: depth, confidence, sky, ray, ray confidence).

``--encoder`` also compares DA3-Large's any-view ViT-L (camera token, q/k norm, RoPE, 2048-d concatenated taps
[11, 15, 19, 23]) with ``da3_vitl14``, its random weights written as ``model.backbone.pretrained.*`` and read by
our encoder loader (layout ``da3``).

``--write-refs DIR`` also writes the small regression files used by ``tests/test_matrix_dav2_da3.py``:
``dav2_dpt_tiny.safetensors``, ``da3_dpt_tiny.safetensors``, ``da3_dualdpt_tiny.safetensors`` (original-named
head state dict, inputs and original outputs of tiny heads) and ``da3_vit_tiny.safetensors`` (a tiny any-view DA3
ViT: weights in the hub layout, image, tapped features).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[2]
try:
    import anydepth  # noqa: F401
except ImportError:  # running from a checkout without an installed package
    sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from official_decoders import randomize  # noqa: E402

from anydepth.models.weights.da3 import convert_da3_state_dict  # noqa: E402
from anydepth.models.weights.dav2 import convert_dav2_state_dict  # noqa: E402
from anydepth.registry import DECODERS  # noqa: E402
from anydepth.types import EncoderOutput  # noqa: E402

PATCH = 14
DAV2_HEADS = {
    "S": (384, 64, [48, 96, 192, 384], 2_728_513),
    "B": (768, 128, [96, 192, 384, 768], 10_890_305),
    "L": (1024, 256, [256, 512, 1024, 1024], 30_947_009),
}
DA3_MONO_PARAMS = 29_803_778
DA3_DUAL_PARAMS = 47_229_246


def _namespace(name: str, path: Path) -> None:
    if not path.is_dir():
        raise SystemExit(f"{path} not found (expected a package directory of the original code)")
    mod = types.ModuleType(name)
    mod.__path__ = [os.fspath(path)]
    sys.modules[name] = mod


def _placeholder(name: str, **attrs: Any) -> None:
    try:
        importlib.import_module(name)
    except ImportError:
        mod = types.ModuleType(name)
        for k, v in attrs.items():
            setattr(mod, k, v)
        sys.modules[name] = mod
        print(f"  placeholder module {name} (unused by the heads)")


def import_originals(dav2_dir: Path, da3_dir: Path) -> dict[str, Any]:
    """``{"DPTHead": DAv2 DPTHead, "DPT": DA3 DPT, "DualDPT": DA3 DualDPT}`` from the checkouts."""
    _namespace("depth_anything_v2", dav2_dir / "depth_anything_v2")
    _namespace("depth_anything_v2.util", dav2_dir / "depth_anything_v2" / "util")
    _placeholder("cv2")
    _placeholder("torchvision")
    _placeholder("torchvision.transforms", Compose=None)
    for name, attrs in (
        ("depth_anything_v2.dinov2", {"DINOv2": None}),
        ("depth_anything_v2.util.transform", {"Resize": None, "NormalizeImage": None, "PrepareForNet": None}),
    ):
        mod = types.ModuleType(name)
        for k, v in attrs.items():
            setattr(mod, k, v)
        sys.modules[name] = mod
        print(f"  placeholder module {name} (the DINOv2 ViT / image transforms; unused by DPTHead)")
    dav2 = importlib.import_module("depth_anything_v2.dpt")
    src = da3_dir / "src" / "depth_anything_3"
    _namespace("depth_anything_3", src)
    _namespace("depth_anything_3.model", src / "model")
    _namespace("depth_anything_3.model.utils", src / "model" / "utils")
    dpt = importlib.import_module("depth_anything_3.model.dpt")
    dual = importlib.import_module("depth_anything_3.model.dualdpt")
    return {"DPTHead": dav2.DPTHead, "DPT": dpt.DPT, "DualDPT": dual.DualDPT}


def _tokens(
    c: int, grid: tuple[int, int], batch: int, seed: int
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    n = grid[0] * grid[1]
    return [torch.randn(batch, n, c, generator=g) for _ in range(4)], [
        torch.randn(batch, c, generator=g) for _ in range(4)
    ]


def _enc(tokens: list[torch.Tensor], cls: list[torch.Tensor], grid: tuple[int, int]) -> EncoderOutput:
    feats = tuple(t.transpose(1, 2).reshape(t.shape[0], t.shape[2], *grid) for t in tokens)
    return EncoderOutput(feats, tuple(cls), PATCH)


def run_original(kind: str, head: nn.Module, tokens, cls, grid) -> dict[str, torch.Tensor]:
    """Original outputs as ``[B,C,h,w]`` tensors keyed like ``forward_outputs``."""
    h, w = grid[0] * PATCH, grid[1] * PATCH
    with torch.no_grad():
        if kind == "dav2":
            out = head(list(zip(tokens, cls, strict=True)), grid[0], grid[1])
            return {"depth": torch.relu(out)}  # DepthAnythingV2.forward: relu(head(...))
        # DA3 heads take [B, S, N, C] views (S = 1) and return [B, S, ...] maps
        res = head(
            [(t[:, None], c[:, None]) for t, c in zip(tokens, cls, strict=True)], h, w, patch_start_idx=0
        )
    out = {}
    for k, v in res.items():
        v = v[:, 0]
        if k == "ray":
            v = v.permute(0, 3, 1, 2)  # [B,h,w,6] -> [B,6,h,w]
        elif v.ndim == 3:
            v = v[:, None]
        out[k] = v
    return out


def _file_layout(kind: str, head_sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The head inside the real file layout (plus a minimal encoder entry where the converter needs one)."""
    if kind == "dav2":
        return {f"depth_head.{k}": v for k, v in head_sd.items()}
    sd = {f"model.head.{k}": v for k, v in head_sd.items()}
    sd["model.backbone.pretrained.cls_token"] = torch.zeros(1, 1, 1024)
    return sd


def run_ours(kind: str, head: nn.Module, tokens, cls, grid) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = {k: v.clone() for k, v in head.state_dict().items()}
    if kind == "dav2":
        dec_sd, _, info = convert_dav2_state_dict(_file_layout(kind, sd))
        name = "dpt_dav2"
    else:
        dec_sd, _, info = convert_da3_state_dict(_file_layout(kind, sd))
        name = info["decoder"]
    ours = DECODERS.get(name)(info["in_dims"], **info["decoder_kwargs"])
    ours.load_state_dict(dec_sd, strict=True)
    ours.eval()
    with torch.no_grad():
        out = ours.forward_outputs(_enc(tokens, cls, grid), (grid[0] * PATCH, grid[1] * PATCH))
        depth = ours(_enc(tokens, cls, grid), (grid[0] * PATCH, grid[1] * PATCH))
    assert torch.equal(depth, out["depth"]), "forward and forward_outputs disagree"
    return out, {"decoder": name, **info}


def _scale_logits(head: nn.Module, factor: float) -> None:
    """Shrink the last 1x1 convs so that DA3's exp outputs stay O(1) (absolute differences stay meaningful)."""
    with torch.no_grad():
        for name, m in head.named_modules():
            if (
                isinstance(m, nn.Conv2d)
                and m.kernel_size == (1, 1)
                and m.out_channels <= 7
                and "output_conv2" in name
            ):
                m.weight.mul_(factor)
                if m.bias is not None:
                    m.bias.mul_(factor)


def build(kind: str, originals: dict[str, Any], size: str | None = None, tiny: bool = False) -> nn.Module:
    torch.manual_seed(0)
    if kind == "dav2":
        c, features, oc, _ = DAV2_HEADS[size or "S"]
        if tiny:
            c, features, oc = 32, 8, [4, 8, 8, 16]
        return originals["DPTHead"](c, features, False, out_channels=oc, use_clstoken=False)
    dims = {"dpt": 1024, "dualdpt": 2048}[kind]
    kw: dict[str, Any] = {"features": 256, "out_channels": [256, 512, 1024, 1024]}
    if tiny:
        dims, kw = {"dpt": 32, "dualdpt": 64}[kind], {"features": 8, "out_channels": [4, 8, 8, 16]}
    if kind == "dpt":
        return originals["DPT"](dims, output_dim=1, **kw)
    return originals["DualDPT"](dims, output_dim=2, **kw)


def parity(originals: dict[str, Any], grids: list[tuple[int, int]], batch: int) -> list[dict[str, Any]]:
    cases: list[tuple[str, str, int]] = [("dav2", s, v[3]) for s, v in DAV2_HEADS.items()]
    cases += [("dpt", "DA3Mono-L", DA3_MONO_PARAMS), ("dualdpt", "DA3-L", DA3_DUAL_PARAMS)]
    rows = []
    for kind, size, want_params in cases:
        head = build(kind, originals, size)
        randomize(head, seed=17)
        _scale_logits(head, 0.1)
        n_params = sum(p.numel() for p in head.parameters())
        if n_params != want_params:
            raise SystemExit(
                f"{kind} {size}: original head has {n_params:,} parameters, expected {want_params:,}"
            )
        c = head.projects[0].in_channels
        for grid in grids:
            tokens, cls = _tokens(c, grid, batch, seed=grid[0] * 100 + grid[1])
            ref = run_original(kind if kind == "dav2" else "da3", head, tokens, cls, grid)
            ours, info = run_ours("dav2" if kind == "dav2" else "da3", head, tokens, cls, grid)
            if set(ref) != set(ours):
                raise SystemExit(f"{kind} {size}: outputs {sorted(ours)} != original {sorted(ref)}")
            n_ours = sum(
                p.numel()
                for p in DECODERS.get(info["decoder"])(info["in_dims"], **info["decoder_kwargs"]).parameters()
            )
            for key in sorted(ref):
                if ref[key].shape != ours[key].shape:
                    raise SystemExit(
                        f"{kind} {size} {key}: shape {tuple(ours[key].shape)} != {tuple(ref[key].shape)}"
                    )
                row = {
                    "head": info["decoder"],
                    "config": size,
                    "params_original": n_params,
                    "params_ours": n_ours,
                    "grid": f"{grid[0]}x{grid[1]}",
                    "output": key,
                    "shape": "x".join(str(s) for s in ref[key].shape[1:]),
                    "max_abs_diff": float((ref[key] - ours[key]).abs().max()),
                    "ref_absmax": float(ref[key].abs().max()),
                }
                rows.append(row)
                print(
                    f"{row['head']:8s} {size:9s} params {n_params:>11,d} (ours {n_ours:>11,d}) grid {row['grid']:>5s} "
                    f"{key:10s} {row['shape']:>12s}  max|diff| {row['max_abs_diff']:.3e}  (|ref|max {row['ref_absmax']:.3f})",
                    flush=True,
                )
    return rows


def import_da3_vit(da3_dir: Path) -> Any:
    """DA3's ``DinoVisionTransformer`` (``model/dinov2/vision_transformer.py``) from the checkout."""
    src = da3_dir / "src" / "depth_anything_3"
    _namespace("depth_anything_3.utils", src / "utils")
    _namespace("depth_anything_3.model.dinov2", src / "model" / "dinov2")
    return importlib.import_module("depth_anything_3.model.dinov2.vision_transformer").DinoVisionTransformer


def _randomize_vit(vit: nn.Module, seed: int) -> None:
    """Random weights with non-trivial biases, LayerScale and q/k norms (fan-in scaled matrices)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in vit.named_parameters():
            if p.dim() > 1 and "token" not in name and "pos_embed" not in name:
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
            elif name.endswith(
                ("norm1.weight", "norm2.weight", "norm.weight", "q_norm.weight", "k_norm.weight")
            ):
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
    vit.eval()


def encoder_parity(da3_dir: Path, hw: tuple[int, int], tiny: bool = False) -> tuple[float, dict[str, Any]]:
    """DA3-Large's ViT (any-view: camera token, q/k norm, RoPE from block 8, 2C concatenated taps) vs ours.

    Both get the same random weights (written as ``model.backbone.pretrained.*`` and loaded through our encoder
    loader, layout ``da3``) and one image (one view); compared: the tapped features with DA3's normalisation.
    """
    from anydepth.models.encoders.base import EncoderWrapper
    from anydepth.models.weights.loading import load_backbone_weights

    vit_cls = import_da3_vit(da3_dir)
    if tiny:
        kw = dict(embed_dim=32, depth=4, num_heads=2, img_size=112, alt_start=2, qknorm_start=2, rope_start=2)
        ours_name, taps = "da3_test", (0, 1, 2, 3)
    else:
        kw = dict(
            embed_dim=1024, depth=24, num_heads=16, img_size=518, alt_start=8, qknorm_start=8, rope_start=8
        )
        ours_name, taps = "da3_vitl14", (11, 15, 19, 23)
    torch.manual_seed(0)
    ref = vit_cls(patch_size=14, cat_token=True, **kw)
    _randomize_vit(ref, seed=5)
    sd = {f"model.backbone.pretrained.{k}": v.clone() for k, v in ref.state_dict().items()}
    from anydepth.registry import ENCODERS

    backbone = ENCODERS.get(ours_name)()
    load_backbone_weights(backbone, sd)
    ours = EncoderWrapper(backbone, taps, use_backbone_norm=True)
    g = torch.Generator().manual_seed(9)
    x = torch.randn(1, 3, *hw, generator=g)
    with torch.no_grad():
        outs, _ = ref.get_intermediate_layers(x[:, None], list(taps))
        enc = ours(x)
    h, w = hw[0] // 14, hw[1] // 14
    diffs = []
    for (feat, _cam), mine in zip(outs, enc.features, strict=True):
        theirs = feat[:, 0].reshape(1, h, w, -1).permute(0, 3, 1, 2)
        diffs.append(float((theirs - mine).abs().max()))
    return max(diffs), {
        "x": x,
        "features": [f[0][:, 0] for f in outs],
        "state_dict": ref.state_dict(),
        "kw": kw,
    }


def write_refs(originals: dict[str, Any], out_dir: Path, da3_dir: Path) -> None:
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    specs = {
        "dav2_dpt_tiny": ("dav2", (3, 5), {"in_channels": 32, "features": 8, "out_channels": [4, 8, 8, 16]}),
        "da3_dpt_tiny": (
            "dpt",
            (3, 5),
            {"dim_in": 32, "output_dim": 1, "features": 8, "out_channels": [4, 8, 8, 16]},
        ),
        "da3_dualdpt_tiny": (
            "dualdpt",
            (4, 3),
            {"dim_in": 64, "output_dim": 2, "features": 8, "out_channels": [4, 8, 8, 16]},
        ),
    }
    for name, (kind, grid, config) in specs.items():
        head = build(kind, originals, tiny=True)
        randomize(head, seed=123)
        _scale_logits(head, 0.1)
        c = head.projects[0].in_channels
        tokens, cls = _tokens(c, grid, 1, seed=321)
        ref = run_original("dav2" if kind == "dav2" else "da3", head, tokens, cls, grid)
        enc = _enc(tokens, cls, grid)
        # safetensors refuses shared storage (Dual-DPT's ray LayerNorm): clone every tensor
        tensors = {f"state_dict/{k}": v.detach().clone().contiguous() for k, v in head.state_dict().items()}
        tensors.update({f"input/features.{i}": f.contiguous() for i, f in enumerate(enc.features)})
        tensors.update({f"input/cls.{i}": t.contiguous() for i, t in enumerate(enc.cls_tokens)})
        tensors.update({f"output/{k}": v.contiguous() for k, v in ref.items()})
        repo = "DepthAnything/Depth-Anything-V2" if kind == "dav2" else "ByteDance-Seed/Depth-Anything-3"
        cls_name = {
            "dav2": "depth_anything_v2/dpt.py:DPTHead",
            "dpt": "model/dpt.py:DPT",
            "dualdpt": "model/dualdpt.py:DualDPT",
        }
        meta = {
            "original_repo": f"github.com/{repo}",
            "original_class": cls_name[kind],
            "original_kwargs": json.dumps(config),
            "token_grid": json.dumps(list(grid)),
            "patch_size": str(PATCH),
            "torch": torch.__version__,
            "generator": "scripts/parity/dav2_da3_heads.py --write-refs",
        }
        path = out_dir / f"{name}.safetensors"
        tmp = path.with_suffix(".tmp")
        save_file(tensors, os.fspath(tmp), metadata=meta)
        os.replace(tmp, path)
        print(f"wrote {path} ({path.stat().st_size / 1024:.1f} KiB, outputs {sorted(ref)})")
    # DA3 any-view ViT (tiny: C 32, 4 blocks, camera token / q-k norm / RoPE from block 2, 2C taps)
    d, enc = encoder_parity(da3_dir, (56, 84), tiny=True)
    assert d == 0.0, d
    tensors = {
        f"state_dict/model.backbone.pretrained.{k}": v.detach().clone().contiguous()
        for k, v in enc["state_dict"].items()
    }
    tensors["input/image"] = enc["x"].contiguous()
    tensors.update({f"output/features.{i}": f.contiguous() for i, f in enumerate(enc["features"])})
    meta = {
        "original_repo": "github.com/ByteDance-Seed/Depth-Anything-3",
        "original_class": "model/dinov2/vision_transformer.py:DinoVisionTransformer",
        "original_kwargs": json.dumps({**enc["kw"], "patch_size": 14, "cat_token": True}),
        "taps": json.dumps([0, 1, 2, 3]),
        "note": "input/image is the normalised image [1,3,H,W]; output/features.i are DA3's tapped tokens [1,N,2C]",
        "torch": torch.__version__,
        "generator": "scripts/parity/dav2_da3_heads.py --write-refs",
    }
    path = out_dir / "da3_vit_tiny.safetensors"
    tmp = path.with_suffix(".tmp")
    save_file(tensors, os.fspath(tmp), metadata=meta)
    os.replace(tmp, path)
    print(f"wrote {path} ({path.stat().st_size / 1024:.1f} KiB)")


def _rev(path: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "-C", os.fspath(path), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        )
        return out.stdout.strip() or "?"
    except OSError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dav2-dir", required=True, type=Path, help="Depth-Anything-V2 checkout")
    ap.add_argument("--da3-dir", required=True, type=Path, help="Depth-Anything-3 checkout")
    ap.add_argument(
        "--grid",
        nargs=2,
        type=int,
        action="append",
        metavar=("H", "W"),
        help="token grid(s) (default: 6 9 and 5 8)",
    )
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--tol", type=float, default=1e-5, help="max abs difference allowed (default 1e-5)")
    ap.add_argument("--write-refs", type=Path, default=None, help="also write the tiny regression files here")
    ap.add_argument("--json", type=Path, default=None, help="write the result rows as JSON")
    ap.add_argument(
        "--encoder", action="store_true", help="also compare DA3-Large's ViT-L (any-view) with ours"
    )
    args = ap.parse_args(argv)

    print(
        f"torch {torch.__version__}; anydepth {_rev(REPO)}; DAv2 {_rev(args.dav2_dir)}; DA3 {_rev(args.da3_dir)}"
    )
    originals = import_originals(args.dav2_dir, args.da3_dir)
    grids = [(g[0], g[1]) for g in args.grid] if args.grid else [(6, 9), (5, 8)]
    rows = parity(originals, grids, args.batch)
    if args.encoder:
        for hw in ((56, 84), (70, 42)):
            d, _ = encoder_parity(args.da3_dir, hw)
            rows.append({"head": "encoder da3_vitl14", "grid": f"{hw[0]}x{hw[1]}", "max_abs_diff": d})
            print(
                f"encoder  da3_vitl14 (DA3-Large ViT-L) input {hw[0]}x{hw[1]}  taps [11,15,19,23] max|diff| {d:.3e}"
            )
    worst = max(r["max_abs_diff"] for r in rows)
    print(f"worst max abs difference: {worst:.3e} (tolerance {args.tol:g})")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    if args.write_refs:
        write_refs(originals, args.write_refs, args.da3_dir)
    return 0 if worst <= args.tol else 1


if __name__ == "__main__":
    raise SystemExit(main())
