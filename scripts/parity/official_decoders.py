#!/usr/bin/env python3
"""Numerical parity of anydepth's SDT/DPT decoders with the official AnyDepth heads.

Not part of the package or the test suite. The official code is imported from a directory given on the
command line (top-level modules ``sdt_head.py`` and ``dpt_head.py``), extracted for example from a clone of
https://github.com/AIGeeksGroup/AnyDepth (``OFFICIAL_REPO``: its path, bare or not) with

    mkdir -p /tmp/official
    for f in sdt_head dpt_head utils; do
        git -C "$OFFICIAL_REPO" show HEAD:model/$f.py > /tmp/official/$f.py
    done
    .venv/bin/python scripts/parity/official_decoders.py --official-dir /tmp/official

For each encoder width (S/B/L) it builds official heads with random weights (BatchNorm running statistics
randomised too, DySample offsets large enough to move samples by about a pixel), maps their
``state_dict()`` with ``anydepth.models.official``, runs both on the same random features at non-square
token grids and reports the max abs difference of the raw outputs and of the activated outputs
(official ``FeaturesToDepth``: ReLU + 0.001).

``--write-refs DIR`` also writes the small regression files used by ``tests/test_official_reference.py``:
``official_sdt_tiny.safetensors`` and ``official_dpt_tiny.safetensors`` (official-named state dict, inputs and
official raw outputs of tiny heads).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[2]
try:
    import anydepth  # noqa: F401
except ImportError:  # running from a checkout without an installed package
    sys.path.insert(0, str(REPO / "src"))

from anydepth.models.decoders import DPTDecoder, SDTDecoder  # noqa: E402
from anydepth.models.official import OFFICIAL_COMMIT, convert_official_state_dict  # noqa: E402
from anydepth.types import EncoderOutput  # noqa: E402

WIDTHS = {"S": 384, "B": 768, "L": 1024}


def randomize(module: nn.Module, seed: int) -> None:
    """Fan-in scaled random weights everywhere, random BN statistics, ~1 px DySample offsets."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() > 1:
                fan_in = p[0].numel()
                std = math.sqrt(2.0 / fan_in)
                if ".offset." in name or name.endswith("offset.weight"):
                    std = 4.0 / math.sqrt(fan_in)  # offsets of order one input pixel
                p.copy_(torch.randn(p.shape, generator=g) * std)
            elif name.endswith("layer_weights"):
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(1.0 + 0.1 * torch.randn(m.weight.shape, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
                m.num_batches_tracked.fill_(7)
    module.eval()


def make_inputs(
    c: int, grid: tuple[int, int], batch: int, seed: int
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    feats = [torch.randn(batch, c, *grid, generator=g) for _ in range(4)]
    cls = [torch.randn(batch, c, generator=g) for _ in range(4)]
    return feats, cls


def run_pair(official: nn.Module, feats, cls) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    """Official raw output, our raw output, our activated output, conversion info."""
    dec_sd, enc_sd, info = convert_official_state_dict(official.state_dict())
    assert enc_sd is None
    cls_ = SDTDecoder if info["decoder"] == "sdt" else DPTDecoder
    ours = cls_(info["in_dims"], **info["decoder_kwargs"])
    ours.load_state_dict(dec_sd, strict=True)
    ours.eval()
    enc = EncoderOutput(tuple(feats), tuple(cls), 16)
    with torch.no_grad():
        ref = official(list(zip(feats, cls, strict=True)))
        raw = ours.forward_raw(enc)
        act = ours(enc, tuple(raw.shape[-2:]))
    return ref, raw, act, info


def parity(mods, grids: list[tuple[int, int]], batch: int) -> list[dict]:
    rows = []
    for size, c in WIDTHS.items():
        for kind in ("sdt", "dpt"):
            if kind == "sdt":
                official = mods["sdt"].SDTHead(
                    [c] * 4, fusion_channels=256, n_output_channels=1, use_cls_token=True
                )
            else:
                official = mods["dpt"].DPTHead(
                    in_channels=[c] * 4,
                    channels=512,
                    post_process_channels=[c] * 4,
                    readout_type="project",
                    n_output_channels=1,
                    use_batchnorm=True,
                )
            randomize(official, seed=c)
            n_params = sum(p.numel() for p in official.parameters())
            for grid in grids:
                feats, cls = make_inputs(c, grid, batch, seed=c + grid[0] * 100 + grid[1])
                ref, raw, act, info = run_pair(official, feats, cls)
                if ref.shape != raw.shape:
                    raise SystemExit(
                        f"{kind} {size}: shape {tuple(raw.shape)} != official {tuple(ref.shape)}"
                    )
                ref_act = torch.relu(ref) + 0.001
                rows.append(
                    {
                        "decoder": kind,
                        "size": size,
                        "C": c,
                        "params": n_params,
                        "grid": f"{grid[0]}x{grid[1]}",
                        "out": "x".join(str(s) for s in ref.shape[-2:]),
                        "max_abs_raw": float((ref - raw).abs().max()),
                        "max_abs_out": float((ref_act - act).abs().max()),
                        "ref_absmax": float(ref.abs().max()),
                    }
                )
                print(
                    f"{kind.upper():3s} {size} C={c:4d} params={n_params:>11,d} grid={rows[-1]['grid']:>5s} "
                    f"out={rows[-1]['out']:>8s}  max|diff| raw={rows[-1]['max_abs_raw']:.3e} "
                    f"activated={rows[-1]['max_abs_out']:.3e}  (|ref|max={rows[-1]['ref_absmax']:.3f})",
                    flush=True,
                )
    return rows


def write_refs(mods, out_dir: Path) -> None:
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    specs = {
        "sdt": dict(
            ctor=lambda: mods["sdt"].SDTHead(
                [32] * 4, fusion_channels=16, n_output_channels=1, use_cls_token=True
            ),
            grid=(4, 6),
            config={
                "in_channels": [32] * 4,
                "fusion_channels": 16,
                "n_output_channels": 1,
                "use_cls_token": True,
            },
        ),
        "dpt": dict(
            ctor=lambda: mods["dpt"].DPTHead(
                in_channels=[32] * 4,
                channels=8,
                post_process_channels=[8, 8, 8, 8],
                readout_type="project",
                n_output_channels=1,
                use_batchnorm=True,
            ),
            grid=(3, 5),
            config={
                "in_channels": [32] * 4,
                "channels": 8,
                "post_process_channels": [8] * 4,
                "readout_type": "project",
                "n_output_channels": 1,
                "use_batchnorm": True,
            },
        ),
    }
    for kind, spec in specs.items():
        torch.manual_seed(0)
        official = spec["ctor"]()
        randomize(official, seed=123)
        feats, cls = make_inputs(32, spec["grid"], 1, seed=321)
        with torch.no_grad():
            raw = official(list(zip(feats, cls, strict=True)))
        tensors = {f"state_dict/{k}": v.contiguous() for k, v in official.state_dict().items()}
        tensors.update({f"input/features.{i}": f for i, f in enumerate(feats)})
        tensors.update({f"input/cls.{i}": t for i, t in enumerate(cls)})
        tensors["output/raw"] = raw.contiguous()
        meta = {
            "official_repo": "github.com/AIGeeksGroup/AnyDepth",
            "official_commit": OFFICIAL_COMMIT,
            "official_class": "SDTHead" if kind == "sdt" else "DPTHead",
            "official_kwargs": json.dumps(spec["config"]),
            "token_grid": json.dumps(list(spec["grid"])),
            "patch_size": "16",
            "torch": torch.__version__,
            "generator": "scripts/parity/official_decoders.py --write-refs",
        }
        path = out_dir / f"official_{kind}_tiny.safetensors"
        tmp = path.with_suffix(".tmp")
        save_file(tensors, os.fspath(tmp), metadata=meta)
        os.replace(tmp, path)
        print(f"wrote {path} ({path.stat().st_size / 1024:.1f} KiB, output {tuple(raw.shape)})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--official-dir", required=True, type=Path, help="directory holding sdt_head.py, dpt_head.py"
    )
    ap.add_argument(
        "--grid",
        nargs=2,
        type=int,
        action="append",
        metavar=("H", "W"),
        help="token grid(s) to test (default: 6 9 and 5 8)",
    )
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--tol", type=float, default=1e-4, help="max abs difference allowed (default 1e-4)")
    ap.add_argument("--write-refs", type=Path, default=None, help="also write the tiny regression files here")
    ap.add_argument("--json", type=Path, default=None, help="write the result rows as JSON")
    args = ap.parse_args(argv)

    if not (args.official_dir / "sdt_head.py").is_file():
        raise SystemExit(f"{args.official_dir}/sdt_head.py not found")
    sys.path.insert(0, os.fspath(args.official_dir.resolve()))
    mods = {"sdt": importlib.import_module("sdt_head"), "dpt": importlib.import_module("dpt_head")}
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print(
        f"torch {torch.__version__}; official code from {args.official_dir} (expected commit {OFFICIAL_COMMIT[:7]})"
    )
    try:
        rev = subprocess.run(
            ["git", "-C", os.fspath(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        print(f"anydepth checkout {rev or '?'}")
    except OSError:
        pass
    grids = [tuple(g) for g in args.grid] if args.grid else [(6, 9), (5, 8)]
    rows = parity(mods, grids, args.batch)
    worst = max(max(r["max_abs_raw"], r["max_abs_out"]) for r in rows)
    print(f"worst max abs difference: {worst:.3e} (tolerance {args.tol:g})")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    if args.write_refs:
        write_refs(mods, args.write_refs)
    return 0 if worst <= args.tol else 1


if __name__ == "__main__":
    raise SystemExit(main())
