#!/usr/bin/env python
"""Time the *official* AnyDepth ``SDTHead`` against this package's eager and fast SDT decoders, interleaved.

The official code is not part of the project and is never imported by the package. Extract it first from
a clone of https://github.com/AIGeeksGroup/AnyDepth (``OFFICIAL_REPO``: its path, bare or not)::

    mkdir -p /tmp/official
    git -C "$OFFICIAL_REPO" show HEAD:model/sdt_head.py > /tmp/official/sdt_head.py

then run::

    .venv/bin/python scripts/bench_official.py --official /tmp/official/sdt_head.py --resolutions 256,512

What it does, per resolution (one process, so every variant sees the same machine load):

1. builds our ``SDTDecoder`` for the chosen encoder width (random weights, random BatchNorm statistics
   and DySample offsets so that every layer matters), copies its weights into the official ``SDTHead``
   (``anydepth.models.official.to_official_state_dict``) and checks that both give the same output;
2. times the official head, our eager decoder and the fast variants round-robin (A, B, C, ... repeated),
   reporting median and quartiles in ms and the speed-up of every variant over the official head.

Inputs are the head's native inputs: 4 x (patch map [B,C,h,w], class token [B,C]).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

import torch


def _load_official(path: Path) -> type:
    if not path.is_file():
        raise SystemExit(
            f"{path} not found; extract it from a clone of https://github.com/AIGeeksGroup/AnyDepth with: "
            f"git -C OFFICIAL_REPO show HEAD:model/sdt_head.py > {path}"
        )
    spec = importlib.util.spec_from_file_location("official_sdt_head", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.SDTHead


def _randomize(decoder: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in decoder.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
        if type(m).__name__ == "DySample":
            m.offset.weight.data.normal_(0, 0.05, generator=g)
            m.scope.weight.data.normal_(0, 0.05, generator=g)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--official", type=Path, required=True, help="the official sdt_head.py (extracted as described above)"
    )
    ap.add_argument("--encoder", default="vits16", choices=["vits16", "vitb16", "vitl16"])
    ap.add_argument("--resolutions", default="256,512", help="comma-separated square sizes")
    ap.add_argument(
        "--variants", default="fast,fast_direct,fast_untiled", help="our fast variants to include"
    )
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    ap.add_argument("--json", type=Path, default=None, help="write results here")
    args = ap.parse_args(argv)

    import anydepth
    from anydepth.bench.efficiency import allocator_name, time_interleaved
    from anydepth.bench.flops import synthetic_encoder_output
    from anydepth.export.fast import FastSDTDecoder
    from anydepth.models.official import to_official_state_dict

    if args.threads:
        torch.set_num_threads(args.threads)
    SDTHead = _load_official(args.official)
    torch.manual_seed(0)
    model = anydepth.create_model(f"sdt_dinov3_{args.encoder}")
    ours = model.decoder.eval()
    _randomize(ours, 1)
    c = ours.in_dims[0]
    official = SDTHead([c] * 4, fusion_channels=256, n_output_channels=1, use_cls_token=True).eval()
    official.load_state_dict(to_official_state_dict(ours.state_dict(), "sdt"), strict=True)
    fast = {}
    for v in args.variants.split(","):
        if v == "fast":  # the defaults: row tiling, Winograd on CPU float32 when NNPACK is available
            fast[v] = FastSDTDecoder(ours)
        elif v == "fast_direct":
            fast[v] = FastSDTDecoder(ours, conv_algo="direct")
        elif v == "fast_untiled":
            fast[v] = FastSDTDecoder(ours, tile_rows=0)
        elif v:
            raise SystemExit(f"unknown variant {v!r}")

    results = []
    for res in [int(r) for r in args.resolutions.split(",")]:
        enc = synthetic_encoder_output(
            ours.in_dims,
            (res // 16, res // 16),
            1,
            16,
            "cpu",
            torch.float32,
            torch.Generator().manual_seed(res),
        )
        feats = [(f, t) for f, t in zip(enc.features, enc.cls_tokens, strict=True)]
        with torch.no_grad():
            ref = official(feats)
            diffs = {"eager": float((ours.forward_raw(enc) - ref).abs().max())}
            for k, f in fast.items():
                diffs[k] = float((f.forward_raw(enc) - ref).abs().max())
        fns = {
            "official": lambda feats=feats: official(feats),
            "eager": lambda enc=enc: ours.forward_raw(enc),
        }
        for k, f in fast.items():
            fns[k] = lambda f=f, enc=enc: f.forward_raw(enc)
        stats = time_interleaved(fns, warmup=args.warmup, repeats=args.repeats)
        base = stats["official"].median_ms
        row = {
            "resolution": res,
            "encoder": args.encoder,
            "threads": torch.get_num_threads(),
            "allocator": allocator_name(),
            "output_abs_max": float(ref.abs().max()),
            "variants": {
                k: {
                    "median_ms": s.median_ms,
                    "p25_ms": s.p25_ms,
                    "p75_ms": s.p75_ms,
                    "speedup_vs_official": base / s.median_ms,
                    "max_abs_diff_vs_official": diffs.get(k, 0.0),
                }
                for k, s in stats.items()
            },
        }
        results.append(row)
        print(f"SDT-{args.encoder} decoder, {res}x{res}, {row['threads']} threads, {row['allocator']}:")
        for k, v in row["variants"].items():
            print(
                f"  {k:14s} {v['median_ms']:9.1f} ms [{v['p25_ms']:.1f}-{v['p75_ms']:.1f}]  "
                f"x{v['speedup_vs_official']:.2f} vs official  max|diff| {v['max_abs_diff_vs_official']:.1e}"
            )
        sys.stdout.flush()
    if args.json:
        tmp = args.json.with_name(f".{args.json.name}.tmp")
        tmp.write_text(json.dumps(results, indent=2))
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
