"""File IO for images and depth maps. The only module of ``anydepth.data`` that touches files.

Conventions: images are returned as uint8 ``[H,W,3]`` RGB arrays; depth maps as float32 ``[H,W]`` arrays in the
unit stated by the caller (metres unless said otherwise). Every writer is atomic: it writes a temporary file in
the destination directory and renames it into place, so an interrupted run never leaves a half-written file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from anydepth.atomic import atomic_path

__all__ = [
    "atomic_path",
    "read_image",
    "read_png16",
    "write_png16",
    "write_npy",
    "write_image",
]

PathLike = str | os.PathLike[str]


def read_image(path: PathLike) -> np.ndarray:
    """Read an image file as uint8 RGB ``[H,W,3]``.

    EXIF orientation is applied; grayscale is expanded to 3 channels; alpha is dropped (composited on black is not
    done: the colour channels are kept as stored); 16-bit images are scaled to 8 bit.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a readable image (names the file and the decoder error).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"image not found: {p}")
    try:
        with Image.open(p) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.float64)
                peak = 65535.0 if arr.max(initial=0) > 255 else 255.0
                g = np.clip(np.round(arr / peak * 255.0), 0, 255).astype(np.uint8)
                return np.repeat(g[..., None], 3, axis=-1)
            if im.mode == "F":
                arr = np.asarray(im, dtype=np.float64)
                g = np.clip(np.round(arr * 255.0), 0, 255).astype(np.uint8)
                return np.repeat(g[..., None], 3, axis=-1)
            rgb = im.convert("RGB")
            return np.array(rgb, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"cannot read image {p}: {e}") from e


def read_png16(path: PathLike) -> np.ndarray:
    """Read a single-channel 8/16-bit PNG as a uint16 ``[H,W]`` array of raw values (no scaling)."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"depth file not found: {p}")
    try:
        with Image.open(p) as im:
            im.load()
            if im.mode not in ("I;16", "I;16B", "I;16L", "I", "L"):
                raise ValueError(f"{p}: expected a single-channel 16-bit PNG, got mode {im.mode!r}")
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"cannot read depth PNG {p}: {e}") from e
    if arr.ndim != 2:
        raise ValueError(f"{p}: expected a single-channel image, got shape {arr.shape}")
    if arr.min(initial=0) < 0 or arr.max(initial=0) > 65535:
        raise ValueError(f"{p}: values outside the uint16 range")
    return arr.astype(np.uint16)


def write_png16(path: PathLike, array: np.ndarray, *, overwrite: bool = False) -> Path:
    """Write a uint16 ``[H,W]`` array as a 16-bit greyscale PNG (atomically)."""
    from PIL import Image

    a = np.asarray(array)
    if a.ndim != 2 or a.dtype != np.uint16:
        raise ValueError(f"write_png16 expects a uint16 [H,W] array, got {a.dtype} {a.shape}")
    with atomic_path(path, overwrite=overwrite) as tmp:
        Image.fromarray(a).save(tmp, format="PNG")
    return Path(path)


def write_image(path: PathLike, array: np.ndarray, *, overwrite: bool = False) -> Path:
    """Write a uint8 ``[H,W,3]`` (or ``[H,W]``) array as PNG/JPEG by the path's extension (atomically)."""
    from PIL import Image

    a = np.asarray(array)
    if a.dtype != np.uint8 or a.ndim not in (2, 3):
        raise ValueError(f"write_image expects uint8 [H,W] or [H,W,3], got {a.dtype} {a.shape}")
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}.get(Path(path).suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: unsupported image extension (use .png, .jpg or .jpeg)")
    with atomic_path(path, overwrite=overwrite) as tmp:
        Image.fromarray(a).save(tmp, format=fmt)
    return Path(path)


def write_npy(path: PathLike, array: np.ndarray, *, overwrite: bool = False) -> Path:
    """Write an array as ``.npy`` (atomically)."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(array), allow_pickle=False)
    return Path(path)
