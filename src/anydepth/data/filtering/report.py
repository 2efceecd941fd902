"""Outputs of the data filter: scores table, kept/removed lists, per-dataset summary (JSON + markdown), plots.

The summary mirrors the paper: counts per dataset as in its Table 1 (total, kept, removed, kept %) with the
removal reasons broken down, and mean scores per dataset as in its Fig. 5 (``S_dist``, ``S_grad``, ``S_total``
over every readable sample, plus the sub-scores and the means over the kept samples). Plots use matplotlib
(Agg backend, imported inside the plotting functions).
"""

from __future__ import annotations

import csv
import io as _stdio
import logging
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from anydepth.atomic import json_text
from anydepth.data import io
from anydepth.data.filtering.scores import SCORE_FIELDS, ScoreParams, gradient_magnitude, valid_mask
from anydepth.data.filtering.select import REASONS, SelectionConfig, SelectionResult
from anydepth.extras import require

__all__ = [
    "read_scores",
    "ID_COLUMNS",
    "PROGRESS_COLUMNS",
    "TABLE_COLUMNS",
    "summarize",
    "summary_markdown",
    "write_outputs",
    "write_plots",
    "PAPER_TABLE1",
    "PAPER_FIG5",
]

logger = logging.getLogger(__name__)

#: The paper's Table 1: dataset -> (total, kept, removed).
PAPER_TABLE1: dict[str, tuple[int, int, int]] = {
    "hypersim": (39648, 26912, 12736),
    "vkitti2": (19559, 12643, 6916),
    "blendedmvs": (115142, 74838, 40304),
    "irs": (103316, 68211, 35105),
    "tartanair": (306637, 186693, 119944),
}
#: The paper's Fig. 5 (bars read from the project's figures): dataset -> (S_dist, S_grad, S_total).
PAPER_FIG5: dict[str, tuple[float, float, float]] = {
    "hypersim": (0.612, 0.548, 0.580),
    "vkitti2": (0.388, 0.421, 0.404),
    "blendedmvs": (0.435, 0.590, 0.512),
    "irs": (0.443, 0.527, 0.485),
    "tartanair": (0.328, 0.454, 0.391),
}
ID_COLUMNS: tuple[str, ...] = ("dataset", "index", "rgb_path", "depth_path", "status", "error")
PROGRESS_COLUMNS: tuple[str, ...] = ID_COLUMNS + SCORE_FIELDS
TABLE_COLUMNS: tuple[str, ...] = PROGRESS_COLUMNS + ("kept", "reason")
INT_COLUMNS = frozenset({"index", "height", "width", "n_valid", "n_grad", "kept"})
FLOAT_COLUMNS = frozenset(SCORE_FIELDS) - INT_COLUMNS


# -- the table format (CSV; floats as shortest round-trip repr) ------------------------------------------
def format_cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(int(v))
    if isinstance(v, float):
        return repr(v)  # shortest round-trip representation: resumed values equal fresh ones exactly
    return str(v)


def parse_cell(col: str, s: str) -> Any:
    if col in INT_COLUMNS:
        return int(s) if s != "" else None
    if col in FLOAT_COLUMNS:
        return float(s) if s != "" else None
    return s


def csv_line(values: Iterable[Any]) -> str:
    buf = _stdio.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([format_cell(v) for v in values])
    return buf.getvalue()


