"""The evaluation loop: ``evaluate(predict_fn, spec, data_root) -> BenchmarkResult``. Writes nothing.

For every sample of the benchmark, in list order and with batch size 1 (Marigold protocol, ``eval.py``):

1. read the RGB (uint8 ``[H,W,3]``) and the ground-truth depth (metres) with its valid mask;
2. KITTI: apply the KB crop to both;
3. build the evaluation mask: GT valid ∧ (min_depth < GT < max_depth, unless disabled) ∧ crop mask (Eigen...);
4. ``pred = predict_fn(rgb)`` at the (cropped) input size, in the predictor's ``DepthSpace``;
5. align per image (``anydepth.ops.alignment.align_to_depth``: ``least_square``, ``least_square_disparity``,
   ``median`` or ``none``), fitting on the evaluation mask (subsampled for ETH3D);
6. clip the aligned depth to [min_depth, max_depth] and then to >= 1e-6;
7. compute the metrics on the evaluation mask; keep the per-image values.

Means are taken over images at the end. Files that are missing or unreadable are reported by path; by default a
benchmark with any failed sample raises ``IncompleteBenchmarkError`` instead of averaging fewer images.

Predictors: any callable ``f(rgb) -> [H,W] array`` (give its ``pred_space``), a ``ModelPredictor`` wrapping a
``DepthModel`` or any runner (processing resolution, optional flip TTA; the forward path shared with inference,
``ops.runner.predict_resized``), or ``PrecomputedPredictions`` reading ``.npy`` files.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anydepth.eval.benchmarks import (
    BenchmarkSpec,
    apply_crop,
    eval_mask,
    get_benchmark,
    kb_crop_box,
    open_dataset,
)
from anydepth.eval.metrics import DEFAULT_METRICS, compute_metrics, mean_over_images
from anydepth.ops.alignment import align_to_depth, resolve_alignment
from anydepth.ops.resize import processing_size
from anydepth.ops.runner import Runner, as_runner, predict_resized
from anydepth.shard import Shard, merge_rows
from anydepth.types import DepthSpace

__all__ = [
    "Predictor",
    "FunctionPredictor",
    "ModelPredictor",
    "PrecomputedPredictions",
    "BenchmarkResult",
    "SampleFailure",
    "IncompleteBenchmarkError",
    "evaluate",
    "merge_results",
    "parse_space",
    "score_prediction",
    "score_batch",
    "Scores",
]

logger = logging.getLogger(__name__)

_SPACE_ALIASES = {
    "depth": DepthSpace.DEPTH_AFFINE_INVARIANT,
    "disparity": DepthSpace.DISPARITY_AFFINE_INVARIANT,
}


def parse_space(space: DepthSpace | str) -> DepthSpace:
    """``DepthSpace`` from an enum, its value, or the shorthands ``depth`` / ``disparity`` (affine-invariant).

    Raises:
        ValueError: unknown name (lists the valid ones).
    """
    if isinstance(space, DepthSpace):
        return space
    if space in _SPACE_ALIASES:
        return _SPACE_ALIASES[space]
    try:
        return DepthSpace(space)
    except ValueError:
        valid = list(_SPACE_ALIASES) + [s.value for s in DepthSpace]
        raise ValueError(f"unknown prediction space {space!r}; expected one of {valid}") from None


class Predictor:
    """Base class of predictors: ``predictor(rgb, name) -> [H,W]`` prediction in ``self.space``.

    Attributes:
        space: ``DepthSpace`` of the returned maps.
    """

    space: DepthSpace

    def __call__(self, image: np.ndarray, name: str) -> np.ndarray | torch.Tensor:
        """Predict for ``image`` (uint8 ``[H,W,3]`` RGB) of sample ``name``; returns ``[H,W]`` at the same size."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """Metadata recorded with the results."""
        return {"kind": type(self).__name__, "space": self.space.value}

    def last_info(self) -> dict[str, Any]:
        """Per-sample details of the last call (e.g. processing size), recorded in the per-sample table."""
        return {}


class FunctionPredictor(Predictor):
    """Wraps a plain callable ``fn(rgb uint8 [H,W,3]) -> [H,W]`` whose output is in ``space``."""

    def __init__(
        self, fn: Callable[[np.ndarray], Any], space: DepthSpace | str, name: str | None = None
    ) -> None:
        self.fn = fn
        self.space = parse_space(space)
        self.name = name or getattr(fn, "__name__", type(fn).__name__)

    def __call__(self, image: np.ndarray, name: str) -> Any:
        return self.fn(image)

    def describe(self) -> dict[str, Any]:
        return {"kind": "function", "function": self.name, "space": self.space.value}


class ModelPredictor(Predictor):
    """Runs a depth network on one image through the shared forward path (``ops.runner.predict_resized``).

    The image is resized so that its longest side is ``processing_res`` (0 or None: native size), rounded to a
    multiple of the patch size (``ops.resize.fit_to_patch_multiple``: bilinear, antialiased when shrinking); the
    raw output is resized back bilinearly to the input size (``ops.resize.restore``). With ``flip_tta`` the
    output for the horizontally flipped image (same forward pass) is flipped back and averaged with the plain
    output (in the model's output space).

    Args:
        model: a ``DepthModel``-like network (``forward([B,3,H,W] RGB in [0,1]) -> [B,1,H,W]``, attributes
            ``patch_size`` and ``output_space``; wrapped in ``TorchRunner``) or any ``ops.runner.Runner``
            (``--fast`` model, ONNX Runtime).
        processing_res: longest side for inference; 0/None = native (rounded to the patch multiple).
        flip_tta: average with the horizontally flipped prediction.
        device: device of a torch model (default: the device of its first parameter, else CPU).
        autocast_dtype: run a torch model under ``torch.autocast`` with this dtype (e.g. ``torch.bfloat16``);
            None = float32.
        info: extra metadata recorded in results (model name, checkpoint...).
    """

    def __init__(
        self,
        model: torch.nn.Module | Runner,
        *,
        processing_res: int | None = None,
        flip_tta: bool = False,
        device: torch.device | str | None = None,
        autocast_dtype: torch.dtype | None = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        if processing_res is not None and processing_res < 0:
            raise ValueError(f"processing_res must be >= 0 (0 = native), got {processing_res}")
        self.runner = as_runner(model, device, autocast_dtype)
        self.model = getattr(self.runner, "model", model)
        self.patch = int(self.runner.patch_size)
        self.space = parse_space(self.runner.output_space)
        self.processing_res = int(processing_res or 0)
        self.flip_tta = bool(flip_tta)
        self.device = self.runner.device
        run_dtype = getattr(self.runner, "dtype", None)  # a TorchRunner's compute dtype
        self.autocast_dtype = autocast_dtype or (run_dtype if run_dtype != torch.float32 else None)
        self.info = dict(info or {})
        self._last: dict[str, Any] = {}

    def __call__(self, image: np.ndarray, name: str) -> np.ndarray:
        img = torch.as_tensor(np.ascontiguousarray(image))
        if img.ndim != 3 or img.shape[-1] != 3:
            raise ValueError(f"{name}: expected an RGB image [H,W,3], got {tuple(img.shape)}")
        x = img.permute(2, 0, 1)
        x = x.float() / 255.0 if img.dtype == torch.uint8 else x.float()
        hw = (int(x.shape[-2]), int(x.shape[-1]))
        proc = processing_size(hw, self.patch, short_side=None, long_side=self.processing_res or None)
        y = predict_resized(self.runner, [x], proc, flip_tta=self.flip_tta)[0]
        self._last = {"proc_h": proc[0], "proc_w": proc[1]}
        return y[0].cpu().numpy()

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "model",
            "space": self.space.value,
            "patch_size": self.patch,
            "processing_res": self.processing_res,
            "processing_res_meaning": "longest side in pixels, rounded to the patch multiple; 0 = native",
            "flip_tta": self.flip_tta,
            "device": str(self.device),
            "autocast_dtype": str(self.autocast_dtype).replace("torch.", "") if self.autocast_dtype else None,
            **self.info,
        }

    def last_info(self) -> dict[str, Any]:
        return dict(self._last)


#: How Marigold names prediction files per benchmark (``get_pred_name`` in its ``base_depth_dataset.py``).
_MARIGOLD_NAME_MODE = {"nyuv2": "rgb_id"}


class PrecomputedPredictions(Predictor):
    """Reads one float ``.npy`` prediction per sample from ``pred_dir``.

    Naming ``"anydepth"`` (default): the sample's RGB path relative to the dataset root with its extension
    replaced by ``.npy`` (``test/kitchen_0004/rgb_0001.npy``). Naming ``"marigold"``: the files Marigold's
    ``infer.py`` writes (``test/kitchen_0004/pred_0001.npy`` for NYUv2, ``<dir>/pred_<basename>.npy``
    otherwise). The array must have the (cropped, for KITTI) input size; a leading or trailing singleton axis is
    squeezed.

    Args:
        pred_dir: folder with the predictions.
        space: ``DepthSpace`` (or ``depth`` / ``disparity``) of the stored values.
        naming: ``"anydepth"`` or ``"marigold"``.
        benchmark: benchmark name (needed for Marigold naming).
    """

    NAMINGS = ("anydepth", "marigold")

    def __init__(
        self,
        pred_dir: str | os.PathLike[str],
        space: DepthSpace | str,
        *,
        naming: str = "anydepth",
        benchmark: str | None = None,
    ) -> None:
        self.pred_dir = Path(pred_dir)
        if not self.pred_dir.is_dir():
            raise FileNotFoundError(f"prediction directory not found: {self.pred_dir}")
        if naming not in self.NAMINGS:
            raise ValueError(f"unknown prediction naming {naming!r}; expected one of {self.NAMINGS}")
        self.space = parse_space(space)
        self.naming = naming
        self.benchmark = benchmark

    def path_for(self, name: str) -> Path:
        """The prediction file of sample ``name`` (RGB path relative to the dataset root)."""
        rel = Path(name)
        if self.naming == "anydepth":
            return self.pred_dir / rel.with_suffix(".npy")
        base = rel.name
        if _MARIGOLD_NAME_MODE.get(self.benchmark or "") == "rgb_id":
            pred = "pred_" + base.split("_")[1]
        else:
            pred = "pred_" + base
        return self.pred_dir / rel.parent / (os.path.splitext(pred)[0] + ".npy")

    def __call__(self, image: np.ndarray, name: str) -> np.ndarray:
        p = self.path_for(name)
        if not p.is_file():
            raise FileNotFoundError(f"prediction not found: {p}")
        try:
            arr = np.load(p, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise ValueError(f"cannot read prediction {p}: {e}") from e
        arr = np.asarray(arr)
        while arr.ndim > 2 and (arr.shape[0] == 1 or arr.shape[-1] == 1):
            arr = arr[0] if arr.shape[0] == 1 else arr[..., 0]
        if arr.ndim != 2:
            raise ValueError(f"prediction {p}: expected a [H,W] array, got shape {arr.shape}")
        if not np.issubdtype(arr.dtype, np.floating):
            raise ValueError(f"prediction {p}: expected a float array, got {arr.dtype}")
        return arr.astype(np.float32, copy=False)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "predictions",
            "dir": str(self.pred_dir),
            "space": self.space.value,
            "naming": self.naming,
        }


@dataclass(frozen=True)
class SampleFailure:
    """A sample that could not be scored: its name, the offending path if known, and the error message."""

    name: str
    error: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "error": self.error}


@dataclass
class BenchmarkResult:
    """Result of one benchmark run.

    Attributes:
        benchmark: benchmark name.
        metrics: ``{metric: mean over images}`` (float).
        per_sample: one dict per scored image: ``name``, metric values, ``scale``, ``shift``, ``n_valid``,
            ``fit_pixels``, and predictor details (``proc_h``, ``proc_w``).
        num_samples: images scored.
        expected_num_samples: images the official split scores.
        failures: samples that could not be scored.
        complete: True when every selected sample was scored, no ``limit`` was used and (for a scanned layout) the
            count equals the official one.
        meta: protocol and provenance (alignment, space, crop, mask, ranges, split source, data root, predictor...).
    """

    benchmark: str
    metrics: dict[str, float]
    per_sample: list[dict[str, Any]]
    num_samples: int
    expected_num_samples: int
    failures: list[SampleFailure] = field(default_factory=list)
    complete: bool = True
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, *, per_sample: bool = False) -> dict[str, Any]:
        """JSON-friendly dict (per-sample rows only if asked)."""
        d: dict[str, Any] = {
            "benchmark": self.benchmark,
            "metrics": dict(self.metrics),
            "num_samples": self.num_samples,
            "expected_num_samples": self.expected_num_samples,
            "complete": self.complete,
            "failures": [f.to_dict() for f in self.failures],
            **self.meta,
        }
        if per_sample:
            d["per_sample"] = list(self.per_sample)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], per_sample: list[dict[str, Any]] | None = None) -> BenchmarkResult:
        """The inverse of ``to_dict`` (e.g. a benchmark entry of a saved ``metrics.json``); ``per_sample``
        replaces ``d["per_sample"]`` (e.g. rows read back from ``per_sample.csv``)."""
        known = {
            "benchmark",
            "metrics",
            "num_samples",
            "expected_num_samples",
            "complete",
            "failures",
            "per_sample",
        }
        try:
            return cls(
                benchmark=str(d["benchmark"]),
                metrics={k: float(v) for k, v in d["metrics"].items()},
                per_sample=list(per_sample if per_sample is not None else d.get("per_sample", [])),
                num_samples=int(d["num_samples"]),
                expected_num_samples=int(d["expected_num_samples"]),
                failures=[SampleFailure(str(f["name"]), str(f["error"])) for f in d.get("failures", [])],
                complete=bool(d["complete"]),
                meta={k: v for k, v in d.items() if k not in known},
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"not a benchmark result ({type(e).__name__}: {e})") from None


class IncompleteBenchmarkError(ValueError):
    """Raised when samples could not be scored and ``allow_missing`` is False. ``result`` holds the partial run."""

    def __init__(self, message: str, result: BenchmarkResult) -> None:
        super().__init__(message)
        self.result = result


def _as_predictor(
    predict_fn: Predictor | Callable[..., Any], pred_space: DepthSpace | str | None
) -> Predictor:
    if isinstance(predict_fn, Predictor):
        if pred_space is not None and parse_space(pred_space) != predict_fn.space:
            raise ValueError(
                f"pred_space {pred_space!r} contradicts the predictor's space {predict_fn.space.value!r}"
            )
        return predict_fn
    if pred_space is None:
        raise ValueError(
            "pred_space is required for a plain predict_fn callable (e.g. 'disparity' or 'depth')"
        )
    return FunctionPredictor(predict_fn, pred_space)


def _to_2d_float(pred: Any, hw: tuple[int, int], name: str) -> torch.Tensor:
    t = (
        pred.detach().cpu()
        if isinstance(pred, torch.Tensor)
        else torch.from_numpy(np.ascontiguousarray(pred))
    )
    while t.ndim > 2 and t.shape[0] == 1:
        t = t[0]
    if tuple(t.shape) != tuple(hw):
        raise ValueError(
            f"{name}: prediction has shape {tuple(t.shape)}, expected the input size {tuple(hw)}"
        )
    if not t.dtype.is_floating_point:
        raise ValueError(f"{name}: prediction must be a float array, got {t.dtype}")
    return t.float()


def evaluate(
    predict_fn: Predictor | Callable[..., Any],
    spec: BenchmarkSpec | str,
    data_root: str | os.PathLike[str],
    *,
    pred_space: DepthSpace | str | None = None,
    split_file: str | os.PathLike[str] | None = None,
    alignment: str | None = None,
    alignment_max_res: int | None | str = "spec",
    limit: int | None = None,
    allow_missing: bool = False,
    dataset_kwargs: dict[str, Any] | None = None,
    progress: Callable[[Iterable[int], int], Iterable[int]] | None = None,
    shard: Shard | None = None,
) -> BenchmarkResult:
    """Score a predictor on one benchmark under the Marigold protocol. Writes nothing.

    Args:
        predict_fn: a ``Predictor`` or a callable ``fn(rgb uint8 [H,W,3]) -> [H,W]`` (then ``pred_space`` is
            required). The prediction must have the size of the image it receives (the KB-cropped frame on KITTI).
        spec: benchmark spec or registered name.
        data_root: extracted directory, tar archive, or directory holding Marigold's tar.
        pred_space: ``DepthSpace`` of a plain callable's output (``"depth"``/``"disparity"`` = affine-invariant).
        split_file: Marigold-format split list; None = the official list's basename in ``data_root``, else scan.
        alignment: ``"auto"`` or one of ``ALIGNMENT_METHODS``; None = the spec's default (``auto``).
        alignment_max_res: override the spec's fit subsampling (None = full resolution); ``"spec"`` = keep.
        limit: score only the first ``limit`` samples (marks the result incomplete).
        allow_missing: return means over the samples that could be read instead of raising.
        dataset_kwargs: extra reader options (e.g. ETH3D ``depth_hw``, DIODE ``subset``).
        progress: optional wrapper ``progress(iterable, total) -> iterable`` (e.g. a tqdm bar; the CLI uses one).
        shard: score only this shard's samples (positions ``K, K+N, ...`` of the, limited, sample list; see
            ``anydepth.shard``); the result's ``meta["shard"]`` records the shard and its sample names, and
            ``merge_results`` combines the results of all shards into that of one run.

    Returns:
        ``BenchmarkResult`` with per-image values and means over images.

    Raises:
        IncompleteBenchmarkError: some samples failed (missing/corrupt files, wrong prediction size, no valid
            pixel) or a scanned layout has fewer samples than the official split, and ``allow_missing`` is False.
        FileNotFoundError: ``data_root`` does not exist or holds no sample.
    """
    s = get_benchmark(spec)
    predictor = _as_predictor(predict_fn, pred_space)
    method = resolve_alignment(alignment or s.alignment, predictor.space)
    max_res = s.alignment_max_res if alignment_max_res == "spec" else alignment_max_res
    if max_res is not None and not isinstance(max_res, int):
        raise ValueError(f"alignment_max_res must be an int or None, got {max_res!r}")
    dataset = open_dataset(s, data_root, split_file=split_file, **(dataset_kwargs or {}))
    n_total = len(dataset)
    indices: Sequence[int] = range(n_total if limit is None else min(limit, n_total))
    if shard is not None:
        indices = shard.take(indices)
    it: Iterable[int] = progress(indices, len(indices)) if progress is not None else indices

    per_sample: list[dict[str, Any]] = []
    values: dict[str, list[float]] = {m: [] for m in s.metrics}
    failures: list[SampleFailure] = []
    input_sizes: set[tuple[int, int]] = set()
    proc_sizes: set[tuple[int, int]] = set()
    t0 = time.perf_counter()
    for i in it:
        name = dataset.sample_name(i)
        try:
            row = _score_sample(predictor, dataset, i, s, method, max_res)
        except (FileNotFoundError, ValueError, OSError) as e:
            logger.warning("%s: sample %s failed: %s", s.name, name, e)
            failures.append(SampleFailure(name, str(e)))
            continue
        for m in s.metrics:
            values[m].append(row[m])
        input_sizes.add((row["input_h"], row["input_w"]))
        if "proc_h" in row:
            proc_sizes.add((row["proc_h"], row["proc_w"]))
        per_sample.append(row)
    elapsed = time.perf_counter() - t0

    scanned = dataset.split_source.startswith("scan:")
    expected = int(getattr(dataset, "expected_num_samples", s.num_samples))
    count_ok = n_total == expected
    if not count_ok:
        msg = f"{s.name}: the split has {n_total} samples, the official split scores {expected}"
        if scanned:
            failures.append(
                SampleFailure("(layout)", msg + f" (samples discovered by scanning {dataset.root})")
            )
        else:
            logger.warning("%s (list %s)", msg, dataset.split_file or dataset.split_source)
    complete = not failures and limit is None and (count_ok or not scanned)

    meta = {
        "display_name": s.display_name,
        "alignment": method,
        "alignment_max_res": max_res,
        "alignment_downsample": s.alignment_downsample if max_res is not None else None,
        "pred_space": predictor.space.value,
        "crop": s.crop,
        "crop_hw": [352, 1216] if s.crop == "kb" else None,
        "eval_mask": s.eval_mask,
        "depth_range": [s.min_depth, s.max_depth],
        "gt_range_mask": s.mask_range,
        "pred_clip": [s.min_depth, s.max_depth, s.min_pred_depth],
        "options": dict(s.options),
        "metrics_reduction": "per-image values averaged over images",
        "data_root": str(dataset.root),
        "data_source": dataset.source.kind,
        "split_source": dataset.split_source,
        "split_sha256": dataset.split_sha256,
        "split_num_samples": n_total,
        "limit": limit,
        "allow_missing": allow_missing,
        "input_sizes": sorted([list(x) for x in input_sizes]),
        "processing_sizes": sorted([list(x) for x in proc_sizes]),
        "predictor": predictor.describe(),
        "seconds": round(elapsed, 3),
    }
    if shard is not None:
        meta["shard"] = {
            "index": shard.index,
            "count": shard.count,
            "samples": [dataset.sample_name(i) for i in indices],
        }
    result = BenchmarkResult(
        benchmark=s.name,
        metrics=mean_over_images(values),
        per_sample=per_sample,
        num_samples=len(per_sample),
        expected_num_samples=expected,
        failures=failures,
        complete=complete,
        meta=meta,
    )
    if failures and not allow_missing:
        listed = "\n".join(f"  {f.name}: {f.error}" for f in failures[:20])
        more = f"\n  ... and {len(failures) - 20} more" if len(failures) > 20 else ""
        raise IncompleteBenchmarkError(
            f"{s.name}: {len(failures)} sample(s) could not be scored (refusing to average fewer images; "
            f"allow_missing relaxes this):\n{listed}{more}",
            result,
        )
    if failures:
        logger.warning(
            "%s: %d sample(s) missing; means are over %d images", s.name, len(failures), len(per_sample)
        )
    return result


def merge_results(parts: Sequence[BenchmarkResult]) -> BenchmarkResult:
    """Combine the results of every shard of one benchmark (``evaluate(..., shard=...)``) into that of one run.

    Per-sample rows and failures are put back into the order of the full sample list (``anydepth.shard.merge_rows``)
    and the means are recomputed over them with the same reduction, so ``metrics`` and ``per_sample`` equal those
    of an unsharded ``evaluate`` bit for bit. ``meta["seconds"]`` becomes the sum over shards (compute time);
    ``input_sizes`` / ``processing_sizes`` the union; ``meta["shard"]`` is dropped.

    Args:
        parts: one result per shard ``0 .. N-1`` of the same benchmark (any order), each with ``meta["shard"]``.

    Raises:
        ValueError: results of different benchmarks or shard counts, a shard missing or given twice, a result
            without shard information, or inconsistent sample lists.
    """
    if not parts:
        raise ValueError("merge_results: no shard results given")
    infos = []
    for p in parts:
        info = p.meta.get("shard")
        if not isinstance(info, dict) or p.benchmark != parts[0].benchmark:
            raise ValueError(
                f"merge_results: expected shard results of {parts[0].benchmark}, got {p.benchmark} "
                f"(shard info: {info!r})"
            )
        infos.append(info)
    count = int(infos[0]["count"])
    found = sorted(int(i["index"]) for i in infos)
    if any(int(i["count"]) != count for i in infos) or found != list(range(count)):
        got = sorted(f"{i['index']}/{i['count']}" for i in infos)
        raise ValueError(
            f"{parts[0].benchmark}: expected the results of shards 0..{count - 1} of {count}, got {got}"
        )
    order: list[str] = [""] * sum(len(i["samples"]) for i in infos)
    for info in infos:
        for j, name in enumerate(info["samples"]):
            pos = int(info["index"]) + j * count
            if pos >= len(order):
                raise ValueError(f"{parts[0].benchmark}: shard sample lists do not form one strided list")
            order[pos] = str(name)
    rows = merge_rows([p.per_sample for p in parts], key=lambda r: r["name"], order=order, allow_missing=True)
    owned = [set(info["samples"]) for info in infos]
    failures = merge_rows(
        [[f for f in p.failures if f.name in mine] for p, mine in zip(parts, owned, strict=True)],
        key=lambda f: f.name,
        order=order,
        allow_missing=True,
    )
    if len(rows) + len(failures) != len(order):
        raise ValueError(
            f"{parts[0].benchmark}: some samples are neither scored nor failed in the shard results"
        )
    failures += [
        f for f in parts[0].failures if f.name not in owned[0]
    ]  # layout checks: the same in every shard
    meta = {k: v for k, v in parts[0].meta.items() if k != "shard"}
    for key in ("input_sizes", "processing_sizes"):
        meta[key] = sorted({tuple(x) for p in parts for x in p.meta.get(key, [])})
        meta[key] = [list(x) for x in meta[key]]
    meta["seconds"] = round(sum(float(p.meta.get("seconds", 0.0)) for p in parts), 3)
    metrics = mean_over_images({m: [r[m] for r in rows] for m in parts[0].metrics})
    return BenchmarkResult(
        benchmark=parts[0].benchmark,
        metrics=metrics,
        per_sample=rows,
        num_samples=len(rows),
        expected_num_samples=parts[0].expected_num_samples,
        failures=failures,
        complete=not failures and meta.get("limit") is None,
        meta=meta,
    )


@dataclass
class Scores:
    """What ``score_batch`` returns (per image of the batch).

    Attributes:
        depth: ``[B,H,W]`` aligned and clipped depth in metres (dtype of the prediction).
        metrics: ``{name: [B] float64}`` per-image metric values.
        scale, shift: ``[B]`` fitted alignment parameters (in the fit space).
        fit_pixels: ``[B]`` pixels the fit used.
    """

    depth: torch.Tensor
    metrics: dict[str, torch.Tensor]
    scale: torch.Tensor
    shift: torch.Tensor
    fit_pixels: torch.Tensor


def score_batch(
    pred: torch.Tensor,
    pred_space: DepthSpace | str,
    gt: torch.Tensor,
    mask: torch.Tensor,
    *,
    alignment: str = "auto",
    min_depth: float,
    max_depth: float,
    min_pred_depth: float = 1e-6,
    alignment_max_res: int | None = None,
    alignment_downsample: str = "marigold",
    metrics: Sequence[str] = DEFAULT_METRICS,
) -> Scores:
    """The one scoring function: align each prediction, clip it and compute its metrics (steps 5-7).

    Used by ``evaluate`` (one image at a time, via ``score_prediction``), the trainer's validation and the demo.
    Computations run in the dtype of ``pred`` / ``gt`` (the solve itself in float64).

    Args:
        pred: ``[B,H,W]`` float predictions in ``pred_space`` at the ground-truth size.
        pred_space: ``DepthSpace`` (or ``depth`` / ``disparity``) of ``pred``.
        gt: ``[B,H,W]`` float ground-truth depth in metres.
        mask: ``[B,H,W]`` bool evaluation mask (used for the fit and the metrics).
        alignment: ``auto`` or one of ``ALIGNMENT_METHODS``.
        min_depth, max_depth: clip range of the aligned depth (metres); then clipped to ``>= min_pred_depth``.
        alignment_max_res, alignment_downsample: fit subsampling (see ``anydepth.ops.alignment``).
        metrics: metric names.

    Returns:
        ``Scores`` (aligned depth, per-image metrics, scale, shift, fit pixels). An image without any mask pixel
        gets NaN metrics.
    """
    space = parse_space(pred_space)
    method = resolve_alignment(alignment, space)
    aligned = align_to_depth(
        pred, space, gt, mask, method, max_res=alignment_max_res, downsample=alignment_downsample
    )
    depth = aligned.depth.clamp(min=min_depth, max=max_depth).clamp(min=min_pred_depth)
    per = compute_metrics(depth, gt, mask, metrics)
    return Scores(depth, per, aligned.scale, aligned.shift, aligned.fit_pixels)


def score_prediction(
    pred: torch.Tensor,
    pred_space: DepthSpace | str,
    gt: torch.Tensor,
    mask: torch.Tensor,
    *,
    alignment: str = "auto",
    min_depth: float,
    max_depth: float,
    min_pred_depth: float = 1e-6,
    alignment_max_res: int | None = None,
    alignment_downsample: str = "marigold",
    metrics: Sequence[str] = DEFAULT_METRICS,
) -> dict[str, float]:
    """``score_batch`` for one ``[H,W]`` prediction, ground truth and mask, as Python numbers.

    Returns:
        ``{metric: value, "scale": s, "shift": t, "fit_pixels": n}`` as Python floats/ints.
    """
    sc = score_batch(
        pred[None],
        pred_space,
        gt[None],
        mask[None],
        alignment=alignment,
        min_depth=min_depth,
        max_depth=max_depth,
        min_pred_depth=min_pred_depth,
        alignment_max_res=alignment_max_res,
        alignment_downsample=alignment_downsample,
        metrics=metrics,
    )
    out: dict[str, Any] = {k: float(v[0]) for k, v in sc.metrics.items()}
    out["scale"] = float(sc.scale[0])
    out["shift"] = float(sc.shift[0])
    out["fit_pixels"] = int(sc.fit_pixels[0])
    return out


def _score_sample(
    predictor: Predictor,
    dataset: Any,
    i: int,
    s: BenchmarkSpec,
    method: str,
    max_res: int | None,
) -> dict[str, Any]:
    name = dataset.sample_name(i)
    image = dataset.load_image(i)
    gt, valid = dataset.load_depth(i)
    if image.shape[:2] != gt.shape:
        raise ValueError(
            f"{dataset.describe(dataset.pair(i)[0])}: image size {image.shape[:2]} differs from depth size {gt.shape}"
        )
    box = kb_crop_box(gt.shape) if s.crop == "kb" else None
    image, gt, valid = apply_crop(image, box), apply_crop(gt, box), apply_crop(valid, box)
    hw = (int(gt.shape[0]), int(gt.shape[1]))
    mask = valid.copy()
    if s.mask_range:
        with np.errstate(invalid="ignore"):
            mask &= (gt > s.min_depth) & (gt < s.max_depth)
    crop_mask = eval_mask(s.eval_mask, hw, box)
    if crop_mask is not None:
        mask &= crop_mask
    n_valid = int(mask.sum())
    if n_valid == 0:
        raise ValueError(f"{dataset.describe(dataset.pair(i)[1])}: no valid ground-truth pixel after masking")

    pred = _to_2d_float(predictor(np.ascontiguousarray(image), name), hw, name)
    n_bad = int((~torch.isfinite(pred)).sum())
    if n_bad:  # never a silent metric: NaN/inf would give scale 0 / shift NaN and shift the means
        where = predictor.path_for(name) if isinstance(predictor, PrecomputedPredictions) else name
        raise ValueError(
            f"{where}: non-finite prediction ({n_bad} of {pred.numel()} values are NaN/inf); such a sample is "
            "never scored (it counts as a failure; allow_missing / --allow-missing averages the others)"
        )
    scored = score_prediction(
        pred,
        predictor.space,
        torch.from_numpy(np.ascontiguousarray(gt, dtype=np.float32)),
        torch.from_numpy(np.ascontiguousarray(mask)),
        alignment=method,
        min_depth=s.min_depth,
        max_depth=s.max_depth,
        min_pred_depth=s.min_pred_depth,
        alignment_max_res=max_res,
        alignment_downsample=s.alignment_downsample,
        metrics=s.metrics,
    )
    row: dict[str, Any] = {"name": name, **scored, "n_valid": n_valid, "input_h": hw[0], "input_w": hw[1]}
    row.update(predictor.last_info())
    bad = [k for k in s.metrics if not math.isfinite(row[k])]
    if bad:
        logger.warning("%s: non-finite metric(s) %s for sample %s", s.name, bad, name)
    return row
