"""Run the data filter over datasets: score every sample in parallel, resumably, then select and report.

``filter_index(sources, output, ...)`` is the public entry point (``anydepth filter`` only parses arguments and
calls it). Output directory layout::

    run.json                  score parameters and sources (checked when a run is resumed)
    scores.progress.csv       append-only cache, one row per scored sample in completion order (resume state)
    scores.csv                final table in input order: ids, status, every score, kept, reason
    scores.parquet            the same table, if pyarrow is installed (extra ``parquet``)
    lists/<label>.kept.txt    kept samples, lines copied verbatim from the input (same format, extra columns too)
    lists/<label>.removed.txt removed samples: ``rgb_path depth_path reason``
    summary.json, summary.md  counts per dataset (as the paper's Table 1) and mean scores (as its Fig. 5)
    plots/                    score histograms with the cut-offs, galleries of the lowest/highest samples

Resuming: rows are appended to ``scores.progress.csv`` and flushed as they complete. A rerun with the same
output directory, sources and score parameters skips every sample already scored (unreadable samples are tried
again) and rebuilds the final files, which are written atomically and sorted, so an interrupted-then-resumed run
gives byte-identical tables and lists to an uninterrupted one. Selection options may change between runs (the
cached scores are reused). Input data are only ever read.

Several processes or machines (``shard``, see :mod:`anydepth.shard`): shard ``K/N`` scores the samples at positions
``K, K+N, ...`` of the full sample list into its own run directory ``OUTPUT/shards/K-of-N/`` (resumable like a
whole run) and stops there. The merge is a run without a shard on the same ``OUTPUT``: it takes every shard's
cached scores as its resume state (scoring any sample no shard did), so its tables and lists are exactly those of a
single-process run.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import multiprocessing as mp
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anydepth.atomic import json_text
from anydepth.data import io
from anydepth.data.filtering import report
from anydepth.data.filtering.report import (
    ID_COLUMNS,
    INT_COLUMNS,
    PROGRESS_COLUMNS,
    TABLE_COLUMNS,
    csv_line,
    parse_cell,
    read_scores,
)
from anydepth.data.filtering.scores import SCORE_FIELDS, ScoreParams, quality_scores
from anydepth.data.filtering.select import SelectionConfig, SelectionResult, select
from anydepth.shard import SHARDS_DIR, Shard, is_complete, mark_complete, shard_dir, shard_dirs

__all__ = [
    "Source",
    "FilterResult",
    "filter_index",
    "score_sample",
    "read_scores",
    "ID_COLUMNS",
    "PROGRESS_COLUMNS",
    "TABLE_COLUMNS",
    "PROGRESS_FILE",
]

logger = logging.getLogger(__name__)

PROGRESS_FILE = "scores.progress.csv"
RUN_FILE = "run.json"
RUN_FORMAT = "anydepth.filter"
RUN_VERSION = 1


@dataclass
class Source:
    """One dataset to filter.

    Attributes:
        label: group name used in the tables, lists and the per-dataset rule (unique within a run).
        dataset: a reader with ``__len__``, ``pair(i) -> (rgb_rel, depth_rel)``, ``paths(i)`` and
            ``load_depth(i) -> (depth float32 [H,W] metres, valid bool [H,W])`` (any ``DepthDataset``).
        kind: reader name (``DATASETS`` key), recorded in ``run.json``.
        root: dataset root, recorded in ``run.json``.
        split: list file, if any.
        options: reader options, recorded in ``run.json``.
    """

    label: str
    dataset: Any
    kind: str = ""
    root: str = ""
    split: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "kind": self.kind,
            "root": self.root,
            "split": self.split,
            "options": {k: _jsonable(v) for k, v in sorted(self.options.items())},
            "count": len(self.dataset),
        }

    def row_text(self, i: int) -> str:
        """Line ``i`` of the input list as written (all columns), for the kept list."""
        rows = getattr(self.dataset, "rows", None)
        if rows is not None:
            return " ".join(str(c) for c in rows[i])
        return " ".join(self.dataset.pair(i))


@dataclass
class FilterResult:
    """What ``filter_index`` did.

    Attributes:
        complete: every sample is scored and the final outputs are written (False after ``limit`` stopped it).
        output: the output directory.
        n_total: samples in all sources.
        n_resumed: samples whose scores were taken from a previous run.
        n_scored: samples scored by this call.
        n_unreadable: samples that could not be read (listed with the reason).
        seconds: wall time of the scoring phase of this call.
        summary: the summary dict (also in ``summary.json``); empty if not complete.
        files: final output files written.
    """

    complete: bool
    output: Path
    n_total: int
    n_resumed: int
    n_scored: int
    n_unreadable: int = 0
    seconds: float = 0.0
    summary: dict[str, Any] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)


def _jsonable(v: Any) -> Any:
    if isinstance(v, str | int | float | bool) or v is None:
        return v
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    return str(v)


# -- scoring one sample (runs in worker processes) --------------------------------------------------------
def score_sample(
    dataset: Any, i: int, params: ScoreParams, *, label: str = "", check_rgb: bool = False
) -> dict[str, Any]:
    """Load sample ``i`` of ``dataset`` and score it; never raises for a bad sample.

    Returns:
        a row with ``PROGRESS_COLUMNS`` keys: ``status`` is ``"ok"``, or ``"error"`` with the reason in ``error``
        (missing or corrupt depth/RGB file, size mismatch ...) and empty scores.
    """
    rgb_rel, depth_rel = dataset.pair(i)
    row: dict[str, Any] = {
        "dataset": label,
        "index": int(i),
        "rgb_path": rgb_rel,
        "depth_path": depth_rel,
        "status": "ok",
        "error": "",
    }
    try:
        depth, valid = dataset.load_depth(i)
        rgb_path = dataset.paths(i)[0]
        # the RGB size from its header (cheap) by default, from the decoded pixels with check_rgb; a size
        # mismatch excludes the sample with its reason either way
        hw = io.read_image(rgb_path).shape[:2] if check_rgb else io.image_size(rgb_path)
        if tuple(hw) != tuple(depth.shape):
            raise ValueError(
                f"{rgb_path}: image size {tuple(hw)} differs from depth size {tuple(depth.shape)}"
            )
        q = quality_scores(depth, valid, params)
    except Exception as e:  # a bad sample is reported and excluded, never fatal
        text = " ".join(str(e).split())
        if not any(str(x) in text for x in (depth_rel, rgb_rel, *dataset.paths(i))):
            text = f"{depth_rel}: {text}"  # every reason names a file
        msg = f"{type(e).__name__}: {text}"
        row.update(status="error", error=msg[:500])
        row.update({k: None for k in SCORE_FIELDS})
        return row
    for k, v in q._asdict().items():
        row[k] = int(v) if k in INT_COLUMNS else float(v)
    return row


_WORKER: dict[str, Any] = {}


def _init_worker(datasets: list[Any], labels: list[str], params: ScoreParams, check_rgb: bool) -> None:
    _WORKER.update(datasets=datasets, labels=labels, params=params, check_rgb=check_rgb)


def _score_task(task: tuple[int, int]) -> dict[str, Any]:
    s, i = task
    return score_sample(
        _WORKER["datasets"][s],
        i,
        _WORKER["params"],
        label=_WORKER["labels"][s],
        check_rgb=_WORKER["check_rgb"],
    )


def _iter_scores(
    tasks: list[tuple[int, int]],
    sources: Sequence[Source],
    params: ScoreParams,
    *,
    workers: int,
    chunksize: int | None,
    start_method: str | None,
    check_rgb: bool,
) -> Iterator[dict[str, Any]]:
    """Yield one row per task, in completion order. Closing the generator stops the workers."""
    datasets = [s.dataset for s in sources]
    labels = [s.label for s in sources]
    if workers <= 1 or len(tasks) <= 1:
        _init_worker(datasets, labels, params, check_rgb)
        try:
            for t in tasks:
                yield _score_task(t)
        finally:
            _WORKER.clear()
        return
    method = start_method or ("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
    ctx = mp.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(["anydepth.data.filtering.run"])
    cs = chunksize or max(1, min(64, math.ceil(len(tasks) / (workers * 16))))
    pool = ctx.Pool(workers, initializer=_init_worker, initargs=(datasets, labels, params, check_rgb))
    try:
        yield from pool.imap_unordered(_score_task, tasks, chunksize=cs)
        pool.close()
    finally:
        pool.terminate()
        pool.join()


# -- the progress cache ------------------------------------------------------------------------------------
def _load_progress(path: Path) -> list[dict[str, Any]]:
    """Complete rows of the progress cache; a torn last line (killed mid-write) is dropped and the file repaired."""
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    if not lines:
        return []
    header = next(csv.reader([lines[0]]))
    if tuple(header) != PROGRESS_COLUMNS:
        raise ValueError(
            f"{path}: written by another version of the filter (header {header}); use a new --output directory"
        )
    good = [lines[0]]
    rows: list[dict[str, Any]] = []
    for ln in lines[1:]:
        if not ln.endswith("\n"):
            break  # torn final line
        try:
            vals = next(csv.reader([ln]))
            row = {c: parse_cell(c, v) for c, v in zip(PROGRESS_COLUMNS, vals, strict=True)}
        except (ValueError, StopIteration):
            logger.warning("%s: dropping a malformed line: %r", path, ln[:200])
            continue
        rows.append(row)
        good.append(ln)
    if len(good) != len(lines):
        report.write_text_atomic(path, "".join(good))
    return rows


def _prepare_output(out: Path, run_info: dict[str, Any]) -> bool:
    """Create or validate the output directory; returns True if it holds a previous run to resume."""
    run_file = out / RUN_FILE
    if run_file.exists():
        try:
            prev = json.loads(run_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{run_file}: not valid JSON: {e}") from e
        if prev.get("format") != RUN_FORMAT:
            raise ValueError(f"{run_file}: not an anydepth filter run")
        if prev.get("score_params") != run_info["score_params"]:
            raise ValueError(
                f"{out} holds scores computed with other score parameters ({prev.get('score_params')}); "
                "use a new --output directory"
            )
        if prev.get("sources") != run_info["sources"]:
            logger.info("%s: sources differ from the previous run; cached scores are matched per sample", out)
        return True
    if out.exists():
        if not out.is_dir():
            raise NotADirectoryError(f"output {out} exists and is not a directory")
        if any(p.name != SHARDS_DIR for p in out.iterdir()):
            raise FileExistsError(
                f"output directory {out} is not empty and holds no {RUN_FILE}; "
                "choose a new or empty directory (the filter never overwrites other files)"
            )
    out.mkdir(parents=True, exist_ok=True)
    report.write_text_atomic(run_file, json_text(run_info, indent=2, sort_keys=True) + "\n")
    return False


def _shard_caches(out: Path, run_info: dict[str, Any]) -> list[Path]:
    """Progress files of the shards of ``out`` (checked to hold scores computed with the same parameters)."""
    caches = []
    found = shard_dirs(out)
    for sh, d in found:
        run_file = d / RUN_FILE
        if not run_file.is_file():
            continue
        prev = json.loads(run_file.read_text(encoding="utf-8"))
        if prev.get("score_params") != run_info["score_params"]:
            raise ValueError(f"{d}: shard {sh} was scored with other score parameters; use the same options")
        if not is_complete(d):
            logger.warning("%s: shard %s is not finished; its missing samples are scored now", d, sh)
        caches.append(d / PROGRESS_FILE)
    if found and len(found) < found[0][0].count:
        logger.warning(
            "%s: %d of %d shards present; the others' samples are scored now",
            out,
            len(found),
            found[0][0].count,
        )
    return caches


# -- the public entry point --------------------------------------------------------------------------------
def filter_index(
    sources: Sequence[Source],
    output: str | os.PathLike[str],
    *,
    params: ScoreParams | None = None,
    selection: SelectionConfig | None = None,
    workers: int = 1,
    chunksize: int | None = None,
    start_method: str | None = None,
    check_rgb: bool = False,
    limit: int | None = None,
    plots: bool = True,
    gallery: int = 6,
    parquet: bool | None = None,
    progress: Callable[[int, int], None] | None = None,
    shard: Shard | None = None,
) -> FilterResult:
    """Score every sample of ``sources``, apply the selection rule and write the outputs to ``output``.

    Args:
        sources: datasets to filter (labels must be unique).
        output: output directory: new, empty, or one of a previous run to resume (see module docstring).
        params: score parameters (defaults: the paper's).
        selection: selection rule options (defaults: the paper's).
        workers: scoring processes (1 = in this process).
        chunksize: samples per task sent to a worker (default: about 16 tasks per worker, at most 64).
        start_method: multiprocessing start method (default ``forkserver`` where available, else ``spawn``).
        check_rgb: also decode every RGB file and compare its size with the depth (else only its existence).
        limit: score at most this many new samples, then stop without writing the final outputs (the scores
            are kept for the next run); for tests and dry runs.
        plots: write the histograms and galleries (needs matplotlib).
        gallery: samples per gallery (lowest and highest ``S_total`` per dataset); 0 disables galleries.
        parquet: also write ``scores.parquet``: ``None`` when pyarrow is installed, ``True`` always (ImportError
            naming the ``parquet`` extra without it), ``False`` never.
        progress: called as ``progress(done, total)`` after every sample.
        shard: score only this shard's samples into ``output/shards/K-of-N`` and stop (``complete`` is False);
            a later call without ``shard`` on the same ``output`` merges the shards (see module docstring).

    Returns:
        :class:`FilterResult`.

    Raises:
        ValueError: duplicate labels, or ``output`` holds a run with other score parameters.
        FileExistsError: ``output`` is a non-empty directory that is not a filter run.
    """
    params = params or ScoreParams()
    selection = selection or SelectionConfig()
    labels = [s.label for s in sources]
    if len(set(labels)) != len(labels):
        raise ValueError(f"dataset labels must be unique, got {labels}")
    for lab in labels:
        if not lab or any(ch in lab for ch in "/\\ \t\n"):
            raise ValueError(f"invalid dataset label {lab!r} (no spaces or slashes)")
    top = Path(output)
    out = top if shard is None else shard_dir(top, shard)
    run_info = {
        "format": RUN_FORMAT,
        "version": RUN_VERSION,
        "score_params": params.to_dict(),
        "sources": [s.describe() for s in sources],
    }
    resumed = _prepare_output(out, run_info)
    prog_path = out / PROGRESS_FILE

    # previous scores, matched per (label, index) and checked against the current list
    done: dict[tuple[str, int], dict[str, Any]] = {}
    caches = [prog_path] if resumed else []
    if shard is None:
        caches = _shard_caches(top, run_info) + caches  # merging: this run's own rows come last and win
    for cache in caches:
        for row in _load_progress(cache):
            done[(row["dataset"], row["index"])] = row  # the last row of a sample wins
    by_label = {s.label: s for s in sources}
    for (lab, i), row in list(done.items()):
        src = by_label.get(lab)
        if src is None or i >= len(src.dataset):
            del done[(lab, i)]
            continue
        if tuple(src.dataset.pair(i)) != (row["rgb_path"], row["depth_path"]):
            raise ValueError(
                f"{prog_path}: sample {lab}[{i}] was {row['rgb_path']} {row['depth_path']} in the previous run "
                f"but is {' '.join(src.dataset.pair(i))} now; use a new --output directory"
            )
    everything = [(si, i) for si, s in enumerate(sources) for i in range(len(s.dataset))]
    if shard is not None:
        everything = shard.take(everything)
    n_total = len(everything)
    tasks = [
        (si, i)
        for si, i in everything
        if (sources[si].label, i) not in done or done[(sources[si].label, i)]["status"] != "ok"
    ]
    n_resumed = n_total - len(tasks)
    if resumed:
        logger.info("resuming %s: %d of %d samples already scored", out, n_resumed, n_total)
    todo = tasks if limit is None else tasks[: max(0, limit)]

    if not prog_path.exists():
        prog_path.write_text(csv_line(PROGRESS_COLUMNS), encoding="utf-8")
    t0 = time.perf_counter()
    n_new = 0
    if progress is not None:
        progress(n_resumed, n_total)
    with open(prog_path, "a", encoding="utf-8", newline="") as f:
        rows = _iter_scores(
            todo,
            sources,
            params,
            workers=workers,
            chunksize=chunksize,
            start_method=start_method,
            check_rgb=check_rgb,
        )
        try:
            for row in rows:
                f.write(csv_line(row[c] for c in PROGRESS_COLUMNS))
                f.flush()
                done[(row["dataset"], row["index"])] = row
                n_new += 1
                if progress is not None:
                    progress(n_resumed + n_new, n_total)
        finally:
            close = getattr(rows, "close", None)
            if close is not None:
                close()
    seconds = time.perf_counter() - t0
    n_bad = sum(1 for r in done.values() if r["status"] != "ok")
    if len(todo) < len(tasks):
        logger.info("stopped after %d new samples (limit); rerun to continue", n_new)
        return FilterResult(False, out, n_total, n_resumed, n_new, n_bad, seconds)
    if shard is not None:
        mark_complete(out, shard, {"samples": n_total, "unreadable": n_bad})
        logger.info(
            "shard %s scored (%d samples); merge with a run without a shard on %s", shard, n_total, top
        )
        return FilterResult(False, out, n_total, n_resumed, n_new, n_bad, seconds)

    # final table in input order; every value is a Python int/float/str whose text form round-trips exactly, so
    # a resumed run (values parsed from the cache) and a fresh run hold identical values
    table = [done[(s.label, i)] for s in sources for i in range(len(s.dataset))]
    result: SelectionResult = select(table, selection)
    for r, reason in zip(table, result.reasons, strict=True):
        r["kept"] = int(reason == "")
        r["reason"] = reason
    summary = report.summarize(table, result, selection=selection, params=params, labels=labels)
    files = report.write_outputs(
        out,
        table,
        summary,
        sources=sources,
        parquet=parquet,
    )
    if plots:
        files += report.write_plots(
            out, table, result, selection=selection, params=params, sources=sources, gallery=gallery
        )
    return FilterResult(True, out, n_total, n_resumed, n_new, n_bad, seconds, summary, files)
