"""Fault corpus generator: hostile inputs written on demand into a test's temporary directory (no binary files are
committed). Used by ``tests/test_reliability_*.py``; see ``docs/reliability.md``.

Every generator returns ``Case`` records: the file, a short name (the pytest id) and ``reason``, a regular
expression the error message for that file must match (besides naming the file). Families:

* ``image_faults``: decompression bombs (a few hundred bytes declaring 40000 x 40000 pixels), truncated PNG and
  JPEG, random bytes, an empty file, text named ``.png``;
* ``odd_images``: valid images in unusual modes (1-bit, palette + alpha, 16-bit grey, CMYK JPEG, LA): must work;
* ``depth_faults``: an 8-bit PNG, an RGB PNG, a depth bomb, a truncated PNG, a pickled object array, a 3-D array,
  text in ``.npy``, a truncated PFM, a bad PFM magic;
* ``depth_values``: NaN / inf / all-zero depth maps (valid files whose content is unusable);
* ``prediction_faults``: all-NaN, partly-inf, all-zero, wrong-shape, pickled predictions;
* ``checkpoint_faults``: truncated safetensors, config/shape mismatch, bad-JSON config, pickle payloads in
  ``.pth`` (one that would create ``PICKLE_MARKER`` if it were ever unpickled), random bytes;
* ``nan_checkpoint``: a valid checkpoint whose weights are NaN (loads; every prediction is non-finite);
* ``config_faults`` / ``SET_FAULTS``: malformed YAML files and ``--set`` overrides.
"""

from __future__ import annotations

import json
import pickle
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: name of the file a pickle payload of the corpus creates if it is ever executed (it must never exist)
PICKLE_MARKER = "PICKLE_EXECUTED"


@dataclass(frozen=True)
class Case:
    """One corpus file: ``name`` (test id), ``path``, and ``reason`` (regex the error message must match)."""

    name: str
    path: Path
    reason: str = ""

    def check_message(self, message: str) -> None:
        """Assert that an error message names this file, matches ``reason`` and is one line without traceback."""
        assert self.path.name in message, (
            f"{self.name}: the message does not name {self.path.name}: {message!r}"
        )
        assert re.search(self.reason, message, re.IGNORECASE), (
            f"{self.name}: {self.reason!r} not in {message!r}"
        )
        assert "Traceback" not in message and "\n" not in message.strip(), f"not one line: {message!r}"


