"""``anydepth eval``: zero-shot evaluation on NYUv2 / KITTI / ETH3D / ScanNet / DIODE (Marigold protocol).

Examples::

    anydepth eval --checkpoint anydepth_vits.safetensors --encoder-weights dinov3_vits16.pth \\
        --benchmark all --data-root ~/data/marigold_eval --output runs/eval_vits
    anydepth eval --predictions preds/ --pred-space disparity --benchmark nyuv2 --data-root ~/data/nyuv2 \\
        --output runs/eval_preds

Writes ``metrics.json``, ``per_sample.csv`` and ``table.md`` into ``--output`` (never over existing files unless
``--overwrite``). Exit status: 0 when every benchmark was scored completely (or ``--allow-missing`` was given),
1 when a benchmark failed or had missing samples, 2 for usage errors.

Several processes or machines (``--shard K/N`` or torchrun's ``RANK``/``WORLD_SIZE``, see ``anydepth.shard``):
shard ``K/N`` scores the samples ``K, K+N, ...`` of every benchmark and writes its own ``metrics.json`` /
``per_sample.csv`` / ``table.md`` plus ``shard.json`` into ``OUTPUT/shards/K-of-N/``; a finished shard is not
recomputed (``--overwrite`` forces it). The same command without a shard then merges (``eval.merge_results``):
the same ``per_sample.csv`` rows and ``metrics.json`` means as one process, without loading the model.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anydepth.cli.runner import (
    CHECKPOINT_HELP,
    ENCODER_WEIGHTS_HELP,
    BuiltRunner,
    add_runtime_args,
    build_runner,
)

logger = logging.getLogger(__name__)

_BENCHMARKS = ("nyuv2", "kitti", "eth3d", "scannet", "diode")
_ALIGNMENTS = ("auto", "least_square", "least_square_disparity", "median", "none")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="zero-shot evaluation on the paper's benchmarks",
        description=(
            "Score a model (or precomputed predictions) on NYUv2, KITTI, ETH3D, ScanNet and DIODE under the "
            "Marigold protocol (per-image least-squares alignment, AbsRel / delta1 ...). See docs/evaluation.md."
        ),
    )
    src = p.add_argument_group("what to evaluate (exactly one)")
    g = src.add_mutually_exclusive_group(required=True)
    g.add_argument(
        "--checkpoint",
        metavar="FILE",
        help=CHECKPOINT_HELP,
    )
    g.add_argument("--model", help="model preset name (random decoder weights unless loaded otherwise)")
    g.add_argument(
        "--predictions",
        type=Path,
        metavar="PRED_DIR",
        help="precomputed predictions: one float .npy per sample (see --pred-naming); with several benchmarks, "
        "PRED_DIR/<benchmark> is used when it exists",
    )
    src.add_argument(
        "--encoder-weights",
        metavar="FILE",
        help=ENCODER_WEIGHTS_HELP,
    )
    src.add_argument(
        "--pred-space",
        default=None,
        help="space of --predictions values: depth | disparity (affine-invariant) or a DepthSpace value "
        "(depth_metric, disparity_metric, ...). Required with --predictions",
    )
    src.add_argument(
        "--pred-naming",
        choices=("anydepth", "marigold"),
        default="anydepth",
        help="prediction file names: anydepth = RGB path with .npy extension (default); marigold = files "
        "written by Marigold's infer.py (pred_*.npy)",
    )

    d = p.add_argument_group("benchmarks and data")
    d.add_argument(
        "--benchmark",
        nargs="+",
        required=True,
        choices=(*_BENCHMARKS, "all"),
        help="benchmark(s) to run; 'all' = the five of the paper's Table 2",
    )
    d.add_argument(
        "--data-root",
        type=Path,
        required=True,
        help="benchmark data: ROOT/<benchmark> (an extracted Marigold tar, the tar itself, or a folder holding "
        "the tar) by default; for a single benchmark ROOT itself is used when ROOT/<benchmark> does not exist",
    )
    d.add_argument(
        "--bench-root",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="override the data location of one benchmark (repeatable)",
    )
    d.add_argument(
        "--split-file",
        action="append",
        default=[],
        metavar="[NAME=]PATH",
        help="Marigold-format split list (repeatable as NAME=PATH); default: the official list's file name in "
        "the benchmark root, else the layout is scanned",
    )
    d.add_argument(
        "--limit", type=int, default=None, help="score only the first N samples (result marked incomplete)"
    )
    d.add_argument(
        "--allow-missing",
        action="store_true",
        help="average over the samples that could be read instead of failing (reported in the outputs)",
    )

    pr = p.add_argument_group("protocol (defaults follow Marigold/Lotus per benchmark)")
    pr.add_argument(
        "--processing-res",
        type=int,
        default=None,
        help="inference resolution, longest side in pixels (0 = native); default per benchmark: native, "
        "ETH3D 768, DIODE 640",
    )
    pr.add_argument(
        "--flip-tta", action="store_true", help="average with the horizontally flipped prediction"
    )
    pr.add_argument(
        "--alignment",
        choices=_ALIGNMENTS,
        default="auto",
        help="auto = least_square_disparity for disparity predictions, least_square for depth predictions",
    )
    pr.add_argument(
        "--alignment-max-res",
        default=None,
        metavar="N|none",
        help="fit the alignment on a copy subsampled to N px (default per benchmark: ETH3D 1024, others none)",
    )
    pr.add_argument(
        "--alignment-downsample",
        choices=("marigold", "nearest2d"),
        default="marigold",
        help="how --alignment-max-res subsamples: marigold = as Marigold's code does (columns only; default), "
        "nearest2d = rows and columns",
    )
    pr.add_argument(
        "--kitti-mask",
        choices=("marigold", "eigen_full", "garg_full", "none"),
        default="marigold",
        help="KITTI evaluation mask: marigold = Eigen fractions of the KB-cropped frame (default); eigen_full / "
        "garg_full = BTS-style masks of the full frame",
    )
    pr.add_argument(
        "--diode-range-mask",
        action="store_true",
        help="non-standard: also mask DIODE ground truth outside (0.6, 350) m",
    )
    pr.add_argument(
        "--diode-subset",
        choices=("all", "indoors", "outdoor"),
        default="all",
        help="DIODE subset (default all)",
    )

    o = p.add_argument_group("output and runtime")
    o.add_argument("--output", type=Path, required=True, help="output directory")
    o.add_argument("--overwrite", action="store_true", help="replace existing result files in --output")
    o.add_argument(
        "--label", default=None, help="row label in tables (default: model / checkpoint / folder name)"
    )
    add_runtime_args(o, backend_group=src, onnx_group=g)
    o.add_argument("--no-progress", action="store_true", help="no progress bar")
    o.add_argument(
        "--shard",
        default=None,
        metavar="K/N",
        help="score only shard K (0-based) of N (samples K, K+N, ... of each benchmark) into OUTPUT/shards/K-of-N, "
        "for several processes or machines (default under torchrun: RANK/WORLD_SIZE); then run the same command "
        "without --shard (and outside torchrun) to merge",
    )
    p.set_defaults(func=run)


def _kv(items: list[str], flag: str, allow_bare: bool = False) -> tuple[dict[str, str], str | None]:
    out: dict[str, str] = {}
    bare: str | None = None
    for it in items:
        if "=" in it and it.split("=", 1)[0] in _BENCHMARKS:
            k, v = it.split("=", 1)
            out[k] = v
        elif allow_bare and bare is None:
            bare = it
        else:
            raise ValueError(f"{flag}: expected NAME=PATH with NAME in {', '.join(_BENCHMARKS)}, got {it!r}")
    return out, bare


def _pick_dir(base: Path, bench: str, single: bool) -> Path:
    sub = base / bench
    if sub.exists() or not single:
        return sub
    return base


def _git_commit() -> str | None:
    """``<sha>[-dirty]`` of the source checkout (``engine.logging.code_version``), None outside git."""
    from anydepth.engine.logging import code_version

    v = code_version()
    if v["git_commit"] is None:
        return None
    return str(v["git_commit"]) + ("-dirty" if v["git_dirty"] else "")


def _model_info(built: BuiltRunner) -> dict[str, Any]:
    """What ``metrics.json`` records about the evaluated model."""
    if built.onnx is not None:
        return {"onnx": built.onnx, "model": None, "checkpoint": None}
    if built.checkpoint is not None:
        info: dict[str, Any] = {
            "checkpoint": built.checkpoint,
            "model": getattr(getattr(built.model, "config", None), "name", None),
        }
    else:
        info = {"model": built.preset, "checkpoint": None}
        if built.encoder_weights is None:
            info["weights"] = "random"
    info["encoder_weights"] = built.encoder_weights
    if built.fast:
        info["fast"] = True
    return info


@dataclass
class _Setup:
    """Everything ``run`` resolves before the first benchmark (phase 1)."""

    names: list[str]
    single: bool
    roots: dict[str, str]
    splits: dict[str, str]
    max_res: int | None | str
    label: str
    built: BuiltRunner | None = None
    model_info: dict[str, Any] = field(default_factory=dict)


def _benchmark_names(args: argparse.Namespace) -> list[str]:
    from anydepth.eval.benchmarks import PAPER_BENCHMARKS

    names: list[str] = []
    for b in args.benchmark:
        for n in PAPER_BENCHMARKS if b == "all" else (b,):
            if n not in names:
                names.append(n)
    return names


def _alignment_max_res(spec: str | None) -> int | None | str:
    if spec is None:
        return "spec"
    v = str(spec).lower()
    if v in ("none", "0", "off"):
        return None
    if v.isdigit():
        return int(v)
    raise ValueError(f"--alignment-max-res: expected a positive integer or 'none', got {spec!r}")


def _setup(args: argparse.Namespace, out: Path, overwrite: bool) -> _Setup:
    """Phase 1: validate the arguments, check the output directory ``out`` and build the model (before any work)."""
    from anydepth.eval.evaluate import parse_space
    from anydepth.eval.report import check_output_dir

    names = _benchmark_names(args)
    single = len(names) == 1
    roots, _ = _kv(args.bench_root, "--bench-root")
    splits, bare_split = _kv(args.split_file, "--split-file", allow_bare=True)
    if bare_split is not None:
        if not single:
            raise ValueError("--split-file without NAME= is only allowed with a single benchmark")
        splits[names[0]] = bare_split
    if args.limit is not None and args.limit <= 0:
        raise ValueError(f"--limit must be positive, got {args.limit}")
    if args.processing_res is not None and args.processing_res < 0:
        raise ValueError(f"--processing-res must be >= 0 (0 = native), got {args.processing_res}")
    max_res = _alignment_max_res(args.alignment_max_res)
    check_output_dir(out, overwrite=overwrite)  # fail before any work
    if args.predictions is not None:
        if args.pred_space is None:
            raise ValueError("--pred-space is required with --predictions (depth or disparity)")
        parse_space(args.pred_space)
        if not args.predictions.is_dir():
            raise FileNotFoundError(f"--predictions: directory not found: {args.predictions}")
        return _Setup(names, single, roots, splits, max_res, args.label or args.predictions.name)
    if args.pred_space is not None:
        raise ValueError("--pred-space applies to --predictions only (a model declares its output space)")
    built = build_runner(args)
    source = args.checkpoint or args.onnx
    label = args.label or (Path(source).stem if source else args.model)
    return _Setup(names, single, roots, splits, max_res, label, built, _model_info(built))


def _benchmark_spec(args: argparse.Namespace, name: str) -> Any:
    from anydepth.eval.benchmarks import get_benchmark

    spec = get_benchmark(name)
    if name == "kitti" and args.kitti_mask != "marigold":
        spec = spec.replace(kitti_mask=args.kitti_mask)
    if name == "diode" and args.diode_range_mask:
        spec = spec.replace(diode_range_mask=True)
    if args.alignment_downsample != spec.alignment_downsample:
        spec = spec.replace(alignment_downsample=args.alignment_downsample)
    return spec


def _run_benchmark(args: argparse.Namespace, st: _Setup, name: str, shard: Any = None) -> Any:
    """Phase 2, one benchmark: its protocol, its predictor, ``eval.evaluate`` -> ``BenchmarkResult``.

    Raises:
        IncompleteBenchmarkError, FileNotFoundError, NotADirectoryError, ValueError: the benchmark failed.
    """
    from tqdm import tqdm

    from anydepth.eval.evaluate import ModelPredictor, PrecomputedPredictions, evaluate

    spec = _benchmark_spec(args, name)
    ds_kwargs = {"subset": args.diode_subset} if name == "diode" and args.diode_subset != "all" else {}
    root = Path(st.roots[name]) if name in st.roots else _pick_dir(args.data_root, name, st.single)

    def bar(it: Any, total: int) -> Any:
        return tqdm(it, total=total, desc=name, unit="img", disable=args.no_progress, file=sys.stderr)

    if st.built is None:
        predictor: Any = PrecomputedPredictions(
            _pick_dir(args.predictions, name, st.single),
            str(args.pred_space),
            naming=args.pred_naming,
            benchmark=name,
        )
    else:
        res = spec.processing_res if args.processing_res is None else args.processing_res
        predictor = ModelPredictor(
            st.built.runner, processing_res=res, flip_tta=args.flip_tta, info=st.model_info
        )
    result = evaluate(
        predictor,
        spec,
        root,
        split_file=st.splits.get(name),
        alignment=args.alignment,
        alignment_max_res=st.max_res,
        limit=args.limit,
        allow_missing=args.allow_missing,
        dataset_kwargs=ds_kwargs,
        progress=bar,
        shard=shard,
    )
    if ds_kwargs:
        result.meta["dataset_options"] = ds_kwargs
    return result


def _arguments(args: argparse.Namespace) -> dict[str, Any]:
    """The command-line arguments as ``metrics.json`` records them."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "func"}


