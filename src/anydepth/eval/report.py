"""Evaluation outputs: ``metrics.json``, ``per_sample.csv`` and a markdown table in the paper's format, plus
loading saved results and side-by-side comparison tables.

``metrics.json`` (schema 1)::

    {"schema": "anydepth.eval/1", "label": ..., "anydepth_version": ..., "git_commit": ..., "created_utc": ...,
     "command": [...], "predictor": {...},
     "benchmarks": {"nyuv2": {"metrics": {"abs_rel": ..., ...}, "num_samples": 654, "complete": true,
                              "alignment": ..., "crop": ..., "eval_mask": ..., "processing_sizes": ..., ...}},
     "errors": {"<benchmark>": "<message>"}}

Tables print AbsRel and the δ accuracies ×100 (as papers do); other metrics in their units.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from anydepth.atomic import atomic_path
from anydepth.eval.benchmarks import PAPER_BENCHMARKS, get_benchmark
from anydepth.eval.evaluate import BenchmarkResult
from anydepth.eval.metrics import DEFAULT_METRICS, METRICS

__all__ = [
    "SCHEMA",
    "OUTPUT_FILES",
    "check_output_dir",
    "build_report",
    "write_report",
    "per_sample_csv",
    "read_per_sample_csv",
    "paper_table",
    "load_result",
    "compare_table",
    "format_value",
]

SCHEMA = "anydepth.eval/1"

#: Files ``write_report`` creates in the output directory.
OUTPUT_FILES: tuple[str, ...] = ("metrics.json", "per_sample.csv", "table.md")


def _json_safe(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, Mapping):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_json_safe(v) for v in x]
    return x


def _json_float(x: Any) -> Any:
    if isinstance(x, str) and x in ("nan", "inf", "-inf"):
        return float(x)
    return x


def check_output_dir(out_dir: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Refuse to reuse an output directory that already holds result files, unless ``overwrite``.

    Raises:
        FileExistsError: naming the existing files.
        NotADirectoryError: ``out_dir`` exists and is not a directory.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"output path {out} exists and is not a directory")
    existing = [str(out / f) for f in OUTPUT_FILES if (out / f).exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"output directory {out} already holds {', '.join(existing)} (refusing to overwrite; use --overwrite)"
        )
    return out


def build_report(
    results: Sequence[BenchmarkResult],
    *,
    label: str,
    run_meta: Mapping[str, Any] | None = None,
    errors: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The ``metrics.json`` document for ``results`` (means and metadata, no per-sample rows)."""
    doc: dict[str, Any] = {"schema": SCHEMA, "label": label, **dict(run_meta or {})}
    doc["benchmarks"] = {r.benchmark: r.to_dict() for r in results}
    doc["errors"] = dict(errors or {})
    return _json_safe(doc)


def per_sample_csv(results: Sequence[BenchmarkResult]) -> str:
    """CSV text with one row per scored image: ``benchmark,name,<metrics>,scale,shift,n_valid,...``."""
    extra_keys: list[str] = []
    metric_keys: list[str] = []
    for r in results:
        for row in r.per_sample:
            for k in row:
                if k == "name":
                    continue
                if k in METRICS:
                    if k not in metric_keys:
                        metric_keys.append(k)
                elif k not in extra_keys:
                    extra_keys.append(k)
    metric_keys.sort(key=lambda k: DEFAULT_METRICS.index(k))
    header = ["benchmark", "name", *metric_keys, *extra_keys]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in results:
        for row in r.per_sample:
            vals = [r.benchmark, row["name"]]
            for k in header[2:]:
                v = row.get(k, "")
                vals.append(repr(v) if isinstance(v, float) else v)
            w.writerow(vals)
    return buf.getvalue()


def _csv_value(text: str) -> Any:
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            pass
    return text


def read_per_sample_csv(path: str | os.PathLike[str]) -> dict[str, list[dict[str, Any]]]:
    """Read a ``per_sample.csv`` back: ``{benchmark: [row, ...]}`` with the rows ``per_sample_csv`` wrote.

    Numbers come back as the same ``int`` / ``float`` (floats are written with ``repr``, so exactly); an empty cell
    is a key the row did not have.

    Raises:
        FileNotFoundError: no such file. ValueError: not a per-sample table (no ``benchmark``/``name`` columns).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"per-sample table not found: {p}")
    with p.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or reader.fieldnames[:2] != ["benchmark", "name"]:
            raise ValueError(f"{p}: not a per_sample.csv (expected the columns benchmark,name,...)")
        out: dict[str, list[dict[str, Any]]] = {}
        for rec in reader:
            row: dict[str, Any] = {"name": rec["name"]}
            row.update(
                {k: _csv_value(v) for k, v in rec.items() if k not in ("benchmark", "name") and v != ""}
            )
            out.setdefault(rec["benchmark"], []).append(row)
    return out


def format_value(metric: str, value: float | None, digits: int = 1) -> str:
    """A metric for a table: ×100 for AbsRel and δ (``percent`` metrics), ``-`` for missing/NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    spec = METRICS.get(metric)
    v = value * 100.0 if spec is not None and spec.percent else value
    d = digits if spec is None or spec.percent or metric == "silog" else max(digits, 3)
    return f"{v:.{d}f}"


