"""``anydepth bench``: parameters, FLOPs, latency, throughput and peak memory of presets.

Examples::

  anydepth bench                                   # SDT-S and DPT-S decoders at 256/512/1024, CPU fp32
  anydepth bench --models sdt_dinov3_vits16 --resolutions 256,512 --variants eager,fast,fast_direct,fast_untiled
  anydepth bench --paper                           # reproduce the paper's parameter and FLOP tables only
  anydepth bench --quick -o /tmp/bench             # tiny presets, seconds (smoke test)
  LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 anydepth bench ...   # measured allocator option

Writes ``bench.json``, ``bench.csv``, ``bench.md`` and ``bench.png`` into ``--output-dir`` and prints the
table. Latency rows of one (model, part, resolution, batch, device) group are timed interleaved in one
process; ``x eager fp32`` is the ratio of medians within that group.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

log = logging.getLogger(__name__)

QUICK: dict[str, Any] = {
    "models": ("sdt_test", "dpt_test"),
    "resolutions": (64, 128),
    "warmup": 1,
    "repeats": 3,
}


def _csv(kind: type) -> Any:
    def parse(s: str) -> tuple[Any, ...]:
        try:
            return tuple(kind(v.strip()) for v in s.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list of {kind.__name__}, got {s!r}"
            ) from None

    return parse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="efficiency benchmark (params, FLOPs, latency, memory)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--models", type=_csv(str), metavar="A,B", help="presets (default: SDT-S and DPT-S)")
    p.add_argument(
        "--resolutions", type=_csv(int), metavar="R,..", help="square input sizes (default 256,512,1024)"
    )
    p.add_argument("--batch-sizes", type=_csv(int), metavar="B,..", help="batch sizes (default 1)")
    p.add_argument(
        "--devices",
        type=_csv(str),
        metavar="D,..",
        help="torch devices: cpu (default), cuda, cuda:N, mps, auto",
    )
    p.add_argument(
        "--dtypes",
        type=_csv(str),
        metavar="T,..",
        help="float32, bfloat16, float16 (default float32; fp32/bf16/fp16 deprecated)",
    )
    p.add_argument("--parts", type=_csv(str), metavar="P,..", help="decoder and/or model (default decoder)")
    p.add_argument(
        "--variants",
        type=_csv(str),
        metavar="V,..",
        help="eager, fast, fast_direct, fast_untiled, compiled (default eager,fast,fast_direct)",
    )
    p.add_argument("--warmup", type=int, help="untimed calls per configuration (default 2)")
    p.add_argument("--repeats", type=int, help="timed calls per configuration (default 10)")
    p.add_argument(
        "--threads", type=int, help="torch.set_num_threads for this run (default: torch's default)"
    )
    p.add_argument("--tile-rows", type=int, help="rows per tile for the tiled variants (default: automatic)")
    p.add_argument(
        "--max-tile-pixels",
        type=int,
        help="tile height = this / width (default: a quarter of the image, 16384-65536)",
    )
    p.add_argument(
        "--allow-emulated",
        action="store_true",
        help="also run bfloat16/float16 on a CPU without native kernels for them (10-300x slower; "
        "skipped by default)",
    )
    p.add_argument("--no-latency", action="store_true", help="skip timing")
    p.add_argument("--no-memory", action="store_true", help="skip peak-memory subprocesses")
    p.add_argument("--no-flops", action="store_true", help="skip FLOP counting")
    p.add_argument("--no-plot", action="store_true", help="do not write bench.png")
    p.add_argument(
        "--paper", action="store_true", help="only reproduce the paper's parameter and FLOP tables"
    )
    p.add_argument("--quick", action="store_true", help="tiny presets at 64/128 px, 3 repeats (smoke test)")
    p.add_argument("-o", "--output-dir", metavar="DIR", help="write bench.{json,csv,md,png} here")
    p.add_argument("--stem", default="bench", help="output file name stem (default bench)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("-q", "--quiet", action="store_true", help="errors only")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from anydepth.bench.efficiency import (
        BenchConfig,
        allocator_name,
        benchmark,
        format_paper_tables,
        format_table,
        paper_tables,
        write_outputs,
    )
    from anydepth.cli.runner import canonical_dtype, resolve_device

    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.paper:
        tables = paper_tables()
        text = format_paper_tables(tables)
        print(text)
        if args.output_dir:
            from pathlib import Path

            from anydepth.atomic import atomic_path, json_text

            out = Path(args.output_dir)
            for name, content in (
                (f"{args.stem}_paper.md", text + "\n"),
                (f"{args.stem}_paper.json", json_text(tables, nonfinite="null", indent=2)),
            ):
                with atomic_path(out / name, overwrite=args.overwrite) as tmp:
                    tmp.write_text(content)
        return 0

    kw: dict[str, Any] = dict(QUICK) if args.quick else {}
    for field, value in (
        ("models", args.models),
        ("resolutions", args.resolutions),
        ("batch_sizes", args.batch_sizes),
        ("devices", args.devices),
        ("dtypes", args.dtypes),
        ("parts", args.parts),
        ("variants", args.variants),
        ("warmup", args.warmup),
        ("repeats", args.repeats),
        ("tile_rows", args.tile_rows),
        ("max_tile_pixels", args.max_tile_pixels),
    ):
        if value is not None:
            kw[field] = value
    kw["latency"] = not args.no_latency
    kw["memory"] = not args.no_memory
    kw["flops"] = not args.no_flops
    kw["allow_emulated"] = args.allow_emulated
    # the device and dtype vocabulary of every command (cli.runner); deprecated dtype spellings warn
    kw["devices"] = tuple(str(resolve_device(d, "--devices")) for d in kw.get("devices", ("cpu",)))
    if "dtypes" in kw:
        kw["dtypes"] = tuple(canonical_dtype(d, "--dtypes") for d in kw["dtypes"])
    cfg = BenchConfig(**kw)
    log.info("allocator: %s, threads: %d", allocator_name(), torch.get_num_threads())
    if allocator_name() == "glibc":
        log.info(
            "glibc malloc: large per-call buffers are mmapped and page-faulted every call; "
            "LD_PRELOAD=libjemalloc.so.2 (apt-get install libjemalloc2) is a measured option (docs/efficiency.md)"
        )
    rows = benchmark(cfg, progress=lambda s: log.info("%s", s))
    print(format_table(rows))
    if args.output_dir:
        meta = {"config": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(cfg).items()}}
        paths = write_outputs(
            rows, args.output_dir, stem=args.stem, plot=not args.no_plot, overwrite=args.overwrite, meta=meta
        )
        for kind, path in paths.items():
            log.info("wrote %s: %s", kind, path)
    return 0