def _run_meta(args: argparse.Namespace, st: _Setup) -> dict[str, Any]:
    import torch

    from anydepth import __version__

    if st.built is None:
        source: dict[str, Any] = {
            "kind": "predictions",
            "dir": str(args.predictions),
            "space": args.pred_space,
            "naming": args.pred_naming,
        }
    else:
        source = {"kind": "model", **st.model_info, "device": str(st.built.device), "dtype": st.built.dtype}
    return {
        "anydepth_version": __version__,
        "git_commit": _git_commit(),
        "created_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "torch_version": torch.__version__,
        "arguments": _arguments(args),
        "source": source,
    }


def _report(
    args: argparse.Namespace,
    label: str,
    run_meta: dict[str, Any],
    results: list[Any],
    errors: dict[str, str],
    out: Path,
    overwrite: bool,
) -> int:
    """Phase 3: write ``metrics.json`` / ``per_sample.csv`` / ``table.md`` into ``out``, print the table; the exit
    status."""
    from anydepth.eval.report import load_result, paper_table, write_report

    paths = write_report(out, results, label=label, run_meta=run_meta, errors=errors, overwrite=overwrite)
    if results:
        print(paper_table([(label, load_result(paths["metrics.json"])["benchmarks"])]), end="")
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    if errors:
        print(f"anydepth eval: {len(errors)} benchmark(s) failed: {', '.join(errors)}", file=sys.stderr)
        return 1
    return 0


