"""File IO for images and depth maps. The only module of ``anydepth.data`` that touches files.

Conventions: images are returned as uint8 ``[H,W,3]`` RGB arrays; depth maps as float32 ``[H,W]`` arrays in the
unit stated by the caller (metres unless said otherwise). Every writer is atomic: it writes a temporary file in
the destination directory and renames it into place, so an interrupted run never leaves a half-written file.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from anydepth.atomic import atomic_path
from anydepth.extras import require

__all__ = [
    "atomic_path",
    "read_image",
    "image_size",
    "pil_to_rgb",
    "max_image_pixels",
    "MAX_PIXELS_ENV",
    "read_png16",
    "write_png16",
    "write_npy",
    "write_image",
    "read_npy",
    "read_pfm",
    "write_pfm",
    "read_exr",
    "read_hdf5_dataset",
    "read_depth",
    "DEPTH_EXTENSIONS",
]

PathLike = str | os.PathLike[str]


#: environment variable holding the pixel limit of decoded images (``0``: no limit of ours; see ``max_image_pixels``)
MAX_PIXELS_ENV = "ANYDEPTH_MAX_IMAGE_PIXELS"


def max_image_pixels() -> int | None:
    """The largest ``W * H`` an image or depth file may declare before it is decoded (None: no limit).

    ``ANYDEPTH_MAX_IMAGE_PIXELS`` when set (``0`` = no limit), else Pillow's own error threshold
    ``2 * PIL.Image.MAX_IMAGE_PIXELS`` (178,956,970 by default). Pillow refuses files above its threshold on its
    own: a program that raises this limit must raise ``PIL.Image.MAX_IMAGE_PIXELS`` as well (the ``anydepth``
    command does so from the environment variable).

    Raises:
        ValueError: the environment variable is not a non-negative integer.
    """
    from PIL import Image

    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if text:
        try:
            n = int(text)
        except ValueError:
            n = -1
        if n < 0:
            raise ValueError(f"{MAX_PIXELS_ENV}={text!r}: expected a non-negative integer (0 = no limit)")
        return n or None
    return 2 * Image.MAX_IMAGE_PIXELS if Image.MAX_IMAGE_PIXELS else None


def _too_many_pixels(p: Path, size: str, n: int, limit: int | None) -> ValueError:
    return ValueError(
        f"{p}: too many pixels ({size}{n:,}; the limit is {limit or 0:,}: a decompression bomb?); to decode it "
        f"anyway raise the limit: {MAX_PIXELS_ENV}={n} (0 = no limit)"
    )


@contextlib.contextmanager
def _open_image(p: Path, what: str, max_pixels: int | None) -> Iterator[Any]:
    """``PIL.Image.open(p)`` (header only) with the pixel limit checked before any pixel is decoded; every
    failure, including one of the decoding inside the block, becomes a ``ValueError`` naming ``p``."""
    from PIL import Image, UnidentifiedImageError

    limit = max_image_pixels() if max_pixels is None else (max_pixels or None)
    try:
        im = Image.open(p)
    except Image.DecompressionBombError as e:  # above Pillow's own threshold, which also applies
        m = re.search(r"\((\d+) pixels\)", str(e))
        pil_limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
        raise _too_many_pixels(p, "", int(m.group(1)) if m else pil_limit + 1, pil_limit) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"cannot read {what} {p}: {e}") from None
    with im:
        w, h = (int(v) for v in im.size)
        if limit is not None and w * h > limit:
            raise _too_many_pixels(p, f"{w}x{h} = ", w * h, limit)
        try:
            yield im
        except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as e:
            raise ValueError(f"cannot read {what} {p}: {e}") from None


def read_image(path: PathLike, *, max_pixels: int | None = None) -> np.ndarray:
    """Read an image file as uint8 RGB ``[H,W,3]``.

    EXIF orientation is applied; grayscale is expanded to 3 channels; alpha is dropped (composited on black is not
    done: the colour channels are kept as stored); 16-bit images are scaled to 8 bit.

    Args:
        path: the image file.
        max_pixels: refuse a file declaring more pixels than this before decoding it (decompression bombs);
            None: ``max_image_pixels()``; 0: no limit of ours.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a readable image, or declares too many pixels (names the file and the decoder
            error, or the size, the limit and how to raise it).
    """
    from PIL import ImageOps

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"image not found: {p}")
    with _open_image(p, "image", max_pixels) as src:
        src.load()
        return pil_to_rgb(ImageOps.exif_transpose(src))


def pil_to_rgb(im: Any) -> np.ndarray:
    """A decoded ``PIL.Image`` as uint8 RGB ``[H,W,3]``: grey (8/16/32-bit, float in [0, 1]) expanded to 3
    channels, 16-bit data scaled to 8 bit, palette transparency and alpha dropped (colours kept as stored)."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        peak = 65535.0 if arr.max(initial=0) > 255 else 255.0
        g = np.clip(np.round(arr / peak * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=-1)
    if im.mode == "F":
        arr = np.nan_to_num(np.asarray(im, dtype=np.float64), nan=0.0)
        g = np.clip(np.round(arr * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=-1)
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))


