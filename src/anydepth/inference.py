"""Inference: images in, ``Prediction`` objects out. Writes nothing, picks no device, prints nothing.

Data flow per image (design.md B2): uint8/float RGB -> float ``[3,H,W]`` in [0, 1] -> resize to a patch multiple
(``Resolution``) -> batched forward through a *runner* -> resize back to ``H x W`` -> ``Prediction`` with the
raw map (``value``, in the model's ``DepthSpace``), camera intrinsics, and a depth map that is metric when the
prediction was aligned to user-given metric depth and *nominal* (arbitrary units, ``metric=False``) otherwise.

Runners: anything with ``patch_size``, ``output_space``, ``device`` and ``__call__(x [B,3,H,W]) -> [B,1,H,W]``
(the ``Runner`` protocol of ``ops.runner``, re-exported here). ``TorchRunner`` wraps a ``DepthModel``; an ONNX runner
can be passed to ``predict``/``predict_iter`` unchanged.

Depth without alignment (``nominal_depth``): AnyDepth predicts affine-invariant disparity ``d``; metric depth is
``1 / (s d + t)`` with unknown ``s, t``. Without reference depth we pick ``s, t`` so that the 1st percentile of
``d`` maps to ``far`` and the 99th to ``near`` (defaults 1 and 10 *nominal units*, not metres), clipping beyond.
The result has plausible relative geometry but no scale; it is flagged ``metric=False``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

import numpy as np
import torch
import torch.nn.functional as F

from anydepth.ops.alignment import align_to_depth, to_inverse
from anydepth.ops.geometry import DEFAULT_FOV_DEG, resolve_intrinsics
from anydepth.ops.resize import processing_size
from anydepth.ops.runner import Runner, TorchRunner, as_runner, predict_resized
from anydepth.types import DepthSpace, Intrinsics, Prediction

__all__ = [
    "Runner",
    "TorchRunner",
    "Resolution",
    "PredictItem",
    "RangeTracker",
    "DEFAULT_NOMINAL_RANGE",
    "load_image",
    "nominal_depth",
    "align_prediction",
    "predict_iter",
    "predict",
    "describe_runner",
    "nearness",
    "as_runner",
    "predict_resized",
]

log = logging.getLogger(__name__)

#: Nominal (near, far) depth range used to turn affine-invariant predictions into depth without reference data.
DEFAULT_NOMINAL_RANGE: tuple[float, float] = (1.0, 10.0)
#: Percentiles of the prediction mapped to the ends of the nominal range.
NOMINAL_PERCENTILES: tuple[float, float] = (1.0, 99.0)
#: Minimum aligned disparity (1/m) before inversion: aligned depth is at most 1000 m (as the Lotus protocol).
MIN_DISPARITY = 1e-3


# --------------------------------------------------------------------------------------------------------------
# Runners
# --------------------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------------------
# Resolution policy
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resolution:
    """How input images are resized before the forward pass (always rounded to the patch multiple).

    Exactly one of: ``size`` (fixed ``(H, W)``), ``long_side``, ``short_side`` (default 768, aspect kept), or
    none of them (native size). Use ``Resolution.parse`` for the CLI spellings.
    """

    short_side: int | None = 768
    long_side: int | None = None
    size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        for name in ("short_side", "long_side"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise ValueError(f"Resolution.{name} must be positive, got {v}")
        if self.size is not None and (len(self.size) != 2 or min(self.size) <= 0):
            raise ValueError(f"Resolution.size must be (H, W) with positive values, got {self.size}")

    @classmethod
    def native(cls) -> Resolution:
        """The input's own size (rounded to the patch multiple)."""
        return cls(short_side=None)

    @classmethod
    def parse(cls, spec: str | int) -> Resolution:
        """Parse ``"768"``/``"short:768"`` (short side), ``"long:1024"``, ``"480x640"`` (H x W) or ``"native"``.

        Raises:
            ValueError: anything else (the message lists the accepted forms).
        """
        s = str(spec).strip().lower()
        try:
            if s == "native":
                return cls.native()
            if s.startswith("short:"):
                return cls(short_side=int(s[6:]))
            if s.startswith("long:"):
                return cls(short_side=None, long_side=int(s[5:]))
            if "x" in s:
                h, w = s.split("x")
                return cls(short_side=None, size=(int(h), int(w)))
            return cls(short_side=int(s))
        except ValueError as e:
            raise ValueError(
                f"bad resolution {spec!r}: expected N or short:N (short side), long:N, HxW, or native ({e})"
            ) from None

    def processing_size(self, hw: tuple[int, int], patch: int) -> tuple[int, int]:
        """Processing ``(H', W')`` for an input of size ``hw`` (multiples of ``patch``)."""
        return processing_size(
            hw, patch, short_side=self.short_side, long_side=self.long_side, size=self.size
        )

    def describe(self) -> str:
        """The ``parse`` spelling of this policy."""
        if self.size is not None:
            return f"{self.size[0]}x{self.size[1]}"
        if self.long_side is not None:
            return f"long:{self.long_side}"
        if self.short_side is not None:
            return f"short:{self.short_side}"
        return "native"