def run(args: argparse.Namespace) -> int:
    """Setup (arguments, output directory, model) -> one ``eval.evaluate`` per benchmark -> report; with a shard,
    only its samples into ``OUTPUT/shards/K-of-N``; without one, over shard directories, the merge."""
    from anydepth.eval.evaluate import IncompleteBenchmarkError
    from anydepth.shard import is_complete, mark_complete, resolve_shard, shard_dir, shard_dirs

    shard = resolve_shard(args.shard)
    if shard is None and shard_dirs(args.output):
        return _merge(args)
    out = args.output if shard is None else shard_dir(args.output, shard)
    if shard is not None and is_complete(out) and not args.overwrite:
        print(f"anydepth eval: shard {shard} is already done in {out} (--overwrite recomputes it)")
        return 0
    # a shard owns its directory: an unfinished one is recomputed over its own partial files
    overwrite = bool(args.overwrite) or shard is not None
    st = _setup(args, out, overwrite)
    results = []
    errors: dict[str, str] = {}
    for name in st.names:
        try:
            result = _run_benchmark(args, st, name, shard)
        except IncompleteBenchmarkError as e:
            errors[name] = str(e)
            print(f"anydepth eval: {e}", file=sys.stderr)
            continue
        except (FileNotFoundError, NotADirectoryError, ValueError) as e:
            errors[name] = str(e)
            print(f"anydepth eval: {name}: {e}", file=sys.stderr)
            continue
        if shard is None:
            _warn_incomplete(result)
        results.append(result)
    rc = _report(args, st.label, _run_meta(args, st), results, errors, out, overwrite)
    if shard is not None and rc == 0:
        mark_complete(out, shard, {"benchmarks": st.names})
        print(
            f"anydepth eval: shard {shard} done in {out}; when every shard is done, merge by running the same "
            "command without --shard (and outside torchrun)"
        )
    return rc


