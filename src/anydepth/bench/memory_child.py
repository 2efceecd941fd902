"""The child process of ``anydepth.bench.memory.measure_peak_memory``: build one configuration, measure it.

``python -m anydepth.bench.memory_child '<json spec>' RESULT.json`` writes the result as JSON to ``RESULT.json``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

from anydepth.atomic import json_text
from anydepth.bench.efficiency import build_runner, parse_dtype
from anydepth.bench.memory import measure_forward_peak
from anydepth.models.factory import build_model, get_model_config

__all__ = ["measure_in_process"]


def measure_in_process(spec: dict[str, Any]) -> dict[str, Any]:
    """Measure one configuration in *this* process (what the subprocess runs); see ``anydepth.bench.memory``.

    Args:
        spec: ``model`` (preset), ``part``, ``variant``, ``dtype``, ``resolution``, ``batch``, ``device``,
            ``tile_rows``, ``max_tile_pixels``, ``threads``, ``seed``.

    Returns:
        ``{"kind", "peak_mib", "first_call_mib", "process_peak_mib", "baseline_mib"}``.
    """
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    device = torch.device(spec.get("device", "cpu"))
    torch.manual_seed(int(spec.get("seed", 0)))
    model = build_model(get_model_config(spec["model"])).eval().to(device)
    fn = build_runner(
        model,
        spec.get("part", "decoder"),
        spec.get("variant", "eager"),
        parse_dtype(spec.get("dtype", "float32")),
        int(spec["resolution"]),
        int(spec.get("batch", 1)),
        device,
        tile_rows=spec.get("tile_rows"),
        max_tile_pixels=spec.get("max_tile_pixels"),
        seed=int(spec.get("seed", 0)),
    )
    return measure_forward_peak(fn, device)


def _main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: python -m anydepth.bench.memory_child '<json spec>' RESULT.json\n")
        return 2
    result = measure_in_process(json.loads(argv[0]))
    out = Path(argv[1])
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json_text(result, nonfinite="null"))
    os.replace(tmp, out)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