# --------------------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------------------

ImageLike = Any  # str | os.PathLike | np.ndarray | torch.Tensor | PIL.Image.Image


@dataclass
class PredictItem:
    """One image and its per-image options for ``predict_iter``.

    Attributes:
        image: a path, a numpy ``[H,W]``/``[H,W,C]`` array (uint8, uint16, bool or float in [0, 1]; C = 1, 3 or
            4, alpha dropped), a torch ``[3,H,W]`` tensor (float in [0, 1] or uint8) or a PIL image.
        intrinsics: camera intrinsics of this image (pixels), overriding FOV/EXIF/default.
        align_depth: metric depth in metres for this image, ``[H_d, W_d]`` with the image's aspect ratio (any
            resolution; sparse is fine). Values <= 0 or non-finite are ignored. Enables metric output.
        focal_35mm: EXIF 35 mm equivalent focal length (mm) for images passed as arrays; read from the file
            automatically when ``image`` is a path.
        meta: free-form data copied into ``Prediction.meta`` (e.g. the source path).
    """

    image: ImageLike
    intrinsics: Intrinsics | None = None
    align_depth: np.ndarray | None = None
    focal_35mm: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def load_image(image: ImageLike) -> tuple[torch.Tensor, float | None]:
    """Convert an image-like input to float32 ``[3,H,W]`` RGB in [0, 1].

    Paths are read with ``data.io.read_image`` (EXIF orientation applied, grayscale/alpha/16-bit handled) and
    their EXIF 35 mm focal length is returned too.

    Returns:
        ``(image [3,H,W], focal_35mm or None)``.

    Raises:
        FileNotFoundError, ValueError: unreadable file or an array of unsupported shape/dtype/range.
    """
    if isinstance(image, str | os.PathLike):
        from anydepth.data.inputs import read_exif_focal_35mm
        from anydepth.data.io import read_image

        arr = read_image(image)
        return torch.from_numpy(arr).permute(2, 0, 1).float().div_(255.0), read_exif_focal_35mm(image)
    if isinstance(image, torch.Tensor):
        t = image.detach()
        if t.ndim != 3 or t.shape[0] != 3:
            raise ValueError(f"image tensors must be [3,H,W], got shape {tuple(t.shape)}")
        t = t.float().div(255.0) if t.dtype == torch.uint8 else t.float()
        return _check_unit_range(t, "tensor"), None
    if not isinstance(image, np.ndarray):
        try:
            from PIL import Image
        except ImportError:  # pragma: no cover
            Image = None  # type: ignore[assignment]  # noqa: N806
        if Image is not None and isinstance(image, Image.Image):
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                image = np.asarray(image).astype(np.uint16)
            else:
                image = np.asarray(image.convert("RGB"))
        else:
            raise ValueError(
                f"unsupported image type {type(image).__name__}; expected a path, numpy array, torch tensor "
                "or PIL image"
            )
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] in (1, 3, 4):
        a = a[..., :3] if a.shape[2] >= 3 else np.repeat(a, 3, axis=2)
    elif a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    else:
        raise ValueError(f"image arrays must be [H,W] or [H,W,C] with C in (1, 3, 4), got shape {a.shape}")
    if a.dtype == np.uint8:
        t = torch.from_numpy(a.astype(np.float32)).div_(255.0)
    elif a.dtype == np.uint16:
        t = torch.from_numpy(a.astype(np.float32) / 65535.0)
    elif a.dtype == np.bool_:
        t = torch.from_numpy(a.astype(np.float32))
    elif np.issubdtype(a.dtype, np.floating):
        t = _check_unit_range(torch.from_numpy(a.astype(np.float32)), "array")
    else:
        raise ValueError(
            f"unsupported image dtype {a.dtype}; expected uint8, uint16, bool or float in [0, 1]"
        )
    return t.permute(2, 0, 1).contiguous(), None


