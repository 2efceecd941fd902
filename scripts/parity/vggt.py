#!/usr/bin/env python3
"""Numerical parity of anydepth's VGGT encoder (``vggt_*``) and head (``dpt_vggt``) with VGGT's own code.

Not part of the package or the test suite. VGGT's code (facebookresearch/vggt at commit 44b3afb; the fork
``chenxiex/vggt`` contains it) is imported from a directory given on the command line that holds its ``vggt/``
package, extracted for example with

    git --git-dir /work/.mirror/chenxiex+vggt/repo archive 44b3afb vggt | tar -x -C /tmp/vggt_ref
    .venv/bin/python scripts/parity/vggt.py --vggt-dir /tmp/vggt_ref [--full]

Each check builds VGGT's ``Aggregator`` and ``DPTHead`` with random weights (norm weights, biases, LayerScale
gammas, camera/register tokens randomised too), writes their ``state_dict()`` in ``model.pt``'s layout
(``aggregator.*`` + ``depth_head.*``), loads that into an anydepth ``DepthModel`` with
``anydepth.models.weights.vggt.load_vggt`` and compares, at a non-square size and a batch of 2 single-view images:
every aggregator output (``aggregated_tokens_list``), the depth and the confidence. ``--full`` also checks the
VGGT-1B configuration itself (about 8 GB of RAM and a few minutes on CPU); the tiny check always runs.

``--write-refs DIR`` writes ``vggt_tiny.safetensors`` for ``tests/test_matrix_vggt.py``: the tiny model's state
dict in VGGT's names (``state_dict/*``), the input (``input/image``) and VGGT's outputs (``output/*``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[2]
try:
    import anydepth  # noqa: F401
except ImportError:  # running from a checkout without an installed package
    sys.path.insert(0, str(REPO / "src"))

from anydepth.models.config import ModelConfig  # noqa: E402
from anydepth.models.encoders.vggt import VGGT_CONFIGS  # noqa: E402
from anydepth.models.encoders.vit_layers import apply_overrides  # noqa: E402
from anydepth.models.factory import get_model_config  # noqa: E402
from anydepth.models.weights.vggt import VGGT_1B, load_vggt  # noqa: E402

VGGT_COMMIT = "44b3afbd1869d8bde4894dd8ea1e293112dd5eba"
TINY_PRESET = "dpt_vggt_test"  # the tiny configuration of the regression file
SIZE = (42, 70)  # 3 x 5 patches: non-square, odd grid


def randomize(module: nn.Module, seed: int, matrices: bool = True) -> None:
    """Random weights: fan-in scaled matrices, norm weights ~ 1 + 0.2 N, other vectors ~ 0.1 N."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith(("camera_token", "register_token", "register_tokens", "cls_token", "pos_embed")):
                p.copy_(torch.randn(p.shape, generator=g))
            elif p.dim() > 1:
                if matrices:
                    p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel()))
            elif name.endswith("gamma"):
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
            elif name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    module.eval()


def reference_modules(cfg: ModelConfig) -> tuple[nn.Module, nn.Module]:
    """VGGT's Aggregator and DPTHead for an anydepth ``ModelConfig`` (VGGT-1B or tiny)."""
    from vggt.heads.dpt_head import DPTHead
    from vggt.layers import MemEffAttention, NestedTensorBlock
    from vggt.layers.vision_transformer import DinoVisionTransformer
    from vggt.models.aggregator import Aggregator

    e = apply_overrides(VGGT_CONFIGS[cfg.encoder], cfg.encoder_kwargs, cfg.encoder)
    if e == VGGT_CONFIGS["vggt_1b"]:
        agg = Aggregator()  # VGGT-1B: the original constructor (VGGT() passes only these defaults)
    else:
        agg = Aggregator(
            img_size=e.img_size,
            embed_dim=e.embed_dim,
            depth=e.depth,
            num_heads=e.num_heads,
            patch_embed="conv",
        )
        # the DINOv2 ViT VGGT builds for "dinov2_vit*14_reg", at a tiny size
        agg.patch_embed = DinoVisionTransformer(
            img_size=e.img_size, patch_size=14, embed_dim=e.embed_dim, depth=e.patch_embed_depth,
            num_heads=e.num_heads, mlp_ratio=4, block_fn=partial(NestedTensorBlock, attn_class=MemEffAttention),
            num_register_tokens=e.num_register_tokens, interpolate_antialias=True, interpolate_offset=0.0,
            block_chunks=0, init_values=1.0,
        )  # fmt: skip
    d = dict(cfg.decoder_kwargs)
    kwargs: dict[str, Any] = {"intermediate_layer_idx": list(cfg.layer_indices)}
    if "features" in d:
        kwargs.update(features=d["features"], out_channels=list(d["out_channels"]))
    head = DPTHead(dim_in=2 * e.embed_dim, output_dim=2, activation="exp", conf_activation="expp1", **kwargs)
    return agg, head