def read_scores(path: str | os.PathLike[str], columns: Sequence[str] = TABLE_COLUMNS) -> list[dict[str, Any]]:
    """Read a scores table written by the filter (``scores.csv`` or the progress cache) into typed rows.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the header is not the expected one.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"scores table not found: {p}")
    with open(p, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or tuple(header) != tuple(columns):
            raise ValueError(f"{p}: unexpected header {header}; expected {list(columns)}")
        return [{c: parse_cell(c, v) for c, v in zip(columns, row, strict=True)} for row in reader if row]


MEAN_KEYS: tuple[str, ...] = ("s_dist", "s_grad", "s_total", "s_chi2", "s_conc", "s_range", "valid_fraction")


def _mean(rows: Sequence[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None and not math.isnan(r[key])]
    return float(math.fsum(vals) / len(vals)) if vals else None


def _counts(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    reasons = [r["reason"] for r in rows]
    total = len(rows)
    kept = reasons.count("")
    c: dict[str, Any] = {"total": total, "kept": kept, "removed": total - kept}
    c["kept_pct"] = round(100.0 * kept / total, 2) if total else None
    c["removed_by"] = {k: reasons.count(k) for k in REASONS}
    ok = [r for r in rows if r["status"] == "ok"]
    c["readable"] = len(ok)
    c["first_error"] = next((f"{r['rgb_path']}: {r['error']}" for r in rows if r["status"] != "ok"), None)
    c["eligible"] = len(ok) - c["removed_by"]["low_valid"]
    c["mean"] = {k: _mean(ok, k) for k in MEAN_KEYS}
    c["mean_kept"] = {k: _mean([r for r in ok if r["reason"] == ""], k) for k in MEAN_KEYS}
    return c


def summarize(
    table: Sequence[dict[str, Any]],
    result: SelectionResult,
    *,
    selection: SelectionConfig,
    params: ScoreParams,
    labels: Sequence[str],
) -> dict[str, Any]:
    """The run summary: per-dataset counts, mean scores and cut-offs, plus the overall totals.

    Args:
        table: final rows (with ``reason``), in input order.
        result: the selection result (for the cut-offs).
        selection, params: recorded in the summary.
        labels: dataset labels in input order.

    Returns:
        A JSON-serialisable dict (deterministic: no timestamps).
    """
    per: dict[str, Any] = {}
    for lab in labels:
        rows = [r for r in table if r["dataset"] == lab]
        c = _counts(rows)
        cut = result.groups.get(lab if selection.scope == "dataset" else "*")
        c["cutoff"] = {
            "min_valid": selection.min_valid,
            "s_dist": cut.cutoff_s_dist if cut else None,
            "s_grad": cut.cutoff_s_grad if cut else None,
            "n_drop_s_dist": cut.n_drop_dist if cut else 0,
            "n_drop_s_grad": cut.n_drop_grad if cut else 0,
        }
        per[lab] = c
    return {
        "selection": selection.to_dict(),
        "score_params": params.to_dict(),
        "datasets": per,
        "all": _counts(list(table)),
    }


def _f(v: float | None, nd: int = 3) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def summary_markdown(summary: dict[str, Any]) -> str:
    """Markdown tables of a summary: counts (Table 1 style), removal reasons, mean scores (Fig. 5 style)."""
    sel = summary["selection"]
    per = summary["datasets"]
    lines = [
        "# Data-quality filter summary",
        "",
        f"Rule: drop valid fraction < {sel['min_valid']}; then the lowest {sel['drop_dist']:.0%} by S_dist and "
        f"the lowest {sel['drop_grad']:.0%} by S_grad ({sel['mode']}, per {sel['scope']}).",
        "",
        "## Counts (as the paper's Table 1)",
        "",
        "| Dataset | Total | Kept | Removed | Kept % | Paper kept % |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for lab, c in [*per.items(), ("**all**", summary["all"])]:
        ref = PAPER_TABLE1.get(lab)
        paper = f"{100.0 * ref[1] / ref[0]:.1f}" if ref else "-"
        lines.append(
            f"| {lab} | {c['total']} | {c['kept']} | {c['removed']} | {_f(c['kept_pct'], 1)} | {paper} |"
        )
    lines += [
        "",
        "## Removal reasons",
        "",
        "| Dataset | " + " | ".join(REASONS) + " | S_dist cut-off | S_grad cut-off |",
        "|---|" + "---:|" * (len(REASONS) + 2),
    ]
    for lab, c in per.items():
        rb = c["removed_by"]
        lines.append(
            f"| {lab} | "
            + " | ".join(str(rb[k]) for k in REASONS)
            + f" | {_f(c['cutoff']['s_dist'], 4)} | {_f(c['cutoff']['s_grad'], 4)} |"
        )
    lines += [
        "",
        "## Mean scores over readable samples (as the paper's Fig. 5)",
        "",
        "| Dataset | S_dist | S_grad | S_total | S_chi2 | S_conc | S_range | valid | "
        "kept: S_dist | kept: S_grad | Paper S_dist / S_grad / S_total |",
        "|---|" + "---:|" * 10,
    ]
    for lab, c in [*per.items(), ("**all**", summary["all"])]:
        m, mk = c["mean"], c["mean_kept"]
        ref5 = PAPER_FIG5.get(lab)
        paper = " / ".join(f"{x:.3f}" for x in ref5) if ref5 else "-"
        lines.append(
            f"| {lab} | {_f(m['s_dist'])} | {_f(m['s_grad'])} | {_f(m['s_total'])} | {_f(m['s_chi2'])} | "
            f"{_f(m['s_conc'])} | {_f(m['s_range'])} | {_f(m['valid_fraction'])} | {_f(mk['s_dist'])} | "
            f"{_f(mk['s_grad'])} | {paper} |"
        )
    lines.append("")
    return "\n".join(lines)


def _publish(tmp: Path) -> None:
    """Give a finished temporary file the usual permissions (``mkstemp`` creates it owner-only)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)


