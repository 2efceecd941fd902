"""ONNX export of a whole ``DepthModel`` (normalisation + encoder + decoder) with dynamic batch, H and W.

The graph has one input ``image`` (float32 ``[B,3,H,W]`` RGB in [0, 1], H and W multiples of the patch size)
and one output ``depth`` (float32 ``[B,1,H,W]`` in the model's ``output_space``), exactly the
``DepthModel.forward`` contract. It is produced by the *dynamo* exporter (``torch.onnx.export(...,
dynamo=True)``) with ``torch.export.Dim`` dimensions for batch and the token grid (H = patch * h): the
legacy TorchScript exporter was found to bake input-dependent values into the encoder as constants
(``docs/efficiency.md``), so every export is verified with onnxruntime at sizes *different* from the
export size.

Metadata stored in the file (``metadata_props``): ``anydepth.patch_size``, ``anydepth.output_space``,
``anydepth.model_config`` (JSON), ``anydepth.precision`` and ``anydepth.version``; ``OnnxRunner`` reads them.

``fp16=True`` exports the model with float16 weights and activations but keeps float32 input and output
(casts at both ends), for GPU / TensorRT deployment; onnxruntime's CPU provider lacks float16 kernels for
several ops, so its verification runs only where the provider can execute it.

``static=True`` exports one fixed input shape ``[batch_size, 3, H, W]`` instead (``anydepth.static_shape`` in
the metadata; ``OnnxRunner`` resizes other inputs to it): everything that depends only on the size (position
tables, RoPE angles, their resampling) is folded into constants, which a TensorRT engine with one shape
profile wants anyway and which removes operators TensorRT cannot import (VGGT's antialiased bicubic resampling
of its position table). Every export is checked against the TensorRT 10 ONNX parser's documented operator
support (``export.trt_check``); the findings are in ``ExportReport.tensorrt``.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from anydepth.export.trt_check import check_tensorrt
from anydepth.models.depth_model import DepthModel

__all__ = ["ExportReport", "export_onnx", "verify_onnx", "DEFAULT_OPSET"]

log = logging.getLogger(__name__)

DEFAULT_OPSET = 18


@dataclass
class ExportReport:
    """What ``export_onnx`` did.

    Attributes:
        path: the ONNX file.
        data_path: the external-data file (models over 2 GB), else None.
        opset: ONNX opset.
        fp16: float16 graph.
        export_hw: spatial size of the example input used for export.
        seconds: export time.
        checks: one entry per verification input: ``{"shape": [B,3,H,W], "max_abs_diff": float}``.
        max_abs_diff: largest difference over all checks (None when not verified).
        size_bytes: file size (plus external data).
        static_shape: ``[B, 3, H, W]`` of a static export, else None.
        tensorrt: ``export.trt_check`` findings (``"error: ..."`` / ``"warning: ..."``); empty = nothing TensorRT
            10's parser documents as unsupported.
    """

    path: Path
    data_path: Path | None
    opset: int
    fp16: bool
    export_hw: tuple[int, int]
    seconds: float
    checks: list[dict[str, Any]] = field(default_factory=list)
    max_abs_diff: float | None = None
    size_bytes: int = 0
    static_shape: list[int] | None = None
    tensorrt: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "data_path": None if self.data_path is None else str(self.data_path),
            "opset": self.opset,
            "fp16": self.fp16,
            "export_hw": list(self.export_hw),
            "seconds": self.seconds,
            "checks": self.checks,
            "max_abs_diff": self.max_abs_diff,
            "size_bytes": self.size_bytes,
            "static_shape": self.static_shape,
            "tensorrt": self.tensorrt,
        }


class _IOFloat32(nn.Module):
    """Runs a half-precision model behind float32 input/output (casts exported as graph nodes)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.to(torch.float16)).to(torch.float32)


def _param_bytes(model: nn.Module, fp16: bool) -> int:
    n = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
    return n * (2 if fp16 else 4)


