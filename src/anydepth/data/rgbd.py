"""Read a directory of real RGB-D frames in the fixture format (``manifest.json``, see ``shared/fixtures/rgbd``).

The manifest lists per sample ``id``, ``dataset``, ``rgb`` and ``depth`` paths (relative to the manifest),
``depth_scale`` (metres = 16-bit value / scale; 0 = no depth) and ``intrinsics`` (``fx, fy, cx, cy`` in pixels).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from anydepth.data import io

__all__ = ["read_rgbd_manifest"]


def read_rgbd_manifest(root: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Load every frame of ``root/manifest.json``.

    Returns:
        Per sample ``{"id", "dataset", "rgb": uint8 [H,W,3], "depth": float64 [H,W] metres, "valid": bool [H,W],
        "intrinsics": {"fx", "fy", "cx", "cy"}}`` in manifest order.

    Raises:
        FileNotFoundError: no ``manifest.json`` in ``root`` (or a listed file is missing).
    """
    p = Path(root)
    if not (p / "manifest.json").is_file():
        raise FileNotFoundError(f"{p}: no manifest.json (expected an RGB-D directory in the fixture format)")
    manifest = json.loads((p / "manifest.json").read_text(encoding="utf-8"))
    out = []
    for s in manifest["samples"]:
        rgb = io.read_image(p / s["rgb"])
        raw = io.read_png16(p / s["depth"]).astype(np.float64)
        depth = raw / float(s["depth_scale"])
        out.append({"id": s["id"], "dataset": s["dataset"], "rgb": rgb, "depth": depth, "valid": raw > 0,
                    "intrinsics": s["intrinsics"]})  # fmt: skip
    return out