def write_text_atomic(path: Path, text: str) -> Path:
    with io.atomic_path(path, overwrite=True) as tmp:
        tmp.write_text(text, encoding="utf-8")
        _publish(tmp)
    return path


def write_outputs(
    out: Path,
    table: Sequence[dict[str, Any]],
    summary: dict[str, Any],
    *,
    sources: Sequence[Any],
    parquet: bool | None = None,
) -> list[Path]:
    """Write ``scores.csv`` (+ parquet), the kept/removed lists and the summary files (all atomically).

    Args:
        parquet: ``True``: also write ``scores.parquet`` (ImportError naming the ``parquet`` extra without
            pyarrow); ``None``: when pyarrow is installed; ``False``: never.

    Returns:
        the paths written.
    """
    files: list[Path] = []
    text = csv_line(TABLE_COLUMNS) + "".join(csv_line(r[c] for c in TABLE_COLUMNS) for r in table)
    files.append(write_text_atomic(out / "scores.csv", text))
    if parquet or parquet is None:
        try:
            pa = require("pyarrow", "writing scores.parquet")
            pq = require("pyarrow.parquet", "writing scores.parquet")
        except ImportError as e:
            if parquet:
                raise
            logger.info("%s; scores.parquet not written", e)
        else:
            cols = {c: [r[c] for r in table] for c in TABLE_COLUMNS}
            with io.atomic_path(out / "scores.parquet", overwrite=True) as tmp:
                pq.write_table(pa.table(cols), tmp)
                _publish(tmp)
            files.append(out / "scores.parquet")
    by_label: dict[str, list[dict[str, Any]]] = {}
    for r in table:
        by_label.setdefault(r["dataset"], []).append(r)
    for src in sources:
        rows = by_label.get(src.label, [])
        kept = "".join(src.row_text(r["index"]) + "\n" for r in rows if r["reason"] == "")
        removed = "# rgb_path depth_path reason (removed by anydepth filter)\n" + "".join(
            f"{r['rgb_path']} {r['depth_path']} {r['reason']}\n" for r in rows if r["reason"] != ""
        )
        files.append(write_text_atomic(out / "lists" / f"{src.label}.kept.txt", kept))
        files.append(write_text_atomic(out / "lists" / f"{src.label}.removed.txt", removed))
    files.append(
        write_text_atomic(out / "summary.json", json_text(summary, nonfinite="null", indent=2) + "\n")
    )
    files.append(write_text_atomic(out / "summary.md", summary_markdown(summary)))
    return files


# -- plots ---------------------------------------------------------------------------------------------------
def _savefig(fig: Any, path: Path, dpi: int = 80) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with io.atomic_path(path, overwrite=True) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, metadata={"Software": None})
        _publish(tmp)
    return path