def image_size(path: PathLike, *, max_pixels: int | None = None) -> tuple[int, int]:
    """``(H, W)`` of an image file as ``read_image`` would return it (EXIF rotation applied), from its header only.

    Raises:
        FileNotFoundError, ValueError: as ``read_image`` (a corrupt raster may go unnoticed: nothing is decoded).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"image not found: {p}")
    with _open_image(p, "image", max_pixels) as im:
        w, h = (int(v) for v in im.size)
        try:
            orientation = int(im.getexif().get(0x0112, 1))
        except Exception:  # a broken EXIF block: read_image keeps the stored orientation too
            orientation = 1
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


def read_png16(path: PathLike, *, max_pixels: int | None = None) -> np.ndarray:
    """Read a single-channel 16-bit PNG as a uint16 ``[H,W]`` array of raw values (no scaling).

    8-bit files are refused: a depth map quantised to 256 levels is almost certainly a visualisation, not data.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: not a readable PNG, not single-channel 16-bit, or too many pixels (see ``read_image``).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"depth file not found: {p}")
    with _open_image(p, "depth PNG", max_pixels) as im:
        if im.mode not in ("I;16", "I;16B", "I;16L", "I"):
            bits = "an 8-bit" if im.mode in ("L", "P", "1", "LA", "RGB", "RGBA") else f"a mode {im.mode!r}"
            raise ValueError(
                f"{p}: expected a single-channel 16-bit PNG as depth, got {bits} image (mode {im.mode!r})"
            )
        im.load()
        arr = np.asarray(im)
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


# ---------------------------------------------------------------------------------------------------------------
# Depth formats: NPY, PFM, OpenEXR, HDF5 and a dispatcher on the file extension.
# ---------------------------------------------------------------------------------------------------------------

#: Extensions ``read_depth`` understands (lower case).
DEPTH_EXTENSIONS: tuple[str, ...] = (".png", ".npy", ".pfm", ".exr", ".hdf5", ".h5")


def _require_file(p: Path, what: str) -> None:
    if not p.is_file():
        raise FileNotFoundError(f"{what} not found: {p}")


def read_npy(path: PathLike) -> np.ndarray:
    """Read a ``.npy`` array (``allow_pickle=False``: object arrays are refused).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a valid ``.npy`` file or holds Python objects.
    """
    p = Path(path)
    _require_file(p, "array file")
    try:
        return np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"cannot read .npy file {p}: {e}") from e