def export_onnx(
    model: DepthModel,
    output: str | os.PathLike[str],
    *,
    export_hw: tuple[int, int] | None = None,
    opset: int = DEFAULT_OPSET,
    fp16: bool = False,
    verify: bool = True,
    verify_hw: Sequence[tuple[int, int]] | None = None,
    tolerance: float | None = None,
    overwrite: bool = False,
    threads: int | None = None,
    static: bool = False,
    batch_size: int = 1,
) -> ExportReport:
    """Export ``model`` to ONNX with dynamic batch, height and width, then verify it with onnxruntime.

    Args:
        model: the ``DepthModel`` (not modified; exported in eval mode on the CPU).
        output: destination ``.onnx`` file (written atomically; models over 2 GB get ``<output>.data``).
        export_hw: example input size (default: 4 x 4 patches); the graph accepts any multiple of the patch.
        opset: ONNX opset (>= 18 for the dynamo exporter).
        fp16: float16 weights/activations with float32 I/O.
        verify: compare onnxruntime with PyTorch on inputs of other sizes and batch sizes (a static export: on
            its one shape).
        verify_hw: sizes to verify (default: two sizes different from ``export_hw``; not with ``static``).
        tolerance: maximum allowed abs difference (default 1e-4 for float32, 5e-2 for float16).
        overwrite: replace an existing file.
        threads: onnxruntime intra-op threads for the verification.
        static: fixed input shape ``[batch_size, 3, *export_hw]`` instead of dynamic batch, H and W.
        batch_size: the batch of a static export.

    Returns:
        An ``ExportReport``.

    Raises:
        FileExistsError: ``output`` exists and ``overwrite`` is False.
        ValueError: bad sizes, or verification exceeded ``tolerance`` (the file is not written).
    """
    from anydepth.version import __version__

    if not isinstance(model, DepthModel):
        raise ValueError(f"export_onnx needs a DepthModel, got {type(model).__name__}")
    out = Path(output)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists (pass overwrite=True / --overwrite to replace it)")
    if opset < 18:
        raise ValueError(f"opset {opset} is too old for the dynamo exporter; use >= 18")
    p = int(model.patch_size)
    eh, ew = export_hw or (4 * p, 4 * p)
    if eh % p or ew % p or eh < p or ew < p:
        raise ValueError(f"export_hw {(eh, ew)} must be positive multiples of the patch size {p}")
    if static and verify_hw is not None:
        raise ValueError("verify_hw is not used with static=True (a static graph runs at export_hw only)")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if verify_hw is None:
        verify_hw = [(eh + 2 * p, ew - p if ew > p else ew + 3 * p), (max(eh - p, p), ew + 2 * p)]
    for hw in verify_hw:
        if hw[0] % p or hw[1] % p:
            raise ValueError(f"verify size {hw} is not a multiple of the patch size {p}")
    tol = tolerance if tolerance is not None else (5e-2 if fp16 else 1e-4)

    ref_model = model.eval()
    params = list(model.parameters())
    if params and params[0].device.type != "cpu":
        raise ValueError("export the model from the CPU (call model.cpu() first)")
    net: nn.Module = ref_model
    if fp16:
        import copy

        net = _IOFloat32(copy.deepcopy(ref_model).half()).eval()

    batch = torch.export.Dim("batch", min=1, max=1024)
    th = torch.export.Dim("tokens_h", min=1, max=4096)
    tw = torch.export.Dim("tokens_w", min=1, max=4096)
    # batch 2 in the dynamic example: torch.export specialises dimensions of size 1
    example = torch.rand(batch_size if static else 2, 3, eh, ew, generator=torch.Generator().manual_seed(0))
    big = _param_bytes(net, fp16) > 1_800_000_000
    meta = {
        "anydepth.patch_size": str(p),
        "anydepth.output_space": str(model.output_space.value),
        "anydepth.model_config": model.config.to_json(),
        "anydepth.precision": "float16" if fp16 else "float32",
        "anydepth.version": __version__,
        "anydepth.io": "image: float32 [B,3,H,W] RGB in [0,1] -> depth: float32 [B,1,H,W]",
    }
    if static:
        meta["anydepth.static_shape"] = f"{batch_size}x3x{eh}x{ew}"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tmp = tmpdir / out.name
        t0 = time.perf_counter()
        with torch.no_grad():
            prog = torch.onnx.export(
                net,
                (example,),
                dynamo=True,
                opset_version=opset,
                input_names=["image"],
                output_names=["depth"],
                dynamic_shapes=None if static else {"x": {0: batch, 2: p * th, 3: p * tw}},
                optimize=True,
                verbose=False,
            )
        if prog is None:  # pragma: no cover - defensive: dynamo export always returns a program
            raise RuntimeError("torch.onnx.export returned no program")
        for k, v in meta.items():
            prog.model.metadata_props[k] = v
        prog.save(str(tmp), external_data=big)
        seconds = time.perf_counter() - t0
        report = ExportReport(
            path=out,
            data_path=(out.parent / (out.name + ".data")) if big else None,
            opset=opset,
            fp16=fp16,
            export_hw=(eh, ew),
            seconds=seconds,
            static_shape=[batch_size, 3, eh, ew] if static else None,
            tensorrt=[str(i) for i in check_tensorrt(tmp)],
        )
        if verify:
            shapes = (
                [(batch_size, eh, ew)]
                if static
                else [(1, *verify_hw[0]), *[(2, *hw) for hw in verify_hw[1:]]]
            )
            report.checks = verify_onnx(tmp, ref_model, shapes, threads)
            report.max_abs_diff = max(c["max_abs_diff"] for c in report.checks) if report.checks else None
            if report.max_abs_diff is not None and report.max_abs_diff > tol:
                raise ValueError(
                    f"ONNX export of {model.config.name or 'model'} differs from PyTorch by "
                    f"{report.max_abs_diff:.3g} > tolerance {tol:g} on {report.checks}; not writing {out}"
                )
        # move external data first so the .onnx never points at a missing file
        if big:
            data_files = [f for f in tmpdir.iterdir() if f.name != out.name]
            for f in data_files:
                os.replace(f, out.parent / f.name)
        os.replace(tmp, out)
        report.size_bytes = out.stat().st_size + (
            report.data_path.stat().st_size if report.data_path and report.data_path.exists() else 0
        )
        log.info("exported %s in %.1f s (max abs diff %s)", out, seconds, report.max_abs_diff)
        return report
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def verify_onnx(
    path: str | os.PathLike[str],
    model: nn.Module,
    shapes: Sequence[tuple[int, int, int]],
    threads: int | None = None,
) -> list[dict[str, Any]]:
    """Compare onnxruntime with the PyTorch model on random inputs.

    Args:
        path: ONNX file.
        model: the PyTorch reference (``[B,3,H,W] -> [B,1,H,W]``), on the CPU.
        shapes: ``(B, H, W)`` inputs to try.
        threads: onnxruntime intra-op threads.

    Returns:
        ``[{"shape": [B,3,H,W], "max_abs_diff": float}, ...]``; entries whose run failed in onnxruntime
        (e.g. float16 kernels missing on the CPU provider) carry ``"error"`` instead and are skipped.
    """
    from anydepth.export.onnx_runtime import OnnxRunner

    runner = OnnxRunner(path, threads=threads)
    gen = torch.Generator().manual_seed(1)
    checks: list[dict[str, Any]] = []
    for b, h, w in shapes:
        x = torch.rand(b, 3, h, w, generator=gen)
        with torch.no_grad():
            ref = model(x).float()
        try:
            got = runner(x)
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
            if runner.precision == "float16":
                log.warning("onnxruntime could not run the float16 graph on %s: %s", runner.providers, e)
                checks.append({"shape": [b, 3, h, w], "error": str(e)[:300]})
                continue
            raise
        if tuple(got.shape) != tuple(ref.shape):
            raise ValueError(
                f"ONNX output shape {tuple(got.shape)} != PyTorch {tuple(ref.shape)} for input {x.shape}"
            )
        checks.append({"shape": [b, 3, h, w], "max_abs_diff": float((got - ref).abs().max())})
    return [c for c in checks if "max_abs_diff" in c] or checks