def _check_unit_range(t: torch.Tensor, what: str) -> torch.Tensor:
    if not torch.isfinite(t).all():
        raise ValueError(f"float image {what} contains NaN or inf")
    lo, hi = float(t.min()), float(t.max())
    if lo < -0.01 or hi > 1.01:
        raise ValueError(
            f"float image {what} must be in [0, 1] (got values in [{lo:.3g}, {hi:.3g}]); divide by 255?"
        )
    return t.clamp_(0.0, 1.0)


# --------------------------------------------------------------------------------------------------------------
# From prediction to depth
# --------------------------------------------------------------------------------------------------------------


def nominal_depth(
    value: np.ndarray,
    space: DepthSpace,
    near_far: tuple[float, float] = DEFAULT_NOMINAL_RANGE,
    percentiles: tuple[float, float] = NOMINAL_PERCENTILES,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Depth from a prediction without reference data.

    * metric depth: returned as is; metric disparity: inverted (``1/v``, 0 -> inf). These are metric.
    * affine-invariant disparity: percentiles ``(lo, hi)`` of ``value`` map to ``far`` and ``near`` in
      *inverse depth* (``1/z = 1/far + n (1/near - 1/far)``, ``n`` the clipped normalised value), so the map stays
      a valid disparity-to-depth conversion; not metric.
    * affine-invariant depth: the percentiles map linearly to ``[near, far]``; not metric.

    Args:
        value: ``[H,W]`` prediction in ``space``.
        space: its ``DepthSpace``.
        near_far: nominal ``(near, far)`` depth, ``0 < near < far``.
        percentiles: percentiles of ``value`` mapped to the range ends.

    Returns:
        ``(depth [H,W] float32, info)``; ``info`` records ``mapping`` and the values used.
    """
    near, far = (float(x) for x in near_far)
    if not 0 < near < far:
        raise ValueError(f"nominal depth range must satisfy 0 < near < far, got {near_far}")
    v = np.asarray(value, dtype=np.float64)
    if space == DepthSpace.DEPTH_METRIC:
        return v.astype(np.float32), {"mapping": "metric"}
    if space == DepthSpace.DISPARITY_METRIC:
        with np.errstate(divide="ignore"):
            return np.where(v > 0, 1.0 / v, np.inf).astype(np.float32), {"mapping": "metric"}
    ok = np.isfinite(v)
    if ok.any():
        lo, hi = (float(x) for x in np.percentile(v[ok], percentiles))
    else:
        lo, hi = 0.0, 1.0
    if not hi > lo:
        hi = lo + max(abs(lo), 1.0) * 1e-6
    n = np.clip((v - lo) / (hi - lo), 0.0, 1.0)
    if space.is_disparity:
        depth = 1.0 / (1.0 / far + n * (1.0 / near - 1.0 / far))
    else:
        depth = near + n * (far - near)
    depth[~ok] = np.nan
    info = {
        "mapping": "nominal",
        "near": near,
        "far": far,
        "percentiles": list(percentiles),
        "range": [lo, hi],
    }
    return depth.astype(np.float32), info


def nearness(value: np.ndarray, space: DepthSpace) -> np.ndarray:
    """A map of ``value`` (``[H,W]`` in ``space``) that grows towards the camera (disparity-like), for colouring.

    Disparity is returned as is; metric depth is inverted; affine-invariant depth is negated (its shift is
    unknown, so an inversion would be meaningless).
    """
    if space.is_disparity:
        return value
    return to_inverse(value) if space.is_metric else -np.asarray(value)


def align_prediction(
    value: np.ndarray,
    space: DepthSpace,
    ref_depth: np.ndarray,
    *,
    min_points: int = 10,
    min_disparity: float = MIN_DISPARITY,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Fit scale and shift of an affine-invariant prediction to metric reference depth (least squares).

    Uses ``ops.alignment.align_to_depth`` with ``method="auto"``: the fit is in disparity space for disparity
    predictions (``1/ref``; AnyDepth) and in depth space for depth predictions. The reference may be sparse
    (LiDAR: 0 = no measurement) and of another resolution with the same aspect ratio: the prediction is
    resampled (bilinear) to the reference grid for the fit, then the fitted parameters are applied at full
    resolution. Aligned disparity is clipped to ``>= min_disparity`` (1/m) before inversion.

    Args:
        value: ``[H,W]`` prediction in ``space``.
        space: its ``DepthSpace`` (must be affine-invariant or metric).
        ref_depth: ``[H_d,W_d]`` metric depth in metres; <= 0 or non-finite = no data.
        min_points: minimum number of valid reference pixels.
        min_disparity: lower clip of aligned disparity.

    Returns:
        ``(depth [H,W] float32 metres, info)`` with ``scale``, ``shift``, ``fit_space``, ``fit_pixels`` and the
        fit's ``abs_rel`` (mean ``|z - z_ref| / z_ref`` over the reference pixels).

    Raises:
        ValueError: too few valid reference pixels, or an aspect ratio that differs from the image's.
    """
    ref = np.asarray(ref_depth, dtype=np.float64)
    if ref.ndim != 2:
        raise ValueError(f"reference depth must be [H,W], got shape {ref.shape}")
    h, w = value.shape
    hd, wd = ref.shape
    if abs((w / h) / (wd / hd) - 1.0) > 0.02:
        raise ValueError(
            f"reference depth is {wd}x{hd} but the image is {w}x{h}: aspect ratios differ (wrong file?)"
        )
    valid = np.isfinite(ref) & (ref > 0)
    n_valid = int(valid.sum())
    if n_valid < min_points:
        raise ValueError(
            f"reference depth has {n_valid} valid pixels; at least {min_points} are needed to align"
        )
    pred_t = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
    if (hd, wd) != (h, w):
        pred_fit = F.interpolate(pred_t[None, None], size=(hd, wd), mode="bilinear", align_corners=False)[
            0, 0
        ]
    else:
        pred_fit = pred_t
    res = align_to_depth(
        pred_fit[None],
        space,
        torch.from_numpy(np.where(valid, ref, 0.0).astype(np.float32))[None],
        torch.from_numpy(valid)[None],
        method="auto",
        min_disparity=min_disparity,
    )
    scale, shift = float(res.scale[0]), float(res.shift[0])
    if not scale > 0:
        raise ValueError(
            f"alignment failed: fitted scale {scale:.4g} is not positive (reference inconsistent?)"
        )
    if space.is_disparity:
        disp = pred_t.double() * scale + shift
        depth = to_inverse(disp.clamp(min=min_disparity)).float().numpy()
        fit_space = "disparity"
    else:
        depth = (pred_t.double() * scale + shift).float().numpy()
        fit_space = "depth"
    fitted = res.depth[0].double().numpy()
    ok = valid & np.isfinite(fitted) & (fitted > 0)
    abs_rel = float(np.mean(np.abs(fitted[ok] - ref[ok]) / ref[ok])) if ok.any() else float("nan")
    info = {
        "mapping": "aligned",
        "scale": scale,
        "shift": shift,
        "fit_space": fit_space,
        "fit_pixels": int(res.fit_pixels[0]),
        "abs_rel": abs_rel,
        "reference_max_m": float(ref[valid].max()),
        "reference_hw": [hd, wd],
    }
    return depth, info


# --------------------------------------------------------------------------------------------------------------
# Video normalisation
# --------------------------------------------------------------------------------------------------------------


class RangeTracker:
    """Temporally smoothed display range for a stream of predictions (video), to avoid flicker.

    Per-frame min-max normalisation makes colours jump whenever a near object enters or leaves the frame. This
    tracker keeps an exponential moving average of robust per-frame percentiles: ``lo_t = m lo_{t-1} + (1 - m)
    p_low(frame_t)`` and the same for ``hi``; the first frame initialises it. ``m = 0`` is per-frame
    normalisation; ``m`` close to 1 approaches one global range.

    Args:
        momentum: EMA momentum in [0, 1).
        percentiles: per-frame robust range (low, high) in percent.
    """

    def __init__(self, momentum: float = 0.9, percentiles: tuple[float, float] = (1.0, 99.0)) -> None:
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum = float(momentum)
        self.percentiles = percentiles
        self.lo: float | None = None
        self.hi: float | None = None

    def update(self, value: np.ndarray) -> tuple[float, float]:
        """Fold one ``[H,W]`` map into the range and return the smoothed ``(lo, hi)`` to display it with."""
        v = np.asarray(value)
        ok = np.isfinite(v)
        if ok.any():
            plo, phi = (float(x) for x in np.percentile(v[ok], self.percentiles))
            if self.lo is None or self.hi is None:
                self.lo, self.hi = plo, phi
            else:
                m = self.momentum
                self.lo = m * self.lo + (1.0 - m) * plo
                self.hi = m * self.hi + (1.0 - m) * phi
        lo = 0.0 if self.lo is None else self.lo
        hi = 1.0 if self.hi is None else self.hi
        if not hi > lo:
            hi = lo + max(abs(lo), 1.0) * 1e-6
        return lo, hi


# --------------------------------------------------------------------------------------------------------------
# Prediction
# --------------------------------------------------------------------------------------------------------------


@dataclass
class _Pending:
    item: PredictItem
    image: torch.Tensor  # [3,H,W]
    focal_35mm: float | None


def _finish(
    runner: Runner,
    p: _Pending,
    raw: torch.Tensor,
    proc_hw: tuple[int, int],
    *,
    fov_deg: float | None,
    default_fov_deg: float,
    nominal_range: tuple[float, float],
    compute_depth: bool,
    timing: dict[str, float],
) -> Prediction:
    h, w = int(p.image.shape[-2]), int(p.image.shape[-1])
    value = raw[0].float().cpu().numpy()
    space = runner.output_space
    k, k_src = resolve_intrinsics(
        h,
        w,
        intrinsics=p.item.intrinsics,
        fov_deg=fov_deg,
        focal_35mm=p.focal_35mm,
        default_fov_deg=default_fov_deg,
    )
    meta: dict[str, Any] = dict(p.item.meta)
    meta.update(
        input_hw=[h, w],
        proc_hw=list(proc_hw),
        intrinsics_source=k_src,
        focal_35mm=p.focal_35mm,
        **timing,
    )
    depth: np.ndarray | None = None
    metric = space.is_metric
    if p.item.align_depth is not None:
        depth, info = align_prediction(value, space, p.item.align_depth)
        metric = True
        meta["depth"] = info
    elif compute_depth:
        depth, info = nominal_depth(value, space, nominal_range)
        meta["depth"] = info
    return Prediction(value=value, space=space, intrinsics=k, metric=metric, depth=depth, meta=meta)


def predict_iter(
    runner: Runner,
    items: Iterable[PredictItem | ImageLike],
    *,
    resolution: Resolution | str | None = None,
    batch_size: int = 4,
    flip_tta: bool = False,
    fov_deg: float | None = None,
    default_fov_deg: float = DEFAULT_FOV_DEG,
    nominal_range: tuple[float, float] = DEFAULT_NOMINAL_RANGE,
    compute_depth: bool = True,
) -> Iterator[Prediction]:
    """Stream predictions for a (possibly long or endless) sequence of images, in input order.

    Consecutive images with the same processing size are batched (up to ``batch_size``); a batch is flushed as
    soon as the size changes, so memory stays bounded and order is kept. Items may be plain image-likes or
    ``PredictItem`` with per-image intrinsics / reference depth / metadata.

    Args:
        runner: a ``Runner`` (``TorchRunner(model, device, dtype)``, or an ONNX runner).
        items: images (see ``PredictItem.image``) or ``PredictItem`` objects.
        resolution: ``Resolution`` or its string form (default: short side 768).
        batch_size: maximum images per forward pass.
        flip_tta: also predict the horizontally flipped image and average (2x compute).
        fov_deg: horizontal field of view (degrees) for images without explicit intrinsics (beats EXIF).
        default_fov_deg: horizontal FOV when neither intrinsics, ``fov_deg`` nor EXIF 35 mm focal are known.
        nominal_range: ``(near, far)`` used by ``nominal_depth`` when a prediction is not aligned.
        compute_depth: fill ``Prediction.depth`` for unaligned predictions (nominal depth). Aligned predictions
            always get metric depth.

    Yields:
        ``Prediction`` per input: ``value [H,W]`` float32 at the input's resolution, ``space``, ``intrinsics``
        (for the ``H x W`` image), ``metric``, ``depth [H,W]`` and ``meta``.

    Raises:
        ValueError, FileNotFoundError: an unreadable image or bad reference depth (the generator stops).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    res = resolution if isinstance(resolution, Resolution) else Resolution.parse(resolution or 768)
    patch = int(runner.patch_size)
    pending: list[_Pending] = []
    pending_hw: tuple[int, int] | None = None

    def flush() -> Iterator[Prediction]:
        assert pending_hw is not None
        t0 = time.perf_counter()
        raw = predict_resized(runner, [p.image for p in pending], pending_hw, flip_tta=flip_tta)
        if runner.device.type == "cuda":
            torch.cuda.synchronize(runner.device)
        timing = {"forward_s": (time.perf_counter() - t0) / len(pending), "batch_size": len(pending)}
        for i, p in enumerate(pending):
            yield _finish(
                runner,
                p,
                raw[i],
                pending_hw,
                fov_deg=fov_deg,
                default_fov_deg=default_fov_deg,
                nominal_range=nominal_range,
                compute_depth=compute_depth,
                timing=timing,
            )
        pending.clear()

    for obj in items:
        item = obj if isinstance(obj, PredictItem) else PredictItem(obj)
        if isinstance(item.image, str | os.PathLike) and "source" not in item.meta:
            item.meta["source"] = os.fspath(item.image)
        image, f35 = load_image(item.image)
        f35 = item.focal_35mm if item.focal_35mm is not None else f35
        hw = res.processing_size((int(image.shape[-2]), int(image.shape[-1])), patch)
        if pending and (hw != pending_hw or len(pending) >= batch_size):
            yield from flush()
        pending_hw = hw
        pending.append(_Pending(item, image, f35))
    if pending:
        yield from flush()


def _is_single(images: Any) -> bool:
    if isinstance(images, str | os.PathLike | torch.Tensor | PredictItem):
        return not (isinstance(images, torch.Tensor) and images.ndim == 4)
    if isinstance(images, np.ndarray):
        return images.ndim in (2, 3)
    return not isinstance(images, Sequence | Iterator) and hasattr(images, "mode")  # PIL image


def _per_image(value: Any, n: int, name: str, *, broadcast: bool) -> list[Any]:
    if isinstance(value, list | tuple):
        if len(value) != n:
            raise ValueError(f"{name} has {len(value)} entries for {n} images")
        return list(value)
    if value is None or broadcast:
        return [value] * n
    raise ValueError(f"{name} must be a list with one entry per image when several images are given")


@overload
def predict(
    model: torch.nn.Module | Runner,
    images: list[Any] | tuple[Any, ...],
    *,
    device: torch.device | None = ...,
    dtype: torch.dtype | None = ...,
    resolution: Resolution | str | None = ...,
    batch_size: int = ...,
    flip_tta: bool = ...,
    intrinsics: Intrinsics | Sequence[Intrinsics | None] | None = ...,
    fov_deg: float | None = ...,
    default_fov_deg: float = ...,
    align_to: np.ndarray | Sequence[np.ndarray | None] | None = ...,
    nominal_range: tuple[float, float] = ...,
) -> list[Prediction]: ...


@overload
def predict(
    model: torch.nn.Module | Runner,
    images: str | os.PathLike[str] | PredictItem,
    *,
    device: torch.device | None = ...,
    dtype: torch.dtype | None = ...,
    resolution: Resolution | str | None = ...,
    batch_size: int = ...,
    flip_tta: bool = ...,
    intrinsics: Intrinsics | Sequence[Intrinsics | None] | None = ...,
    fov_deg: float | None = ...,
    default_fov_deg: float = ...,
    align_to: np.ndarray | Sequence[np.ndarray | None] | None = ...,
    nominal_range: tuple[float, float] = ...,
) -> Prediction: ...


@overload
def predict(
    model: torch.nn.Module | Runner,
    images: ImageLike,
    *,
    device: torch.device | None = ...,
    dtype: torch.dtype | None = ...,
    resolution: Resolution | str | None = ...,
    batch_size: int = ...,
    flip_tta: bool = ...,
    intrinsics: Intrinsics | Sequence[Intrinsics | None] | None = ...,
    fov_deg: float | None = ...,
    default_fov_deg: float = ...,
    align_to: np.ndarray | Sequence[np.ndarray | None] | None = ...,
    nominal_range: tuple[float, float] = ...,
) -> Prediction | list[Prediction]: ...


def predict(
    model: torch.nn.Module | Runner,
    images: ImageLike | Sequence[ImageLike],
    *,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
    resolution: Resolution | str | None = None,
    batch_size: int = 4,
    flip_tta: bool = False,
    intrinsics: Intrinsics | Sequence[Intrinsics | None] | None = None,
    fov_deg: float | None = None,
    default_fov_deg: float = DEFAULT_FOV_DEG,
    align_to: np.ndarray | Sequence[np.ndarray | None] | None = None,
    nominal_range: tuple[float, float] = DEFAULT_NOMINAL_RANGE,
) -> Prediction | list[Prediction]:
    """Predict depth for one image or a list of images. Writes nothing.

    Args:
        model: a ``DepthModel`` (run with PyTorch on ``device``/``dtype``) or any ``Runner`` (e.g. ONNX Runtime).
        images: one image or a list: paths (EXIF orientation applied), numpy ``[H,W]``/``[H,W,C]`` arrays
            (uint8, uint16, or float in [0, 1]), a numpy ``[B,H,W,C]`` batch, torch ``[3,H,W]`` tensors (a
            ``[B,3,H,W]`` batch), PIL images, or ``PredictItem`` objects. Sizes may differ.
        device: torch device for a ``DepthModel`` (None: where the model is; the model is moved otherwise).
        dtype: compute dtype for a ``DepthModel`` (``torch.float32`` default, ``bfloat16``/``float16`` autocast).
        resolution: processing size policy (``Resolution`` or ``"768"``, ``"long:1024"``, ``"HxW"``,
            ``"native"``); default short side 768. Predictions are always returned at the input size.
        batch_size: images per forward pass (consecutive same-size images are batched).
        flip_tta: average with the prediction of the horizontally flipped image.
        intrinsics: camera intrinsics (pixels, for the image as given), one for all images or one per image.
        fov_deg: horizontal field of view in degrees, used when ``intrinsics`` is not given (beats EXIF).
        default_fov_deg: horizontal FOV when nothing else is known (``ops.geometry.DEFAULT_FOV_DEG`` = 60).
        align_to: metric reference depth in metres (``[H_d,W_d]``, sparse allowed, 0 = none), one array per
            image (list) or one for a single image; aligned predictions have ``metric=True`` and metric ``depth``.
        nominal_range: ``(near, far)`` for the nominal depth of unaligned predictions (see ``nominal_depth``).

    Returns:
        A ``Prediction`` for a single image, else a list in input order. ``value`` is float32 ``[H,W]`` in
        ``model.output_space`` (AnyDepth: affine-invariant disparity); ``depth`` is float32 ``[H,W]``, metric
        (metres) only when ``metric`` is True; ``intrinsics`` are those used for this image; ``meta`` holds
        sizes, the intrinsics source, the depth mapping (nominal range or fitted scale/shift) and timings.

    Raises:
        ValueError, FileNotFoundError: unreadable inputs, bad arguments, or reference depth that cannot be used.
    """
    single = _is_single(images)
    if single:
        seq: list[Any] = [images]
    elif isinstance(images, np.ndarray) or (isinstance(images, torch.Tensor) and images.ndim == 4):
        seq = list(images)
    else:
        seq = list(images)
    n = len(seq)
    ks = _per_image(intrinsics, n, "intrinsics", broadcast=True)
    refs = [align_to] if single else _per_image(align_to, n, "align_to", broadcast=False)
    items = []
    for img, k, ref in zip(seq, ks, refs, strict=True):
        if isinstance(img, PredictItem):
            items.append(img)
        else:
            items.append(PredictItem(img, intrinsics=k, align_depth=None if ref is None else np.asarray(ref)))
    runner = as_runner(model, device, dtype)
    out = list(
        predict_iter(
            runner,
            items,
            resolution=resolution,
            batch_size=batch_size,
            flip_tta=flip_tta,
            fov_deg=fov_deg,
            default_fov_deg=default_fov_deg,
            nominal_range=nominal_range,
        )
    )
    return out[0] if single else out


def describe_runner(runner: Runner) -> dict[str, Any]:
    """JSON-friendly description of a runner (for run summaries)."""
    d: dict[str, Any] = {
        "runner": type(runner).__name__,
        "output_space": DepthSpace(runner.output_space).value,
        "patch_size": int(runner.patch_size),
        "device": str(runner.device),
    }
    if isinstance(runner, TorchRunner):
        d["dtype"] = str(runner.dtype).replace("torch.", "")
        cfg = getattr(runner.model, "config", None)
        if cfg is not None and hasattr(cfg, "to_dict"):
            d["model_config"] = cfg.to_dict()
    return d
