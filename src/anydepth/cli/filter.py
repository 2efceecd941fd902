"""``anydepth filter``: score training samples (S_dist, S_grad), apply the paper's selection rule, write lists.

Sources (several may be combined; each becomes one "dataset" of the per-dataset rule):

* ``--dataset TYPE[@LABEL]=ROOT[:LIST]`` (repeatable): a registered reader (``hypersim``, ``vkitti2``,
  ``blendedmvs``, ``irs``, ``tartanair``, ``folder``, ...) over ``ROOT``, with an optional list file; ``LABEL``
  names the group (default ``TYPE``), so one reader can serve several groups.
* ``--dataset TYPE --root ROOT [--list LIST]``: the same for a single dataset.
* ``--list FILE`` (repeatable) ``[--root ROOT] [--depth-scale S]``: plain ``rgb_path depth_path [depth_scale]``
  lists read with the ``folder`` reader; the label is the list's file name without extension.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "filter",
        help="score and filter training samples (Depth Distribution + Gradient Continuity scores)",
        description=(
            "Score every sample with the Depth Distribution Score and the Gradient Continuity Score, drop "
            "samples with < 20% valid depth and the lowest 20% by each score per dataset, and write the "
            "scores table, kept/removed lists, a summary and plots to --output. Resumable: rerun the same "
            "command to continue an interrupted run. Input data are only read."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "examples:\n"
            "  anydepth filter --dataset hypersim=/data/hypersim:/lists/hypersim.txt \\\n"
            "                  --dataset vkitti2=/data/vkitti2 --output runs/filter --workers 16\n"
            "  anydepth filter --list train.txt --root /data/mine --depth-scale 1000 --output runs/f\n"
            "  anydepth filter --dataset folder@kitti=/data/fix:/tmp/kitti.txt "
            "--dataset folder@nyu=/data/fix:/tmp/nyu.txt --output runs/f\n"
            "  anydepth filter --list train.txt --output runs/f --shard 0/2   # machine 1 (shared file system)\n"
            "  anydepth filter --list train.txt --output runs/f --shard 1/2   # machine 2\n"
            "  anydepth filter --list train.txt --output runs/f               # merge: same result as one run"
        ),
    )
    src = p.add_argument_group("sources")
    src.add_argument(
        "--dataset",
        action="append",
        default=[],
        metavar="TYPE[@LABEL]=ROOT[:LIST]",
        help="a registered dataset reader over ROOT with an optional list file (repeatable); a bare TYPE uses "
        "--root and --list. Paths containing ':' need the bare form.",
    )
    src.add_argument(
        "--list",
        action="append",
        default=[],
        metavar="FILE",
        help="list file of 'rgb_path depth_path [depth_scale]' lines (repeatable; read with the 'folder' reader "
        "unless a bare --dataset TYPE is given)",
    )
    src.add_argument(
        "--root", default=None, help="root of the list paths (default: the list file's directory)"
    )
    src.add_argument(
        "--depth-scale",
        type=float,
        default=None,
        help="for --list sources: stored PNG value / scale = metres (1000 for mm, 256 for KITTI)",
    )
    src.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="[LABEL.]KEY=VALUE",
        help="reader option (value parsed as JSON when possible), for one dataset or all, e.g. "
        "vkitti2.sky_policy=invalid or max_depth=80",
    )
    p.add_argument("--output", "-o", required=True, help="output directory (new, empty, or a run to resume)")
    p.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="scoring processes (default: all CPUs; 1 = in process)",
    )
    p.add_argument(
        "--shard",
        default=None,
        metavar="K/N",
        help="score only shard K (0-based) of N into OUTPUT/shards/K-of-N, for several processes or machines "
        "(default under torchrun: RANK/WORLD_SIZE); then run the same command without --shard to merge",
    )
    p.add_argument("--chunksize", type=int, default=None, help="samples per task sent to a worker")
    p.add_argument(
        "--start-method",
        choices=("fork", "forkserver", "spawn"),
        default=None,
        help="multiprocessing start method (default: forkserver where available)",
    )

    sc = p.add_argument_group("scores (defaults: the paper)")
    sc.add_argument(
        "--far-plane", type=float, default=100.0, help="valid depth <= this (metres; default 100)"
    )
    sc.add_argument("--min-depth", type=float, default=0.0, help="valid depth > this (metres; default 0)")
    sc.add_argument("--bins", type=int, default=20, help="histogram bins K (default 20)")
    sc.add_argument(
        "--bin-range",
        default="sample",
        metavar="sample|LO,HI",
        help="histogram range: the sample's own [min, max] (default) or a fixed LO,HI",
    )
    sc.add_argument("--bin-space", choices=("depth", "disparity"), default="depth", help="what is binned")
    sc.add_argument("--conc-low", type=float, default=None, help="S_conc = 1 up to this p_max (default 2/K)")
    sc.add_argument("--conc-high", type=float, default=0.5, help="S_conc = 0 from this p_max (default 0.5)")
    sc.add_argument(
        "--dist-weights", default="0.5,0.3,0.2", metavar="W1,W2,W3", help="weights of S_chi2, S_conc, S_range"
    )
    sc.add_argument(
        "--gradient", choices=("central", "forward"), default="central", help="finite-difference operator"
    )
    sc.add_argument("--edge-quantile", type=float, default=0.9, help="G above this quantile = edge (0.9)")

    se = p.add_argument_group("selection (defaults: the paper, with this project's readings)")
    se.add_argument("--min-valid", type=float, default=0.2, help="drop valid fraction below this (0.2)")
    se.add_argument("--drop-dist", type=float, default=0.2, help="fraction dropped for lowest S_dist (0.2)")
    se.add_argument("--drop-grad", type=float, default=0.2, help="fraction dropped for lowest S_grad (0.2)")
    se.add_argument(
        "--mode", choices=("union", "sequential"), default="union", help="combine the two cuts (union)"
    )
    se.add_argument(
        "--scope", choices=("dataset", "global"), default="dataset", help="fractions per dataset or global"
    )

    o = p.add_argument_group("outputs")
    o.add_argument(
        "--check-rgb",
        action="store_true",
        help="decode every RGB image (else its size is read from its header); a size differing from the depth excludes the sample",
    )
    o.add_argument("--no-plots", action="store_true", help="skip histograms and galleries")
    o.add_argument("--gallery", type=int, default=6, help="samples per gallery (0 = none; default 6)")
    pq = o.add_mutually_exclusive_group()
    pq.add_argument(
        "--parquet",
        dest="parquet",
        action="store_true",
        default=None,
        help="require scores.parquet (error without pyarrow: pip install 'anydepth[parquet]'); default: written "
        "when pyarrow is installed",
    )
    pq.add_argument("--no-parquet", dest="parquet", action="store_false", help="do not write scores.parquet")
    o.add_argument(
        "--limit", type=int, default=None, help="score at most N new samples, then stop (resumable)"
    )
    o.add_argument(
        "--strict", action="store_true", help="exit with status 1 if any sample is unreadable (else 0)"
    )
    o.add_argument("--quiet", "-q", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=run)


def _floats(text: str, n: int, flag: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise ValueError(f"{flag}: expected {n} comma-separated numbers, got {text!r}") from None
    if len(vals) != n:
        raise ValueError(f"{flag}: expected {n} comma-separated numbers, got {text!r}")
    return vals


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_dataset_spec(spec: str) -> tuple[str, str, str | None, str | None]:
    """``TYPE[@LABEL]=ROOT[:LIST]`` -> ``(type, label, root, list)``; a bare ``TYPE`` gives ``root=None``.

    Raises:
        ValueError: an empty type, label or root.
    """
    name, sep, rest = spec.partition("=")
    kind, _, label = name.partition("@")
    kind, label = kind.strip(), (label.strip() or kind.strip())
    if not kind:
        raise ValueError(f"--dataset {spec!r}: expected TYPE[@LABEL]=ROOT[:LIST]")
    if not sep:
        return kind, label, None, None
    root, split = rest, None
    if ":" in rest:
        root, split = rest.rsplit(":", 1)
        if not split:
            raise ValueError(f"--dataset {spec!r}: empty LIST after ':'")
    if not root:
        raise ValueError(f"--dataset {spec!r}: empty ROOT")
    return kind, label, root, split


def _options(args: argparse.Namespace, labels: list[str]) -> dict[str, dict[str, Any]]:
    per: dict[str, dict[str, Any]] = {lab: {} for lab in labels}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--option {item!r}: expected [LABEL.]KEY=VALUE")
        lab, dot, k = key.partition(".")
        targets = [lab] if dot and lab in per else labels
        if dot and lab not in per:
            raise ValueError(f"--option {item!r}: unknown dataset label {lab!r}; labels: {labels}")
        for t in targets:
            per[t][k if dot else key] = _parse_value(value)
    return per


def build_sources(args: argparse.Namespace) -> list[Any]:
    """Turn the source arguments into ``Source`` objects (instantiating the readers).

    Raises:
        ValueError: inconsistent source arguments; KeyError: an unknown reader name.
    """
    import anydepth.data.datasets  # noqa: F401  (registers the readers)
    from anydepth.data.filtering.run import Source
    from anydepth.registry import DATASETS

    specs: list[tuple[str, str, str, str | None]] = []
    bare = [parse_dataset_spec(s) for s in args.dataset if "=" not in s]
    full = [parse_dataset_spec(s) for s in args.dataset if "=" in s]
    if len(bare) > 1:
        raise ValueError("only one bare --dataset TYPE is allowed; use TYPE[@LABEL]=ROOT[:LIST] for several")
    for kind, label, root, split in full:
        assert root is not None
        specs.append((kind, label, root, split))
    lists = list(args.list)
    if bare:
        kind, label, _, _ = bare[0]
        if len(lists) > 1:
            raise ValueError("a bare --dataset TYPE takes at most one --list")
        if args.root is None:
            raise ValueError(f"--dataset {kind} needs --root (or use --dataset {kind}=ROOT[:LIST])")
        specs.append((kind, label, args.root, lists[0] if lists else None))
    else:
        for lf in lists:
            root = args.root if args.root is not None else str(Path(lf).resolve().parent)
            specs.append(("folder", Path(lf).stem, root, lf))
    if not specs:
        raise ValueError(
            "no input: give --dataset TYPE[@LABEL]=ROOT[:LIST], --dataset TYPE --root ROOT, or --list"
        )
    labels = [s[1] for s in specs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"dataset labels must be unique, got {labels}; name groups with TYPE@LABEL")
    opts = _options(args, labels)
    sources = []
    for kind, label, root, split in specs:
        cls = DATASETS.get(kind)
        o = dict(opts[label])
        if kind == "folder" and args.depth_scale is not None and "depth_scale" not in o:
            o["depth_scale"] = args.depth_scale
        if split is not None and not Path(split).is_file():
            raise FileNotFoundError(f"list file not found: {split}")
        ds = cls(root, split_file=split, **o) if split is not None else cls(root, **o)
        sources.append(Source(label=label, dataset=ds, kind=kind, root=str(root), split=split, options=o))
    return sources


def run(args: argparse.Namespace) -> int:
    from anydepth.data.filtering.run import filter_index
    from anydepth.data.filtering.scores import ScoreParams
    from anydepth.data.filtering.select import SelectionConfig

    bin_range = None if args.bin_range == "sample" else _floats(args.bin_range, 2, "--bin-range")
    params = ScoreParams(
        far_plane=args.far_plane,
        min_depth=args.min_depth,
        bins=args.bins,
        bin_range=bin_range,  # type: ignore[arg-type]
        bin_space=args.bin_space,
        conc_low=args.conc_low,
        conc_high=args.conc_high,
        dist_weights=_floats(args.dist_weights, 3, "--dist-weights"),  # type: ignore[arg-type]
        gradient=args.gradient,
        edge_quantile=args.edge_quantile,
    )
    selection = SelectionConfig(
        min_valid=args.min_valid,
        drop_dist=args.drop_dist,
        drop_grad=args.drop_grad,
        mode=args.mode,
        scope=args.scope,
    )
    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    from anydepth.shard import resolve_shard

    shard = resolve_shard(args.shard)
    sources = build_sources(args)

    bar = None
    progress = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=sum(len(s.dataset) for s in sources), unit="sample", desc="filter", file=sys.stderr)

        def progress(done: int, total: int) -> None:
            assert bar is not None
            bar.update(done - bar.n)
            if done >= total:
                bar.close()  # scoring is over; the outputs and plots follow

    try:
        res = filter_index(
            sources,
            args.output,
            params=params,
            selection=selection,
            workers=args.workers,
            chunksize=args.chunksize,
            start_method=args.start_method,
            check_rgb=args.check_rgb,
            limit=args.limit,
            plots=not args.no_plots,
            gallery=args.gallery,
            parquet=args.parquet,
            progress=progress,
            shard=shard,
        )
    except KeyboardInterrupt:  # Ctrl-C: every scored sample is already in the progress cache
        if bar is not None:
            bar.close()
        print(
            f"anydepth filter: interrupted; the samples scored so far are kept in {args.output}: rerun the same "
            "command to continue",
            file=sys.stderr,
        )
        return 130
    finally:
        if bar is not None:
            bar.close()
    rate = res.n_scored / res.seconds if res.seconds > 0 else float("nan")
    if not args.quiet:
        print(
            f"scored {res.n_scored} samples in {res.seconds:.1f} s ({rate:.1f}/s with {args.workers} worker(s)); "
            f"{res.n_resumed} taken from the previous run"
        )
    if not res.complete:
        if shard is not None and (args.limit is None or res.n_resumed + res.n_scored >= res.n_total):
            print(f"shard {shard} done ({res.n_total} samples) in {res.output}; when every shard is done, merge by "
                  "running the same command without --shard (and outside torchrun)")  # fmt: skip
            return 1 if args.strict and res.n_unreadable else 0
        print(f"stopped after {res.n_scored} new samples (--limit); rerun the same command to continue")
        return 0
    if not args.quiet:
        a = res.summary["all"]
        for lab, c in res.summary["datasets"].items():
            print(
                f"  {lab}: {c['total']} samples, kept {c['kept']} ({c['kept_pct']}%), removed {c['removed']}"
            )
        print(f"total: kept {a['kept']} of {a['total']}; outputs in {res.output}")
    dead = [lab for lab, c in res.summary["datasets"].items() if c["total"] and not c["readable"]]
    for lab in dead:
        c = res.summary["datasets"][lab]
        print(
            f"error: dataset {lab}: none of its {c['total']} samples could be read; first error: {c['first_error']}",
            file=sys.stderr,
        )
    if dead:
        return 1
    if res.n_unreadable:
        print(
            f"warning: {res.n_unreadable} unreadable sample(s) excluded; see reason 'unreadable' in "
            f"{Path(res.output) / 'lists'}/*.removed.txt and the 'error' column of scores.csv",
            file=sys.stderr,
        )
        if args.strict:
            return 1
    return 0