def _warn_incomplete(result: Any) -> None:
    if not result.complete:
        print(
            f"anydepth eval: warning: {result.benchmark} is incomplete ({result.num_samples} of "
            f"{result.meta['split_num_samples']} listed samples scored, official {result.expected_num_samples})",
            file=sys.stderr,
        )


#: Arguments that may differ between the shards of one evaluation and its merge.
_PER_PROCESS_ARGS = frozenset({"shard", "overwrite", "no_progress", "device"})


def _merge(args: argparse.Namespace) -> int:
    """Merge ``OUTPUT/shards/*`` into the outputs of one run (no model is loaded; nothing is recomputed).

    Raises:
        ValueError: a shard is missing or unfinished, or was run with other arguments.
    """
    from anydepth.eval.evaluate import BenchmarkResult, merge_results
    from anydepth.eval.report import check_output_dir, load_result, read_per_sample_csv
    from anydepth.shard import check_arguments, finished_shards

    dirs = finished_shards(args.output)
    check_output_dir(args.output, overwrite=args.overwrite)
    names = _benchmark_names(args)
    mine = _arguments(args)
    parts: dict[str, list[Any]] = {name: [] for name in names}
    docs = []
    for s, d in dirs:
        doc = load_result(d)
        check_arguments(mine, doc.get("arguments", {}), ignore=_PER_PROCESS_ARGS, where=f"{d} (shard {s})")
        rows = read_per_sample_csv(d / "per_sample.csv")
        for name in names:
            if name not in doc["benchmarks"]:
                raise ValueError(f"{d}: shard {s} has no result for {name}")
            parts[name].append(BenchmarkResult.from_dict(doc["benchmarks"][name], rows.get(name, [])))
        docs.append(doc)
    results = [merge_results(parts[name]) for name in names]
    for result in results:
        _warn_incomplete(result)
    keep = ("anydepth_version", "git_commit", "created_utc", "torch_version", "arguments", "source")
    run_meta = {k: docs[0].get(k) for k in keep}
    run_meta["created_utc"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    run_meta["arguments"] = mine
    return _report(args, str(docs[0]["label"]), run_meta, results, {}, args.output, args.overwrite)