def plot_histograms(
    rows: Sequence[dict[str, Any]], cut: dict[str, Any], path: Path, *, title: str, min_valid: float
) -> Path:
    """Histograms of ``S_dist``, ``S_grad``, ``S_total`` and the valid fraction, with the cut-offs marked."""
    matplotlib = require("matplotlib", "filter plots (--no-plots skips them)")

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["status"] == "ok"]
    elig = [r for r in ok if r["valid_fraction"] >= min_valid]
    panels = [
        ("s_dist", "S_dist", cut.get("s_dist")),
        ("s_grad", "S_grad", cut.get("s_grad")),
        ("s_total", "S_total", None),
        ("valid_fraction", "valid fraction", min_valid),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(13, 2.8))
    bins = np.linspace(0.0, 1.0, 41)
    for ax, (key, name, line) in zip(axes, panels, strict=True):
        src = ok if key == "valid_fraction" else elig
        vals = np.array([r[key] for r in src], dtype=np.float64)
        kept = np.array([r[key] for r in src if r["reason"] == ""], dtype=np.float64)
        ax.hist(vals, bins=bins, color="#bbbbbb", label="all", histtype="stepfilled")
        ax.hist(kept, bins=bins, color="#3b75af", label="kept", histtype="stepfilled")
        if line is not None:
            ax.axvline(line, color="#d62728", lw=1.5, ls="--", label=f"cut {line:.3f}")
        mean = float(vals.mean()) if vals.size else float("nan")
        ax.set_title(f"{name} (mean {mean:.3f})", fontsize=9)
        ax.set_xlim(0, 1)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, loc="upper left")
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.04, right=0.99, bottom=0.1, top=0.8, wspace=0.2)
    p = _savefig(fig, path)
    plt.close(fig)
    return p


def _depth_rgb(depth: np.ndarray, valid: np.ndarray, cmap: Any) -> np.ndarray:
    img = np.zeros(depth.shape + (3,), np.float64)
    if valid.any():
        v = depth[valid].astype(np.float64)
        lo, hi = np.percentile(v, [2, 98])
        x = np.clip((depth - lo) / max(hi - lo, 1e-12), 0, 1)
        img = cmap(1.0 - x)[..., :3]  # near = bright
        img[~valid] = 0.0
    return img


def plot_gallery(items: Sequence[dict[str, Any]], path: Path, *, title: str, params: ScoreParams) -> Path:
    """A gallery: one row per sample (RGB if readable, depth map, gradient magnitude map) with its scores.

    Args:
        items: dicts with ``depth`` ``[H,W]`` metres, ``valid`` ``[H,W]``, optional ``rgb`` uint8 ``[H,W,3]``,
            and ``caption``.
        path: PNG to write.
        title: figure title.
        params: score parameters (valid mask and gradient operator).
    """
    matplotlib = require("matplotlib", "filter plots (--no-plots skips them)")

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(items))
    fig, axes = plt.subplots(n, 3, figsize=(7.5, 1.9 * n), squeeze=False)
    cmap = plt.get_cmap("turbo")
    gmap = plt.get_cmap("magma").with_extremes(
        bad="#1f77b4"
    )  # blue: no gradient (invalid or next to invalid)
    for row, it in zip(axes, items, strict=False):
        d = np.asarray(it["depth"])
        m = valid_mask(d, it.get("valid"), far_plane=params.far_plane, min_depth=params.min_depth)
        g = gradient_magnitude(d, it.get("valid"), params)
        st = max(1, int(math.ceil(max(d.shape) / 240)))  # display at <= 240 px (scores use full resolution)
        d, m, g = d[::st, ::st], m[::st, ::st], g[::st, ::st]
        if it.get("rgb") is not None:
            row[0].imshow(it["rgb"][::st, ::st], interpolation="nearest")
        row[1].imshow(_depth_rgb(d, m, cmap), interpolation="nearest")
        fin = np.isfinite(g)
        if fin.any():
            # clipped at the edge threshold: the smooth region's variation is visible, edges saturate
            hi = float(np.quantile(g[fin], params.edge_quantile)) or 1.0
            row[2].imshow(
                np.where(fin, np.minimum(g, hi), np.nan), cmap=gmap, vmin=0, vmax=hi, interpolation="nearest"
            )
        row[0].set_ylabel(it["caption"], fontsize=6, rotation=0, ha="right", va="center")
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    heads = ("RGB", "depth (invalid black)", "|G| clipped at edge threshold")
    for ax, name in zip(axes[0], heads, strict=True):
        ax.set_title(name, fontsize=8)
    for row in axes[len(items) :]:
        for ax in row:
            ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(left=0.2, right=0.99, bottom=0.01, top=1 - 0.45 / (1.9 * n), wspace=0.04, hspace=0.06)
    p = _savefig(fig, path, dpi=70)
    plt.close(fig)
    return p