def _display(bench: str) -> str:
    try:
        return get_benchmark(bench).display_name
    except KeyError:
        return bench


def paper_table(
    rows: Sequence[tuple[str, Mapping[str, Mapping[str, Any]]]],
    *,
    benchmarks: Sequence[str] | None = None,
    metrics: Sequence[str] = ("abs_rel", "delta1"),
    digits: int = 1,
) -> str:
    """Markdown table in the paper's format: one row per method, one column per benchmark, cells ``m1 / m2``.

    Args:
        rows: ``(label, {benchmark: benchmark_dict})`` where ``benchmark_dict`` has ``metrics`` (and optionally
            ``complete``); incomplete results are marked with ``*``.
        benchmarks: columns (default: the paper's five that appear in any row, then the others).
        metrics: metrics per cell (default AbsRel and δ1, both ×100).
        digits: decimals.
    """
    present = {b for _, d in rows for b in d}
    if benchmarks is None:
        benchmarks = [b for b in PAPER_BENCHMARKS if b in present] + sorted(present - set(PAPER_BENCHMARKS))
    names = [("AbsRel" if m == "abs_rel" else "δ" + m[-1] if m.startswith("delta") else m) for m in metrics]
    arrows = ["↑" if m in METRICS and not METRICS[m].lower_is_better else "↓" for m in metrics]
    cell_title = " / ".join(f"{n}{a}" for n, a in zip(names, arrows, strict=True))
    lines = [
        "| Method | " + " | ".join(f"{_display(b)} {cell_title}" for b in benchmarks) + " |",
        "|---|" + "---|" * len(benchmarks),
    ]
    incomplete = False
    for label, benches in rows:
        cells = []
        for b in benchmarks:
            d = benches.get(b)
            if d is None:
                cells.append("–")
                continue
            vals = d.get("metrics", {})
            cell = " / ".join(format_value(m, _json_float(vals.get(m)), digits) for m in metrics)
            if not d.get("complete", True):
                cell += "*"
                incomplete = True
            cells.append(cell)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    pct = [n for n, m in zip(names, metrics, strict=True) if m in METRICS and METRICS[m].percent]
    notes = []
    if pct:
        notes.append(f"{', '.join(pct)} ×100.")
    if incomplete:
        notes.append("* incomplete benchmark (missing samples, a subset, or a limited run).")
    return "\n".join(lines) + ("\n\n" + " ".join(notes) if notes else "") + "\n"


def write_report(
    out_dir: str | os.PathLike[str],
    results: Sequence[BenchmarkResult],
    *,
    label: str,
    run_meta: Mapping[str, Any] | None = None,
    errors: Mapping[str, str] | None = None,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write ``metrics.json``, ``per_sample.csv`` and ``table.md`` into ``out_dir`` (each atomically).

    Raises:
        FileExistsError: an output file exists and ``overwrite`` is False (checked before anything is written).
    """
    out = check_output_dir(out_dir, overwrite=overwrite)
    out.mkdir(parents=True, exist_ok=True)
    doc = build_report(results, label=label, run_meta=run_meta, errors=errors)
    texts = {
        "metrics.json": json.dumps(doc, indent=2, allow_nan=False) + "\n",
        "per_sample.csv": per_sample_csv(results),
        "table.md": paper_table([(label, doc["benchmarks"])]),
    }
    paths: dict[str, Path] = {}
    for fname, text in texts.items():
        with atomic_path(out / fname, overwrite=overwrite) as tmp:
            tmp.write_text(text, encoding="utf-8")
        paths[fname] = out / fname
    return paths


def load_result(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a ``metrics.json`` (or the directory holding one).

    Raises:
        FileNotFoundError: no such file. ValueError: not JSON or not an ``anydepth eval`` result.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "metrics.json"
    if not p.is_file():
        raise FileNotFoundError(f"result file not found: {p}")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{p}: not a JSON file ({e})") from e
    if not isinstance(doc, dict) or "benchmarks" not in doc:
        raise ValueError(f"{p}: not an anydepth eval result (no 'benchmarks' key)")
    doc.setdefault("label", p.parent.name)
    doc["_path"] = str(p)
    return doc


def compare_table(
    docs: Sequence[Mapping[str, Any]],
    *,
    labels: Sequence[str] | None = None,
    benchmarks: Sequence[str] | None = None,
    metrics: Sequence[str] = ("abs_rel", "delta1"),
    digits: int = 1,
) -> str:
    """Side-by-side markdown table of several loaded results (``load_result``), one row per result."""
    if labels is not None and len(labels) != len(docs):
        raise ValueError(f"got {len(labels)} labels for {len(docs)} results")
    for m in metrics:
        if m not in METRICS:
            raise KeyError(f"unknown metric {m!r}; valid: {', '.join(METRICS)}")
    rows = [
        (labels[i] if labels else str(d.get("label", f"result{i}")), d["benchmarks"])
        for i, d in enumerate(docs)
    ]
    return paper_table(rows, benchmarks=benchmarks, metrics=metrics, digits=digits)