def read_pfm(path: PathLike) -> np.ndarray:
    """Read a PFM (portable float map) as float32 ``[H,W]`` (``Pf``) or ``[H,W,3]`` (``PF``).

    PFM stores scanlines bottom-to-top; the rows are flipped so row 0 is the top of the image. The sign of the
    scale field gives the byte order (negative = little endian); its magnitude is ignored.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: bad header or truncated pixel data (names the file).
    """
    p = Path(path)
    _require_file(p, "PFM file")
    with open(p, "rb") as f:
        data = f.read()
    # The header is three whitespace-separated fields after the magic: width, height, scale.
    tokens: list[bytes] = []
    pos = 0
    while len(tokens) < 4:
        while pos < len(data) and data[pos : pos + 1].isspace():
            pos += 1
        start = pos
        while pos < len(data) and not data[pos : pos + 1].isspace():
            pos += 1
        if start == pos:
            raise ValueError(f"{p}: truncated PFM header")
        tokens.append(data[start:pos])
        if len(tokens) == 1 and tokens[0] not in (b"PF", b"Pf"):
            raise ValueError(f"{p}: not a PFM file (magic {tokens[0][:8]!r}, expected b'PF' or b'Pf')")
    pos += 1  # exactly one whitespace byte separates the header from the raster
    try:
        width, height, scale = int(tokens[1]), int(tokens[2]), float(tokens[3])
    except ValueError as e:
        raise ValueError(f"{p}: malformed PFM header {tokens!r}") from e
    if width <= 0 or height <= 0 or scale == 0.0:
        raise ValueError(f"{p}: invalid PFM header (width {width}, height {height}, scale {scale})")
    channels = 3 if tokens[0] == b"PF" else 1
    dtype = np.dtype("<f4") if scale < 0 else np.dtype(">f4")
    count = width * height * channels
    if len(data) - pos < count * 4:
        raise ValueError(f"{p}: truncated PFM data ({len(data) - pos} bytes, expected {count * 4})")
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=pos).astype(np.float32)
    shape = (height, width, 3) if channels == 3 else (height, width)
    return np.ascontiguousarray(arr.reshape(shape)[::-1])