def plot_mean_scores(summary: dict[str, Any], path: Path) -> Path:
    """Bar chart of the mean ``S_dist``, ``S_grad`` and ``S_total`` per dataset (the paper's Fig. 5 layout)."""
    matplotlib = require("matplotlib", "filter plots (--no-plots skips them)")

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(summary["datasets"])
    keys = [("s_dist", "S_dist"), ("s_grad", "S_grad"), ("s_total", "S_total")]
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(labels) + 1.5), 2.8))
    for j, (k, name) in enumerate(keys):
        vals = [summary["datasets"][lab]["mean"][k] or 0.0 for lab in labels]
        bars = ax.bar(x + (j - 1) * 0.27, vals, width=0.27, label=name)
        for b, v in zip(bars, vals, strict=True):
            ax.text(b.get_x() + b.get_width() / 2, v + 0.01, f"{v:.2f}", ha="center", fontsize=6)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("mean score", fontsize=8)
    ax.legend(fontsize=7, ncol=3, loc="upper right")
    fig.subplots_adjust(left=0.1, right=0.98, bottom=0.12, top=0.95)
    p = _savefig(fig, path)
    plt.close(fig)
    return p


def write_plots(
    out: Path,
    table: Sequence[dict[str, Any]],
    result: SelectionResult,
    *,
    selection: SelectionConfig,
    params: ScoreParams,
    sources: Sequence[Any],
    gallery: int = 6,
) -> list[Path]:
    """Write ``plots/``: histograms per dataset, galleries of the lowest/highest ``S_total``, mean-score bars.

    Gallery samples are reloaded through each source's reader (``load_depth``, ``load_image`` when present).
    """
    files: list[Path] = []
    summary_groups = {
        lab: result.groups.get(lab if selection.scope == "dataset" else "*")
        for lab in (s.label for s in sources)
    }
    by_label: dict[str, list[dict[str, Any]]] = {}
    for r in table:
        by_label.setdefault(r["dataset"], []).append(r)
    for src in sources:
        rows = by_label.get(src.label, [])
        cut = summary_groups[src.label]
        cutd = {"s_dist": cut.cutoff_s_dist, "s_grad": cut.cutoff_s_grad} if cut else {}
        files.append(
            plot_histograms(
                rows,
                cutd,
                out / "plots" / f"hist_{src.label}.png",
                title=f"{src.label}: {len(rows)} samples",
                min_valid=selection.min_valid,
            )
        )
        if gallery <= 0:
            continue
        elig = [r for r in rows if r["status"] == "ok" and r["valid_fraction"] >= selection.min_valid]
        ranked = sorted(elig, key=lambda r: (r["s_total"], r["rgb_path"], r["depth_path"], r["index"]))
        for which, pick in (("low", ranked[:gallery]), ("high", ranked[::-1][:gallery])):
            items = []
            for r in pick:
                try:
                    depth, valid = src.dataset.load_depth(r["index"])
                except Exception as e:  # the sample was readable during scoring; report and skip
                    logger.warning("gallery: cannot reload %s[%d]: %s", src.label, r["index"], e)
                    continue
                rgb = None
                load_image = getattr(src.dataset, "load_image", None)
                if load_image is not None:
                    try:
                        rgb = load_image(r["index"])
                    except Exception as e:
                        logger.info("gallery: no RGB for %s[%d]: %s", src.label, r["index"], e)
                caption = (
                    f"{Path(r['rgb_path']).name}\nS_dist {r['s_dist']:.3f}\nS_grad {r['s_grad']:.3f}\n"
                    f"S_total {r['s_total']:.3f}\n{r['reason'] or 'kept'}"
                )
                items.append({"depth": depth, "valid": valid, "rgb": rgb, "caption": caption})
            if items:
                files.append(
                    plot_gallery(
                        items,
                        out / "plots" / f"gallery_{src.label}_{which}.png",
                        title=f"{src.label}: {which}est S_total",
                        params=params,
                    )
                )
    files.append(
        plot_mean_scores(
            _summary_for_bars(table, [s.label for s in sources]), out / "plots" / "mean_scores.png"
        )
    )
    return files


def _summary_for_bars(table: Sequence[dict[str, Any]], labels: Sequence[str]) -> dict[str, Any]:
    per = {}
    for lab in labels:
        ok = [r for r in table if r["dataset"] == lab and r["status"] == "ok"]
        per[lab] = {"mean": {k: _mean(ok, k) for k in ("s_dist", "s_grad", "s_total")}}
    return {"datasets": per}