def run_reference(agg: nn.Module, head: nn.Module, images: torch.Tensor) -> dict[str, Any]:
    with torch.no_grad():
        tokens, start = agg(images[:, None])  # [B,S=1,3,H,W]
        depth, conf = head(tokens, images=images[:, None], patch_start_idx=start)
    return {
        "tokens": [t[:, 0] for t in tokens],  # [B,N,2C] each
        "depth": depth[:, 0].permute(0, 3, 1, 2),  # [B,1,H,W]
        "conf": conf[:, 0, None],  # [B,1,H,W]
    }


def run_ours(model: nn.Module, images: torch.Tensor) -> dict[str, Any]:
    with torch.no_grad():
        x = (images - model.image_mean) / model.image_std
        tokens = model.encoder.backbone(x)
        out = model.decoder.forward_outputs(model.encoder(x), tuple(images.shape[-2:]))
        depth = model(images)
    assert torch.equal(depth, out["depth"])
    return {"tokens": tokens, "depth": depth, "conf": out["depth_conf"]}


def compare(cfg: ModelConfig, size: tuple[int, int], seed: int, matrices: bool = True) -> dict[str, Any]:
    torch.manual_seed(seed)
    agg, head = reference_modules(cfg)
    randomize(agg, seed, matrices)
    randomize(head, seed + 1)
    sd = {**{f"aggregator.{k}": v for k, v in agg.state_dict().items()}}
    sd.update({f"depth_head.{k}": v for k, v in head.state_dict().items()})
    images = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(seed + 2))
    ref = run_reference(agg, head, images)
    model, report = load_vggt(sd, config=cfg)
    ours = run_ours(model, images)
    tok = max(float((a - b).abs().max()) for a, b in zip(ours["tokens"], ref["tokens"], strict=True))
    return {
        "config": cfg.encoder,
        "size": list(size),
        "params": {
            "aggregator": sum(p.numel() for p in agg.parameters()),
            "depth_head": sum(p.numel() for p in head.parameters()),
            "ours_encoder": sum(p.numel() for p in model.encoder.parameters()),
            "ours_decoder": sum(p.numel() for p in model.decoder.parameters()),
        },
        "tensors_loaded": report["loaded"],
        "max_abs_tokens": tok,
        "max_abs_depth": float((ours["depth"] - ref["depth"]).abs().max()),
        "max_rel_depth": float(((ours["depth"] - ref["depth"]).abs() / ref["depth"].abs()).max()),
        "max_abs_conf": float((ours["conf"] - ref["conf"]).abs().max()),
        "depth_range": [float(ref["depth"].min()), float(ref["depth"].max())],
        "_sd": sd,
        "_images": images,
        "_ref": ref,
    }


def tiny_config() -> ModelConfig:
    return get_model_config(TINY_PRESET).replace(output_space=VGGT_1B.output_space, name="vggt_parity_tiny")


def write_refs(res: dict[str, Any], out_dir: Path) -> Path:
    from safetensors.torch import save_file

    tensors = {f"state_dict/{k}": v.contiguous() for k, v in res["_sd"].items()}
    tensors["input/image"] = res["_images"].contiguous()
    tensors["output/depth"] = res["_ref"]["depth"].contiguous()
    tensors["output/conf"] = res["_ref"]["conf"].contiguous()
    for i, t in enumerate(res["_ref"]["tokens"]):
        tensors[f"output/tokens.{i}"] = t.contiguous()
    meta = {"vggt_commit": VGGT_COMMIT, "preset": TINY_PRESET, "torch": torch.__version__}
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "vggt_tiny.safetensors"
    save_file(tensors, str(path), metadata=meta)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vggt-dir", required=True, type=Path, help="directory holding VGGT's vggt/ package")
    ap.add_argument("--full", action="store_true", help="also check the VGGT-1B configuration (~8 GB RAM)")
    ap.add_argument("--write-refs", type=Path, help="write vggt_tiny.safetensors to this directory")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = ap.parse_args(argv)
    if not (args.vggt_dir / "vggt" / "models" / "aggregator.py").is_file():
        print(f"error: {args.vggt_dir} does not hold vggt/models/aggregator.py", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    # VGGT's vggt/ has no __init__.py (a namespace package): drop this script's directory, whose vggt.py would win
    here = Path(__file__).resolve().parent
    sys.path[:] = [str(args.vggt_dir)] + [p for p in sys.path if Path(p or ".").resolve() != here]
    results = [compare(tiny_config(), SIZE, seed=0)]
    if args.write_refs:
        print(f"wrote {write_refs(results[0], args.write_refs)}")
    if args.full:
        # VGGT's default init for the matrices (randomising 1.2 B entries again only costs time)
        results.append(compare(VGGT_1B, (112, 154), seed=1, matrices=False))
    for r in results:
        print(json.dumps({k: v for k, v in r.items() if not k.startswith("_")}, indent=1))
    worst = max(max(r["max_abs_tokens"], r["max_abs_depth"], r["max_abs_conf"]) for r in results)
    print(f"worst max abs difference: {worst:.3g} ({'OK' if worst <= 1e-5 else 'ABOVE 1e-5'})")
    return 0 if worst <= 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
