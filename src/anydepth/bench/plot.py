"""Plots of benchmark rows in the style of the AnyDepth paper's Figs. 2-3 (FLOPs and latency vs resolution).

Uses matplotlib's object API with the Agg canvas (no pyplot, no global backend switch); matplotlib is an
optional dependency imported inside the function.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from anydepth.atomic import atomic_path
from anydepth.extras import require

__all__ = ["plot_rows"]


def _series(rows: Sequence[Any], value: str, key_fields: Sequence[str]) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = defaultdict(list)
    seen: set[tuple[str, int]] = set()
    for r in rows:
        v = getattr(r, value)
        if v is None:
            continue
        label = " ".join(str(getattr(r, f)) for f in key_fields)
        if (label, r.resolution) in seen:
            continue
        seen.add((label, r.resolution))
        out[label].append((int(r.resolution), float(v)))
    return {k: sorted(v) for k, v in out.items()}


def plot_rows(
    rows: Sequence[Any], path: str | os.PathLike[str], *, overwrite: bool = False, title: str | None = None
) -> bool:
    """Draw GFLOPs, latency and peak memory against input resolution, one line per configuration.

    Args:
        rows: ``BenchRow`` objects (any object with the same attributes works).
        path: output PNG (written atomically).
        overwrite: replace an existing file.
        title: figure title.

    Returns:
        False (and writes nothing) when no row has a value to plot, else True.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    FigureCanvasAgg = require("matplotlib.backends.backend_agg", "bench plots").FigureCanvasAgg  # noqa: N806
    from matplotlib.figure import Figure

    dec_rows = [r for r in rows if r.part == "decoder" and r.variant == "eager" and r.dtype == "float32"]
    panels: list[tuple[str, dict[str, list[tuple[int, float]]], str]] = []
    flops = _series(dec_rows or rows, "gflops", ("model",))
    paper = _series(dec_rows or rows, "gflops_paper", ("model",))
    if flops or paper:
        merged = {f"{k} (torch count)": v for k, v in flops.items()}
        merged.update({f"{k} (paper conv.)": v for k, v in paper.items()})
        panels.append(("GFLOPs", merged, "decoder GFLOPs"))
    lat = _series(rows, "latency_ms", ("model", "part", "variant", "dtype", "device"))
    if lat:
        panels.append(("latency (ms)", lat, "latency, median"))
    mem = _series(rows, "peak_mem_mib", ("model", "part", "variant", "dtype", "device"))
    if mem:
        panels.append(("peak memory (MiB)", mem, "peak activation memory"))
    if not panels:
        return False
    fig = Figure(figsize=(6.0 * len(panels), 4.6), layout="constrained")
    FigureCanvasAgg(fig)
    for i, (ylabel, series, ptitle) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for label, pts in sorted(series.items()):
            xs, ys = zip(*pts, strict=True)
            style = "--" if "paper" in label else "-"
            ax.plot(xs, ys, style, marker="o", label=label)
            ax.annotate(
                f"{ys[-1]:.4g}", (xs[-1], ys[-1]), textcoords="offset points", xytext=(3, 3), fontsize=7
            )
        resolutions = sorted({x for pts in series.values() for x, _ in pts})
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(resolutions)
        ax.set_xticklabels([f"{r}²" for r in resolutions])
        ax.set_xlabel("input resolution")
        ax.set_ylabel(ylabel)
        ax.set_title(ptitle)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6)
    if title:
        fig.suptitle(title)
    out = Path(path)
    with atomic_path(out, overwrite=overwrite) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return True