class _Payload:
    """Unpickling this object calls ``open(marker, "w")``: a harmless witness of code execution."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def png_header_bytes(
    width: int, height: int, *, bit_depth: int = 8, color_type: int = 2, rows: int = 1
) -> bytes:
    """A PNG declaring ``width x height`` whose data holds only ``rows`` zero rows: a decompression bomb's shape
    (a few hundred bytes; Pillow reads the size from the header)."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[color_type]
    row = b"\0" + bytes((width * channels * bit_depth + 7) // 8)
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    idat = zlib.compress(row * rows, 9)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def rgb_image(path: Path, size: tuple[int, int] = (32, 40), seed: int = 0) -> Path:
    """A valid random RGB PNG/JPEG of ``size = (H, W)``."""
    from PIL import Image

    arr = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def depth_png(path: Path, size: tuple[int, int] = (32, 40), seed: int = 0) -> Path:
    """A valid 16-bit depth PNG (millimetres, 0.5 to 10 m) of ``size = (H, W)``."""
    from PIL import Image

    arr = np.random.default_rng(seed).integers(500, 10000, size, dtype=np.uint16)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def image_faults(d: Path, size: tuple[int, int] = (32, 40)) -> list[Case]:
    """Unreadable or hostile image files (each must be refused with a message naming it)."""
    good = rgb_image(d / "_good.png", size).read_bytes()
    rgb_image(d / "_good.jpg", size)
    jpg = (d / "_good.jpg").read_bytes()
    (d / "_good.png").unlink()
    (d / "_good.jpg").unlink()
    bad = r"cannot read|not a|truncat|corrupt|identify|broken|invalid"
    return [
        Case(
            "bomb_png",
            _write(d / "bomb.png", png_header_bytes(40000, 40000)),
            r"too many pixels.*ANYDEPTH_MAX",
        ),
        Case("truncated_png", _write(d / "truncated.png", good[: len(good) // 2]), bad),
        Case("truncated_jpg", _write(d / "truncated.jpg", jpg[: len(jpg) // 3]), bad),
        Case("random_bytes", _write(d / "random.png", np.random.default_rng(1).bytes(4096)), bad),
        Case("empty", _write(d / "empty.jpg", b""), bad),
        Case("text_as_png", _write(d / "text.png", b"hello, I am not a picture\n" * 10), bad),
    ]


def odd_images(d: Path, size: tuple[int, int] = (32, 40)) -> list[Path]:
    """Valid images in unusual modes and bit depths: every one must be processed like an RGB image."""
    from PIL import Image

    d.mkdir(parents=True, exist_ok=True)
    h, w = size
    rng = np.random.default_rng(2)
    out = []
    Image.fromarray(rng.integers(0, 2, size, dtype=np.uint8).astype(bool)).save(d / "mode1.png")
    pal = Image.fromarray(rng.integers(0, 255, size, dtype=np.uint8)).convert("P")
    pal.info["transparency"] = 3
    pal.save(d / "palette_alpha.png")
    Image.fromarray(rng.integers(0, 65535, size, dtype=np.uint16)).save(d / "grey16.png")
    Image.new("CMYK", (w, h), (10, 20, 30, 40)).save(d / "cmyk.jpg")
    Image.new("LA", (w, h), (100, 50)).save(d / "grey_alpha.png")
    out += [d / n for n in ("mode1.png", "palette_alpha.png", "grey16.png", "cmyk.jpg", "grey_alpha.png")]
    return out


def depth_faults(d: Path, size: tuple[int, int] = (32, 40), marker_dir: Path | None = None) -> list[Case]:
    """Unreadable or wrong depth files (each must be refused, or excluded, with a message naming it)."""
    from PIL import Image

    d.mkdir(parents=True, exist_ok=True)
    h, w = size
    Image.fromarray(np.full(size, 100, np.uint8)).save(d / "eight_bit.png")
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(d / "rgb.png")
    good = depth_png(d / "_good.png", size).read_bytes()
    (d / "_good.png").unlink()
    np.save(d / "pickled.npy", np.array([_Payload((marker_dir or d) / PICKLE_MARKER)], dtype=object))
    np.save(d / "cube.npy", np.ones((2, h, w), np.float32))
    np.save(d / "strings.npy", np.array(["a", "b"]))
    pfm = b"Pf\n" + f"{w} {h}\n-1.0\n".encode() + np.ones((h, w), "<f4").tobytes()
    return [
        Case("eight_bit_png", d / "eight_bit.png", r"16-bit"),
        Case("rgb_png", d / "rgb.png", r"16-bit"),
        Case(
            "bomb_png",
            _write(d / "bomb.png", png_header_bytes(40000, 40000, bit_depth=16, color_type=0)),
            r"too many pixels",
        ),
        Case("truncated_png", _write(d / "truncated.png", good[: len(good) // 2]), r"cannot read|truncat"),
        Case("pickled_npy", d / "pickled.npy", r"pickle|object"),
        Case("cube_npy", d / "cube.npy", r"single-channel|shape"),
        Case("strings_npy", d / "strings.npy", r"numeric|dtype"),
        Case("truncated_pfm", _write(d / "truncated.pfm", pfm[: len(pfm) // 2]), r"truncated"),
        Case("bad_magic_pfm", _write(d / "magic.pfm", b"P7\n" + pfm[3:]), r"not a PFM"),
    ]


def depth_values(d: Path, size: tuple[int, int] = (32, 40)) -> dict[str, Path]:
    """Readable depth maps with unusable content: ``{"nan": ..., "inf": ..., "zero": ...}`` (``.npy``)."""
    d.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, value in (("nan", np.nan), ("inf", np.inf), ("zero", 0.0)):
        np.save(d / f"depth_{name}.npy", np.full(size, value, np.float32))
        out[name] = d / f"depth_{name}.npy"
    return out


def prediction_faults(d: Path, size: tuple[int, int], marker_dir: Path | None = None) -> list[Case]:
    """Prediction files that must not yield a silent metric: non-finite, constant, wrong shape, pickled."""
    d.mkdir(parents=True, exist_ok=True)
    part_inf = np.random.default_rng(3).uniform(0.1, 1.0, size).astype(np.float32)
    part_inf[: size[0] // 2] = np.inf
    np.save(d / "all_nan.npy", np.full(size, np.nan, np.float32))
    np.save(d / "part_inf.npy", part_inf)
    np.save(d / "wrong_shape.npy", np.ones((size[0] + 3, size[1] + 5, 2), np.float32))
    np.save(d / "pickled.npy", np.array([_Payload((marker_dir or d) / PICKLE_MARKER)], dtype=object))
    return [
        Case("all_nan", d / "all_nan.npy", r"non-finite|nan"),
        Case("part_inf", d / "part_inf.npy", r"non-finite|inf"),
        Case("wrong_shape", d / "wrong_shape.npy", r"shape|single-channel"),
        Case("pickled", d / "pickled.npy", r"pickle|object"),
    ]


def checkpoint_faults(d: Path, model: Any, marker_dir: Path | None = None) -> list[Case]:
    """Broken or hostile checkpoints of ``model`` (a ``DepthModel``): each must be refused naming the file."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from anydepth.models.checkpoint import save_model

    d.mkdir(parents=True, exist_ok=True)
    good = save_model(model, d / "_good.safetensors", contents="full", overwrite=True)
    with safe_open(str(good), framework="pt") as f:
        meta = dict(f.metadata() or {})
    tensors = load_file(str(good))
    raw = good.read_bytes()
    cfg = json.loads(meta["model_config"])
    dk = cfg.setdefault("decoder_kwargs", {})
    key = next((k for k, v in dk.items() if isinstance(v, int) and not isinstance(v, bool) and v > 1), None)
    if key is not None:
        dk[key] = int(dk[key]) * 2
    else:
        cfg["layer_indices"] = [0]
    save_file(tensors, str(d / "mismatch.safetensors"), metadata={**meta, "model_config": json.dumps(cfg)})
    save_file(tensors, str(d / "badjson.safetensors"), metadata={**meta, "model_config": "{oops"})
    good.unlink()
    marker = (marker_dir or d) / PICKLE_MARKER
    torch.save({"state_dict": _Payload(marker)}, d / "payload.pth")
    (d / "payload_raw.pt").write_bytes(pickle.dumps(_Payload(marker)))
    return [
        Case(
            "truncated",
            _write(d / "truncated.safetensors", raw[: len(raw) // 2]),
            r"readable|cannot read|safetensors",
        ),
        Case("mismatch", d / "mismatch.safetensors", r"shapes do not match|missing|unexpected"),
        Case("bad_json", d / "badjson.safetensors", r"not valid JSON"),
        Case(
            "pickle_pth", d / "payload.pth", r"weights_only|unpickl|not .*checkpoint|cannot load|unsupported"
        ),
        Case(
            "pickle_raw",
            d / "payload_raw.pt",
            r"weights_only|unpickl|not .*checkpoint|cannot load|unsupported",
        ),
        Case(
            "random_bytes",
            _write(d / "random.pth", np.random.default_rng(4).bytes(2048)),
            r"not .*checkpoint|cannot load|unreadable|unsupported",
        ),
    ]


def nan_checkpoint(d: Path, model: Any) -> Path:
    """A valid full checkpoint of ``model`` with every floating-point weight set to NaN."""
    import copy

    import torch

    from anydepth.models.checkpoint import save_model

    bad = copy.deepcopy(model)
    with torch.no_grad():
        for p in bad.parameters():
            p.fill_(float("nan"))
    d.mkdir(parents=True, exist_ok=True)
    return save_model(bad, d / "nan_weights.safetensors", contents="full", overwrite=True)


def config_faults(d: Path) -> list[Case]:
    """Malformed training configs: each must give a one-line error naming the file."""
    d.mkdir(parents=True, exist_ok=True)
    files = {
        "bad_yaml": ("model: [unclosed\n  preset: sdt_test\n", r"not valid YAML"),
        "tab_indent": ("model:\n\tpreset: sdt_test\n", r"not valid YAML"),
        "not_mapping": ("- a\n- b\n", r"mapping"),
        "unknown_key": ("optim:\n  lrr: 0.1\n", r"unknown config key"),
        "wrong_type": ("optim:\n  lr: fast\n", r"invalid value"),
        "binary": ("\x00\x01\x02garbage\xff", r"not valid YAML|mapping|invalid|unknown"),
    }
    out = []
    for name, (text, reason) in files.items():
        p = d / f"{name}.yaml"
        p.write_text(text, encoding="utf-8", errors="surrogateescape")
        out.append(Case(name, p, reason))
    return out


#: malformed ``--set`` overrides: ``(override, regex of the one-line error)``
SET_FAULTS: list[tuple[str, str]] = [
    ("optim.lr=[1,", r"not valid YAML"),
    ("optim.lr={a", r"not valid YAML"),
    ("optim.lr='1", r"not valid YAML"),
    ("x=: :", r"not valid YAML|unknown"),
    ("optim.lr", r"key\.path=value"),
    ("=3", r"empty key"),
    ("optim..lr=3", r"empty key"),
    ("optim.lr=fast", r"invalid value"),
]


def strict_json_load(path: Path) -> Any:
    """``json.loads`` that refuses the non-standard ``NaN`` / ``Infinity`` tokens (strict RFC 8259 JSON)."""

    def refuse(token: str) -> Any:
        raise AssertionError(f"{path}: non-standard JSON token {token}")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)
