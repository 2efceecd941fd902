"""The local web app and JSON/HTTP API: ``create_app(model_or_runner, ...) -> FastAPI``.

Routes (all behind ``security.SecurityMiddleware``: Host allow-list, same-origin POSTs, optional bearer token):

* ``GET /``: the web page (``static/index.html``; three.js is vendored under ``/static/vendor``, no CDN).
* ``POST /v1/predict``: multipart upload (file field ``image``; form fields ``format``, ``colormap``,
  ``resolution``, ``fov``, ``include``) -> JSON, 16-bit PNG, NPY, colour PNG or PLY.
* ``GET /v1/health``, ``GET /v1/model``, ``GET /v1/colormaps``, ``GET /v1/examples``, ``GET /examples/{name}``.
* ``GET /openapi.json``. FastAPI's ``/docs`` and ``/redoc`` pages are disabled: they load Swagger UI / ReDoc
  from a CDN, and the service must work offline (docs/serve.md has the API reference).

Uploads are streamed into memory and validated by ``security.read_form`` / ``security.decode_image`` (size
limit while streaming -> 413, declared pixel count checked before decoding -> 413, non-images and truncated
files -> 400, other formats -> 415; nothing touches the disk, the client's file name is never used). Decoding,
encoding and inference run in worker threads, so the event loop stays responsive; inference goes through
``batching.BatchPredictor`` (bounded queue -> 503, micro-batching of concurrent same-size requests).

Depth semantics: AnyDepth predicts affine-invariant disparity. ``png16``/``npy``/``json`` return that prediction
(``value``, at the input resolution); ``ply`` unprojects the *nominal* depth (``inference.nominal_depth``:
arbitrary units, not metric) with pinhole intrinsics from ``fov`` (horizontal degrees) > EXIF 35 mm focal length
> the default FOV. No alignment to metric depth is offered here (use ``anydepth infer --align-to``).

The factory reads no environment variable, prints nothing and picks no device (the model runs where it is).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import io
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from anydepth.atomic import json_text
from anydepth.extras import require
from anydepth.inference import (
    DEFAULT_NOMINAL_RANGE,
    PredictItem,
    Resolution,
    Runner,
    TorchRunner,
    as_runner,
    nearness,
)
from anydepth.ops.geometry import DEFAULT_FOV_DEG, fov_from_focal, resolve_intrinsics
from anydepth.serve.batching import BatchPredictor, Job, QueueFullError
from anydepth.serve.security import (
    ACCEPTED_IMAGE_FORMATS,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_UPLOAD_BYTES,
    LOOPBACK_HOSTS,
    ApiError,
    DecodedImage,
    SecurityMiddleware,
    decode_image,
    read_form,
)
from anydepth.types import DepthSpace, Prediction

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = [
    "create_app",
    "FORMATS",
    "INCLUDES",
    "DEFAULT_MAX_PROC_PIXELS",
    "STATIC_DIR",
    "EXAMPLES_DIR",
]

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"

#: Processing (network input) size limit by default: 2048 x 2048 pixels.
DEFAULT_MAX_PROC_PIXELS = 2048 * 2048
#: Output formats of ``POST /v1/predict``.
FORMATS: tuple[str, ...] = ("json", "png16", "npy", "color", "ply")
#: What a JSON answer may embed (``include``): the prediction as nested lists, or base64 files.
INCLUDES: tuple[str, ...] = ("value", "npy", "png16", "color", "ply")
_MEDIA_TYPES = {
    "png16": "image/png",
    "color": "image/png",
    "npy": "application/x-npy",
    "ply": "application/x-ply",
    "json": "application/json",
}
_FILENAMES = {
    "png16": "anydepth_pred16.png",
    "color": "anydepth_color.png",
    "npy": "anydepth_pred.npy",
    "ply": "anydepth.ply",
}

# --------------------------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Options:
    format: str
    colormap: str
    resolution: Resolution
    fov_deg: float | None
    include: tuple[str, ...]


def _colormap_names() -> list[str]:
    from anydepth.ops.colormap import list_colormaps

    base = list_colormaps()
    return sorted(base + [f"{n}_r" for n in base])


def _parse_options(fields: Mapping[str, str], defaults: Mapping[str, Any]) -> _Options:
    known = {"format", "colormap", "resolution", "fov", "include"}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ApiError(400, f"unknown form field(s) {unknown}; accepted: image, {', '.join(sorted(known))}")
    fmt = fields.get("format", "json").strip().lower() or "json"
    if fmt not in FORMATS:
        raise ApiError(400, f"bad format {fmt!r}; expected one of {', '.join(FORMATS)}")
    cmap = fields.get("colormap", "").strip().lower() or str(defaults["colormap"])
    if cmap not in _colormap_names():
        raise ApiError(400, f"unknown colormap {cmap!r}; expected one of {', '.join(_colormap_names())}")
    res_spec = fields.get("resolution", "").strip() or str(defaults["resolution"])
    try:
        res = Resolution.parse(res_spec)
    except ValueError as e:
        raise ApiError(400, str(e)) from None
    fov: float | None = None
    fov_s = fields.get("fov", "").strip()
    if fov_s and fov_s.lower() not in ("auto", "none"):
        try:
            fov = float(fov_s)
        except ValueError:
            raise ApiError(
                400, f"bad fov {fov_s!r}: expected a horizontal field of view in degrees"
            ) from None
        if not 1.0 <= fov <= 179.0:
            raise ApiError(400, f"fov must be between 1 and 179 degrees, got {fov_s}")
    inc_s = fields.get("include")
    if inc_s is None:
        include: tuple[str, ...] = ("value",) if fmt == "json" else ()
    else:
        include = tuple(dict.fromkeys(x.strip().lower() for x in inc_s.split(",") if x.strip()))
        bad = [x for x in include if x not in INCLUDES]
        if bad:
            raise ApiError(400, f"bad include {bad}; expected a comma list of {', '.join(INCLUDES)}")
        if include and fmt != "json":
            raise ApiError(400, "include applies to format=json only")
    return _Options(fmt, cmap, res, fov, include)


# --------------------------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------------------------


def _png_bytes(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr, dtype=np.float32), allow_pickle=False)
    return buf.getvalue()


def _ply_bytes(
    pred: Prediction, rgb: np.ndarray, *, max_points: int, edge_threshold: float
) -> tuple[bytes, dict[str, Any]]:
    """Coloured point cloud of the (nominal) depth as binary PLY bytes (``data.pointcloud``, as ``infer``)."""
    from anydepth.data.pointcloud import auto_stride, encode_ply, prediction_cloud
    from anydepth.version import __version__

    assert pred.depth is not None
    h, w = pred.depth.shape
    cloud = prediction_cloud(
        pred,
        rgb,
        stride=auto_stride(h, w, max_points),
        header=[f"generated by anydepth {__version__} serve"],
        edge_threshold=edge_threshold,
        intrinsics_source=False,
    )
    data = encode_ply(cloud.points, cloud.colors, comments=cloud.comments)
    return data, {"points": int(len(cloud.points)), "stride": cloud.stride, "edge_threshold": edge_threshold}


def _finite_range(a: np.ndarray, lo_pct: float, hi_pct: float) -> tuple[float, float]:
    from anydepth.ops.colormap import robust_range

    return robust_range(a, lo_pct, hi_pct)


def _finite_json(obj: Any) -> Any:
    """Replace non-finite floats (not representable in JSON) by None, recursively; numpy scalars to Python."""
    if isinstance(obj, dict):
        return {k: _finite_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite_json(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _json_value(a: np.ndarray) -> list[Any]:
    if np.isfinite(a).all():
        return a.astype(np.float64).tolist()
    return [[v if math.isfinite(v) else None for v in row] for row in a.astype(np.float64).tolist()]


@dataclass
class _Result:
    body: bytes
    media_type: str
    headers: dict[str, str]


def _render(
    pred: Prediction,
    image: DecodedImage,
    opts: _Options,
    *,
    k_source: str,
    model_name: str | None,
    ply_max_points: int,
    edge_threshold: float,
    timing: dict[str, float],
) -> _Result:
    """Encode a prediction in the requested format (runs in a worker thread)."""
    from anydepth.ops.colormap import apply_colormap, to_uint16

    t0 = time.perf_counter()
    value = np.asarray(pred.value, dtype=np.float32)
    h, w = value.shape
    k = pred.intrinsics
    assert k is not None
    v_lo, v_hi = _finite_range(value, 0.0, 100.0)
    near = nearness(value, pred.space)
    c_lo, c_hi = _finite_range(near, 1.0, 99.0)
    headers = {
        "X-AnyDepth-Width": str(w),
        "X-AnyDepth-Height": str(h),
        "X-AnyDepth-Space": pred.space.value,
        "X-AnyDepth-Metric": "true" if pred.metric else "false",
        "X-AnyDepth-Intrinsics": json_text(k.to_dict()),
    }

    def png16() -> bytes:
        return _png_bytes(to_uint16(value, v_lo, v_hi))

    def color() -> bytes:
        return _png_bytes(apply_colormap(near, opts.colormap, vmin=c_lo, vmax=c_hi))

    def ply() -> tuple[bytes, dict[str, Any]]:
        return _ply_bytes(pred, image.rgb, max_points=ply_max_points, edge_threshold=edge_threshold)

    if opts.format == "png16":
        headers["X-AnyDepth-Range"] = f"{v_lo!r},{v_hi!r}"
        return _Result(png16(), _MEDIA_TYPES["png16"], _attachment(headers, "png16"))
    if opts.format == "npy":
        return _Result(_npy_bytes(value), _MEDIA_TYPES["npy"], _attachment(headers, "npy"))
    if opts.format == "color":
        headers["X-AnyDepth-Range"] = f"{c_lo!r},{c_hi!r}"
        return _Result(color(), _MEDIA_TYPES["color"], _attachment(headers, "color", inline=True))
    if opts.format == "ply":
        data, info = ply()
        headers["X-AnyDepth-Points"] = str(info["points"])
        return _Result(data, _MEDIA_TYPES["ply"], _attachment(headers, "ply"))

    out: dict[str, Any] = {
        "width": w,
        "height": h,
        "source_width": image.source_hw[1] or w,
        "source_height": image.source_hw[0] or h,
        "reduction": image.reduction,
        "model": model_name,
        "space": pred.space.value,
        "metric": bool(pred.metric),
        "resolution": opts.resolution.describe(),
        "proc_hw": pred.meta.get("proc_hw"),
        "input_format": image.format,
        "intrinsics": k.to_dict(),
        "intrinsics_source": k_source,
        "fov_deg": fov_from_focal(w, k.fx),
        "focal_35mm": image.focal_35mm,
        "value_range": [v_lo, v_hi],
        "color_range": [c_lo, c_hi],
        "colormap": opts.colormap,
        "depth": pred.meta.get("depth"),
        "batch_size": int(pred.meta.get("batch_size", 1)),
    }
    for name in opts.include:
        if name == "value":
            out["value"] = _json_value(value)
        elif name == "npy":
            out["npy"] = base64.b64encode(_npy_bytes(value)).decode("ascii")
        elif name == "png16":
            out["png16"] = base64.b64encode(png16()).decode("ascii")
        elif name == "color":
            out["color"] = base64.b64encode(color()).decode("ascii")
        elif name == "ply":
            data, info = ply()
            out["ply"] = base64.b64encode(data).decode("ascii")
            out["ply_points"] = info["points"]
            out["ply_stride"] = info["stride"]
    timing = dict(timing)
    timing["encode_s"] = time.perf_counter() - t0
    out["timing"] = {k_: round(float(v), 6) for k_, v in timing.items()}
    value_list = out.pop("value", None)
    out = _finite_json(out)
    if value_list is not None:
        out["value"] = value_list
    body = json_text(out).encode("utf-8")
    return _Result(body, _MEDIA_TYPES["json"], headers)


def _attachment(headers: dict[str, str], fmt: str, inline: bool = False) -> dict[str, str]:
    headers = dict(headers)
    headers["Content-Disposition"] = f'{"inline" if inline else "attachment"}; filename="{_FILENAMES[fmt]}"'
    return headers


# --------------------------------------------------------------------------------------------------------------
# Page
# --------------------------------------------------------------------------------------------------------------


def _index_html() -> tuple[str, str]:
    """The page and its Content-Security-Policy (the inline import map is allowed by its SHA-256 hash)."""
    html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    hashes = []
    for m in re.finditer(r"<script type=\"importmap\">(.*?)</script>", html, flags=re.S):
        digest = base64.b64encode(hashlib.sha256(m.group(1).encode("utf-8")).digest()).decode("ascii")
        hashes.append(f"'sha256-{digest}'")
    csp = (
        "default-src 'self'; "
        f"script-src 'self' {' '.join(hashes)}; "
        "style-src 'self'; img-src 'self' blob: data:; connect-src 'self' blob: data:; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
    return html, csp


def _list_examples(directory: Path | None) -> dict[str, Path]:
    if directory is None or not directory.is_dir():
        return {}
    return {
        p.name: p
        for p in sorted(directory.iterdir())
        if p.is_file() and p.suffix.lower() in (".jpg", ".jpeg", ".png") and re.fullmatch(r"[\w.-]+", p.name)
    }


def _with_request_annotation(fn: Callable[..., Any], request_cls: type) -> Callable[..., Any]:
    # Endpoints are closures inside create_app and fastapi is imported lazily, so the string annotation
    # "Request" (from ``from __future__ import annotations``) cannot be resolved by FastAPI; give the class.
    fn.__annotations__ = {**fn.__annotations__, "request": request_cls}
    return fn


# --------------------------------------------------------------------------------------------------------------
# The app
# --------------------------------------------------------------------------------------------------------------


def _model_description(runner: Runner, info: Mapping[str, Any]) -> dict[str, Any]:
    from anydepth.models.factory import count_parameters

    space = DepthSpace(runner.output_space)
    d: dict[str, Any] = {
        "name": None,
        "preset": None,
        "checkpoint": None,
        "parameters": None,
        "output_space": space.value,
        "metric": space.is_metric,
        "patch_size": int(runner.patch_size),
        "runner": type(runner).__name__,
        "device": str(runner.device),
    }
    if isinstance(runner, TorchRunner):
        d["dtype"] = str(runner.dtype).replace("torch.", "")
        cfg = getattr(runner.model, "config", None)
        name = getattr(cfg, "name", None)
        d["name"] = name
        d["preset"] = name
        try:
            d["parameters"] = count_parameters(runner.model)
        except Exception:  # a foreign module: parameter counting is informative only
            d["parameters"] = {"total": int(sum(p.numel() for p in runner.model.parameters()))}
    d.update(dict(info))
    return d


def create_app(
    model_or_runner: torch.nn.Module | Runner,
    *,
    token: str | None = None,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_proc_pixels: int = DEFAULT_MAX_PROC_PIXELS,
    queue_size: int = 16,
    max_batch_size: int = 4,
    batch_wait_ms: float = 5.0,
    decode_threads: int = 4,
    allowed_hosts: Iterable[str] | None = LOOPBACK_HOSTS,
    default_resolution: str = "768",
    default_colormap: str = "turbo",
    default_fov_deg: float = DEFAULT_FOV_DEG,
    nominal_range: tuple[float, float] = DEFAULT_NOMINAL_RANGE,
    flip_tta: bool = False,
    ply_max_points: int = 1_000_000,
    edge_threshold: float = 0.05,
    model_info: Mapping[str, Any] | None = None,
    examples_dir: Path | None = EXAMPLES_DIR,
    live_page: bool = True,
    live_session: Any | None = None,
) -> FastAPI:
    """Build the web app and HTTP API around a model or runner.

    Args:
        model_or_runner: a ``DepthModel`` (wrapped in ``TorchRunner``; it runs on the device it is on, in
            float32) or any ``inference.Runner`` (e.g. a ``TorchRunner`` with a device and dtype, or ONNX).
        token: bearer token required on every route (None: no authentication). Compared in constant time.
        max_upload_bytes: largest accepted image file in bytes (413 beyond; checked while streaming).
        max_pixels: largest accepted image ``H * W`` (413 beyond; checked before decoding).
        max_proc_pixels: largest processing size ``H' * W'`` a request may ask for via ``resolution`` (400).
        queue_size: requests admitted to inference at once, waiting or running (503 beyond).
        max_batch_size: images per forward pass when concurrent requests share a processing size.
        batch_wait_ms: how long the inference worker waits for same-size requests to batch (milliseconds).
        decode_threads: threads decoding uploads / encoding answers at once.
        allowed_hosts: accepted ``Host`` header names (default: loopback names); None accepts any host.
        default_resolution: ``resolution`` when a request gives none (``inference.Resolution.parse`` spelling).
        default_colormap: ``colormap`` when a request gives none.
        default_fov_deg: horizontal FOV (degrees) when a request gives no ``fov`` and the image has no EXIF focal.
        nominal_range: ``(near, far)`` of the nominal depth used for point clouds (arbitrary units).
        flip_tta: horizontal-flip test-time augmentation (2x compute).
        ply_max_points: point clouds are subsampled on a regular pixel grid to at most this many points.
        edge_threshold: drop points at relative depth jumps above this (``ops.geometry.depth_edge_mask``).
        model_info: extra entries for ``GET /v1/model`` (e.g. ``{"checkpoint": "model.safetensors"}``).
        examples_dir: folder of bundled example images shown on the page (None: no examples).
        live_page: add the live page ``/live`` and its API (``anydepth.live.web``: browser camera frames in,
            colour depth out, one frame at a time per model).
        live_session: a started ``live.web.LiveSession`` published on the live page as MJPEG (None: none).

    Returns:
        The FastAPI application (serve it with uvicorn: ``uvicorn.run(app, host="127.0.0.1", port=8000)``).
        ``app.state.predictor`` is the ``BatchPredictor``; it is closed on application shutdown.

    Raises:
        ValueError: a bad limit or default.
    """
    require("fastapi", "the web app (anydepth serve)")
    _check_settings(
        token=token,
        max_upload_bytes=max_upload_bytes,
        max_pixels=max_pixels,
        max_proc_pixels=max_proc_pixels,
        queue_size=queue_size,
        decode_threads=decode_threads,
        ply_max_points=ply_max_points,
        default_resolution=default_resolution,
        default_colormap=default_colormap,
        default_fov_deg=default_fov_deg,
    )
    sv = _build_service(
        as_runner(model_or_runner),
        max_upload_bytes=max_upload_bytes,
        max_pixels=max_pixels,
        max_proc_pixels=max_proc_pixels,
        queue_size=queue_size,
        max_batch_size=max_batch_size,
        batch_wait_ms=batch_wait_ms,
        decode_threads=decode_threads,
        default_resolution=default_resolution,
        default_colormap=default_colormap,
        default_fov_deg=default_fov_deg,
        nominal_range=nominal_range,
        flip_tta=flip_tta,
        ply_max_points=ply_max_points,
        edge_threshold=edge_threshold,
        model_info=model_info,
        examples_dir=examples_dir,
    )
    app = _new_app(sv, token=token, allowed_hosts=allowed_hosts)
    _add_page_routes(app, sv)
    _add_info_routes(app, sv)
    _add_predict_route(app, sv)
    if live_page:
        from anydepth.live.web import create_live_router

        app.include_router(
            create_live_router(
                sv.runner,
                resolution=default_resolution,
                colormap=default_colormap,
                session=live_session,
                max_frame_bytes=max_upload_bytes,
                max_pixels=max_pixels,
            )
        )
    return app


def _check_settings(
    *,
    token: str | None,
    max_upload_bytes: int,
    max_pixels: int,
    max_proc_pixels: int,
    queue_size: int,
    decode_threads: int,
    ply_max_points: int,
    default_resolution: str,
    default_colormap: str,
    default_fov_deg: float,
) -> None:
    """Reject bad limits and defaults before anything starts (``ValueError`` naming the setting)."""
    for name, v in (
        ("max_upload_bytes", max_upload_bytes),
        ("max_pixels", max_pixels),
        ("max_proc_pixels", max_proc_pixels),
        ("queue_size", queue_size),
        ("decode_threads", decode_threads),
        ("ply_max_points", ply_max_points),
    ):
        if int(v) < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")
    if token is not None and not token.strip():
        raise ValueError("token must be a non-empty string (or None for no authentication)")
    Resolution.parse(default_resolution)
    if default_colormap not in _colormap_names():
        raise ValueError(
            f"unknown default_colormap {default_colormap!r}; expected one of {_colormap_names()}"
        )
    if not 1.0 <= default_fov_deg <= 179.0:
        raise ValueError(f"default_fov_deg must be in [1, 179], got {default_fov_deg}")


@dataclass
class _Service:
    """The state the routes share: runner and batching queue (state/queue), model description, defaults,
    limits, page assets."""

    runner: Runner
    predictor: BatchPredictor
    model_desc: dict[str, Any]
    defaults: dict[str, Any]
    examples: dict[str, Path]
    index_html: str
    csp: str
    limiter: Any
    max_upload_bytes: int
    max_pixels: int
    max_proc_pixels: int
    default_colormap: str
    default_resolution: str
    default_fov_deg: float
    ply_max_points: int
    edge_threshold: float

    @property
    def model_name(self) -> str | None:
        return self.model_desc.get("name") or self.model_desc.get("preset")


def _build_service(
    runner: Runner,
    *,
    max_upload_bytes: int,
    max_pixels: int,
    max_proc_pixels: int,
    queue_size: int,
    max_batch_size: int,
    batch_wait_ms: float,
    decode_threads: int,
    default_resolution: str,
    default_colormap: str,
    default_fov_deg: float,
    nominal_range: tuple[float, float],
    flip_tta: bool,
    ply_max_points: int,
    edge_threshold: float,
    model_info: Mapping[str, Any] | None,
    examples_dir: Path | None,
) -> _Service:
    """State and queue: the ``BatchPredictor`` over the runner, the model description, page assets."""
    import anyio

    predictor = BatchPredictor(
        runner,
        capacity=queue_size,
        max_batch_size=max_batch_size,
        max_wait_s=batch_wait_ms / 1000.0,
        flip_tta=flip_tta,
        nominal_range=nominal_range,
    )
    model_desc = _model_description(runner, model_info or {})
    defaults = {"resolution": default_resolution, "colormap": default_colormap, "fov_deg": default_fov_deg}
    model_desc["defaults"] = defaults
    model_desc["limits"] = {
        "max_upload_bytes": int(max_upload_bytes),
        "max_pixels": int(max_pixels),
        "max_proc_pixels": int(max_proc_pixels),
        "queue_size": int(queue_size),
        "max_batch_size": int(max_batch_size),
    }
    index_html, csp = _index_html()
    return _Service(
        runner=runner,
        predictor=predictor,
        model_desc=model_desc,
        defaults=defaults,
        examples=_list_examples(examples_dir),
        index_html=index_html,
        csp=csp,
        limiter=anyio.CapacityLimiter(int(decode_threads)),
        max_upload_bytes=max_upload_bytes,
        max_pixels=max_pixels,
        max_proc_pixels=max_proc_pixels,
        default_colormap=default_colormap,
        default_resolution=default_resolution,
        default_fov_deg=default_fov_deg,
        ply_max_points=ply_max_points,
        edge_threshold=edge_threshold,
    )


def _new_app(sv: _Service, *, token: str | None, allowed_hosts: Iterable[str] | None) -> FastAPI:
    """The FastAPI application: lifespan (starts / closes the queue), security middleware, JSON errors."""
    import anyio
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from anydepth.version import __version__

    predictor = sv.predictor

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        predictor.start()
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(predictor.close)

    app = FastAPI(
        title="AnyDepth",
        version=__version__,
        description=(
            "Monocular depth: upload an image, get the model's affine-invariant disparity as JSON, 16-bit PNG, "
            "NPY, a colour map, or a point cloud (PLY) of the nominal (not metric) depth."
        ),
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
        lifespan=lifespan,
    )
    app.state.predictor = predictor
    app.state.runner = sv.runner
    app.add_middleware(
        SecurityMiddleware, token=token, allowed_hosts=allowed_hosts, content_security_policy=sv.csp
    )

    def error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
        return JSONResponse(
            {"detail": message, "status": status}, status_code=status, headers=dict(headers or {})
        )

    @app.exception_handler(ApiError)
    async def _api_error(_request: Any, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Any, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    return app


def _add_page_routes(app: FastAPI, sv: _Service) -> None:
    """The page, its static files and the bundled examples."""
    from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
    from fastapi.staticfiles import StaticFiles

    index_html, examples = sv.index_html, sv.examples

    @app.get("/", include_in_schema=False, response_model=None)
    async def index() -> Any:
        return HTMLResponse(index_html)

    @app.get("/favicon.ico", include_in_schema=False, response_model=None)
    async def favicon() -> Any:
        return RedirectResponse("static/favicon.svg")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/examples/{name}", tags=["page"], response_model=None, summary="A bundled example image")
    async def example_image(name: str) -> Any:
        path = examples.get(name)
        if path is None:
            raise ApiError(404, f"no example named {name!r}; see GET /v1/examples")
        return FileResponse(path)


def _add_info_routes(app: FastAPI, sv: _Service) -> None:
    """Small GET endpoints: health, model, colour maps, examples."""
    from anydepth.ops.colormap import colormap_lut, list_colormaps
    from anydepth.version import __version__

    predictor, model_desc, examples, default_colormap = (
        sv.predictor,
        sv.model_desc,
        sv.examples,
        sv.default_colormap,
    )

    @app.get("/v1/health", tags=["api"], response_model=None, summary="Liveness and queue state")
    async def health() -> Any:
        return {"status": "ok", "version": __version__, "queue": predictor.stats()}

    @app.get("/v1/model", tags=["api"], response_model=None, summary="The served model")
    async def model() -> Any:
        return model_desc

    @app.get("/v1/colormaps", tags=["api"], response_model=None, summary="Colour maps (256-entry RGB tables)")
    async def colormaps() -> Any:
        return {
            "names": _colormap_names(),
            "default": default_colormap,
            "tables": {n: colormap_lut(n).tobytes().hex() for n in list_colormaps()},
            "note": "each table is 256 RGB triplets as hex (768 bytes); a name ending in _r is the reversed table",
        }

    @app.get("/v1/examples", tags=["api"], response_model=None, summary="Bundled example images")
    async def list_examples() -> Any:
        return {
            "examples": [
                {"name": n, "url": f"examples/{n}", "bytes": p.stat().st_size} for n, p in examples.items()
            ]
        }


def _add_predict_route(app: FastAPI, sv: _Service) -> None:
    """``POST /v1/predict``: read and decode the upload, queue it for the runner, render the answer."""
    import anyio
    from fastapi.responses import Response
    from starlette.requests import Request

    predictor, limiter, defaults = sv.predictor, sv.limiter, sv.defaults
    max_upload_bytes, max_pixels, max_proc_pixels = sv.max_upload_bytes, sv.max_pixels, sv.max_proc_pixels
    default_colormap, default_resolution, default_fov_deg = (
        sv.default_colormap,
        sv.default_resolution,
        sv.default_fov_deg,
    )
    patch, model_name = int(sv.runner.patch_size), sv.model_name
    ply_max_points, edge_threshold = sv.ply_max_points, sv.edge_threshold

    form_schema = {
        "type": "object",
        "required": ["image"],
        "properties": {
            "image": {
                "type": "string",
                "format": "binary",
                "description": f"the image file ({', '.join(ACCEPTED_IMAGE_FORMATS)}); "
                f"at most {max_upload_bytes} bytes and {max_pixels} pixels",
            },
            "format": {"type": "string", "enum": list(FORMATS), "default": "json",
                       "description": "json: metadata (+ include); png16: prediction min..max as 16-bit PNG "
                                      "(range in X-AnyDepth-Range); npy: float32 [H,W] prediction; color: colour "
                                      "map PNG; ply: coloured point cloud of the nominal depth"},
            "colormap": {"type": "string", "enum": _colormap_names(), "default": default_colormap},
            "resolution": {"type": "string", "default": default_resolution,
                           "description": "processing size: N or short:N, long:N, HxW, native (patch multiple)"},
            "fov": {"type": "number", "minimum": 1, "maximum": 179,
                    "description": f"horizontal field of view in degrees (default: EXIF 35 mm focal length, "
                                   f"else {default_fov_deg:g})"},
            "include": {"type": "string", "default": "value",
                        "description": f"format=json only: comma list of {', '.join(INCLUDES)} "
                                       "(value: nested lists; others: base64 files)"},
        },
    }  # fmt: skip
    error_doc = {"content": {"application/json": {"example": {"detail": "message", "status": 400}}}}

    async def predict(request: Request) -> Any:
        t_start = time.perf_counter()
        if predictor.pending >= predictor.capacity:
            raise ApiError(503, "server busy: the inference queue is full; retry later", {"Retry-After": "1"})
        form = await read_form(request, max_file_bytes=max_upload_bytes)
        if form.image is None:
            raise ApiError(400, "missing field 'image': send the image file in the multipart field 'image'")
        ctype = form.image.content_type
        if ctype is not None and not (ctype.startswith("image/") or ctype == "application/octet-stream"):
            raise ApiError(415, f"the 'image' part has Content-Type {ctype!r}; expected image/*")
        opts = _parse_options(form.fields, defaults)
        data = bytes(form.image.data)
        form.image.data = bytearray()
        t_read = time.perf_counter()
        image = await anyio.to_thread.run_sync(
            functools.partial(
                decode_image,
                data,
                max_pixels=max_pixels,
                target=functools.partial(_processing_size, opts.resolution, patch),
            ),
            limiter=limiter,
        )
        del data
        h, w = image.rgb.shape[:2]
        proc_hw = opts.resolution.processing_size((h, w), patch)
        if proc_hw[0] * proc_hw[1] > max_proc_pixels:
            raise ApiError(
                400,
                f"resolution {opts.resolution.describe()!r} gives a processing size of {proc_hw[1]}x{proc_hw[0]} "
                f"pixels for this {w}x{h} image; the limit is {max_proc_pixels} pixels (choose a smaller one)",
            )
        k, k_source = resolve_intrinsics(
            h, w, fov_deg=opts.fov_deg, focal_35mm=image.focal_35mm, default_fov_deg=default_fov_deg
        )
        t_decoded = time.perf_counter()
        job = Job(PredictItem(image.rgb, intrinsics=k, focal_35mm=image.focal_35mm), proc_hw)
        try:
            fut = predictor.submit(job)
        except QueueFullError:
            raise ApiError(
                503, "server busy: the inference queue is full; retry later", {"Retry-After": "1"}
            ) from None
        except RuntimeError as e:
            raise ApiError(503, f"server shutting down: {e}") from None
        try:
            pred = await _await(fut)
        except ApiError:
            raise
        except Exception as e:
            log.exception("inference failed")
            raise ApiError(500, f"inference failed: {type(e).__name__}: {e}") from None
        t_pred = time.perf_counter()
        timing = {
            "read_s": t_read - t_start,
            "decode_s": t_decoded - t_read,
            "queue_s": float(pred.meta.get("queue_s", 0.0)),
            "forward_s": float(pred.meta.get("forward_s", 0.0)),
            "batch_s": float(pred.meta.get("batch_s", 0.0)),
            "predict_s": t_pred - t_decoded,
        }
        render = functools.partial(
            _render,
            pred,
            image,
            opts,
            k_source=k_source,
            model_name=model_name,
            ply_max_points=ply_max_points,
            edge_threshold=edge_threshold,
            timing=timing,
        )
        try:
            result = await anyio.to_thread.run_sync(render, limiter=limiter)
        except Exception as e:
            log.exception("encoding the answer failed")
            raise ApiError(500, f"encoding the answer failed: {type(e).__name__}: {e}") from None
        result.headers["X-AnyDepth-Time"] = f"{time.perf_counter() - t_start:.4f}"
        result.headers["X-AnyDepth-Batch-Size"] = str(int(pred.meta.get("batch_size", 1)))
        return Response(result.body, media_type=result.media_type, headers=result.headers)

    app.add_api_route(
        "/v1/predict",
        _with_request_annotation(predict, Request),
        methods=["POST"],
        tags=["api"],
        response_model=None,
        summary="Predict depth for an uploaded image",
        description=(
            "multipart/form-data: the file in 'image', options as form fields. Errors are JSON "
            "{detail, status}: 400 bad input, 401 no/wrong token, 413 too large, 415 unsupported type or "
            "format, 503 queue full."
        ),
        openapi_extra={
            "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": form_schema}}}
        },
        responses={
            200: {
                "description": "the prediction in the requested format",
                "content": {t: {} for t in sorted(set(_MEDIA_TYPES.values()))},
            },
            400: {"description": "bad request (not an image, truncated, bad option)", **error_doc},
            401: {"description": "authentication required", **error_doc},
            413: {"description": "upload or image too large", **error_doc},
            415: {"description": "unsupported content type or image format", **error_doc},
            503: {"description": "inference queue full", **error_doc},
        },
    )


def _processing_size(resolution: Any, patch: int, hw: tuple[int, int]) -> tuple[int, int]:
    return tuple(resolution.processing_size(hw, patch))  # type: ignore[return-value]


async def _await(fut: Any) -> Prediction:
    """Await a ``concurrent.futures.Future`` without blocking the event loop or a thread."""
    import asyncio

    return await asyncio.wrap_future(fut)