def write_pfm(path: PathLike, array: np.ndarray, *, overwrite: bool = False) -> Path:
    """Write a float ``[H,W]`` (``Pf``) or ``[H,W,3]`` (``PF``) array as little-endian PFM (atomically).

    Row 0 of ``array`` is the top of the image; it is written last, as the format requires.
    """
    a = np.asarray(array, dtype=np.float32)
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3)):
        raise ValueError(f"write_pfm expects [H,W] or [H,W,3], got shape {a.shape}")
    magic = b"PF" if a.ndim == 3 else b"Pf"
    header = magic + b"\n" + f"{a.shape[1]} {a.shape[0]}\n-1.0\n".encode("ascii")
    with atomic_path(path, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as f:
            f.write(header)
            f.write(np.ascontiguousarray(a[::-1]).astype("<f4").tobytes())
    return Path(path)


def read_exr(path: PathLike, *, channel: str | None = None) -> np.ndarray:
    """Read one channel of an OpenEXR file as float32 ``[H,W]`` (needs the ``OpenEXR`` package, extra ``data``).

    Args:
        path: the ``.exr`` file.
        channel: channel name. If None: the only channel of a single-channel file, else the first present of
            ``Y``, ``Z``, ``R``, ``depth``, ``D`` (IRS disparity files store the same value in R, G and B).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: not a readable EXR file.
        KeyError: the requested channel is absent (names the available channels).
        ImportError: ``OpenEXR`` is not installed.
    """
    p = Path(path)
    _require_file(p, "EXR file")
    OpenEXR = require("OpenEXR", f"reading {p}")  # noqa: N806
    try:
        with OpenEXR.File(str(p), separate_channels=True) as f:
            chans = {name: np.asarray(c.pixels) for name, c in f.channels().items()}
    except (RuntimeError, OSError, ValueError) as e:
        raise ValueError(f"cannot read EXR file {p}: {e}") from e
    if not chans:
        raise ValueError(f"{p}: EXR file has no channels")
    if channel is None:
        if len(chans) == 1:
            channel = next(iter(chans))
        else:
            channel = next((c for c in ("Y", "Z", "R", "depth", "D") if c in chans), None)
            if channel is None:
                raise KeyError(f"{p}: cannot choose a depth channel among {sorted(chans)}; pass channel=")
    if channel not in chans:
        raise KeyError(f"{p}: EXR channel {channel!r} not found; available: {sorted(chans)}")
    arr = chans[channel]
    if arr.ndim != 2:
        raise ValueError(f"{p}: EXR channel {channel!r} has shape {arr.shape}, expected [H,W]")
    return arr.astype(np.float32)


def read_hdf5_dataset(path: PathLike, key: str = "dataset") -> np.ndarray:
    """Read one dataset of an HDF5 file as a numpy array, dtype as stored (needs ``h5py``, extra ``data``).

    Hypersim stores every per-pixel quantity under the key ``dataset`` (depth as float16 metres).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: not a readable HDF5 file.
        KeyError: ``key`` is absent (names the keys present).
        ImportError: ``h5py`` is not installed.
    """
    p = Path(path)
    _require_file(p, "HDF5 file")
    h5py = require("h5py", f"reading {p}")
    try:
        f = h5py.File(p, "r")
    except OSError as e:
        raise ValueError(f"cannot read HDF5 file {p}: {e}") from e
    with f:
        if key not in f:
            raise KeyError(f"{p}: HDF5 key {key!r} not found; keys present: {sorted(f.keys())}")
        obj = f[key]
        if not isinstance(obj, h5py.Dataset):
            raise ValueError(f"{p}: HDF5 entry {key!r} is a group, not a dataset")
        try:
            return np.asarray(obj[()])
        except OSError as e:
            raise ValueError(f"cannot read HDF5 dataset {key!r} of {p}: {e}") from e


def read_depth(
    path: PathLike,
    *,
    scale: float | None = None,
    key: str = "dataset",
    channel: str | None = None,
) -> np.ndarray:
    """Read a depth-like map as float32 ``[H,W]``, choosing the decoder by the file extension.

    No validity handling happens here: zeros, NaN, inf and sky codes are returned as stored (divided by
    ``scale`` for PNG). The unit is whatever the file stores (usually metres; disparity for IRS EXR files).

    Args:
        path: ``.png`` (8/16-bit single channel), ``.npy``, ``.pfm``, ``.exr``, ``.hdf5`` / ``.h5``.
        scale: required for PNG: stored value / ``scale`` = depth (1000 for millimetres, 256 for KITTI,
            100 for Virtual KITTI 2 centimetres, 5000 for TUM). Optional for other formats (divides if given).
        key: HDF5 dataset key (default ``dataset``, as in Hypersim).
        channel: EXR channel (see ``read_exr``).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: unknown extension, missing PNG scale, not a single-channel map, or an unreadable file.
    """
    p = Path(path)
    ext = p.suffix.lower()
    if ext == ".png":
        if scale is None:
            raise ValueError(
                f"{p}: a PNG depth map needs a scale (stored value / scale = depth), e.g. depth_scale=1000 for mm"
            )
        arr = read_png16(p).astype(np.float32)
    elif ext == ".npy":
        arr = read_npy(p)
        if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
            raise ValueError(f"{p}: expected a real numeric array, got dtype {arr.dtype}")
    elif ext == ".pfm":
        arr = read_pfm(p)
    elif ext == ".exr":
        arr = read_exr(p, channel=channel)
    elif ext in (".hdf5", ".h5"):
        arr = read_hdf5_dataset(p, key)
    else:
        raise ValueError(f"{p}: unsupported depth file extension {ext!r}; expected one of {DEPTH_EXTENSIONS}")
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise ValueError(f"{p}: expected a single-channel [H,W] depth map, got shape {arr.shape}")
    out = arr.astype(np.float32)
    if scale is not None:
        if not scale > 0:
            raise ValueError(f"{p}: depth scale must be > 0, got {scale}")
        out = out / np.float32(scale)
    return out
