"""``OnnxRunner``: run an exported AnyDepth ONNX file with onnxruntime behind the ``DepthModel`` contract.

It satisfies ``anydepth.inference.Runner`` (``patch_size``, ``output_space``, ``device``, ``__call__``), so
``anydepth.predict(OnnxRunner("model.onnx"), images)`` and ``anydepth infer --backend onnxruntime --onnx
model.onnx`` work unchanged.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anydepth.extras import require
from anydepth.types import DepthSpace

__all__ = ["OnnxRunner"]

log = logging.getLogger(__name__)


class OnnxRunner:
    """An onnxruntime session with the ``DepthModel.forward`` contract.

    Args:
        path: ONNX file written by ``anydepth export`` (or ``export_onnx``).
        threads: intra-op threads (None: onnxruntime's default, all cores).
        providers: execution providers (default ``["CPUExecutionProvider"]``; e.g.
            ``["CUDAExecutionProvider", "CPUExecutionProvider"]`` with onnxruntime-gpu).
        optimization: graph optimisation level: ``"all"`` (default), ``"extended"``, ``"basic"``, ``"none"``.

    Attributes:
        patch_size: from the file's metadata (H and W must be multiples of it).
        output_space: ``DepthSpace`` of the output, from the metadata.
        device: ``torch.device("cpu")`` (inputs are copied to host memory for onnxruntime).
        precision: ``"float32"`` or ``"float16"`` (graph precision; I/O is always float32).
        model_config: the exporting model's ``ModelConfig`` as a dict (or None).
        static_shape: ``(B, H, W)`` of a static export, else None (see ``forward``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not an AnyDepth export (missing metadata or wrong inputs).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        threads: int | None = None,
        providers: Sequence[str] | None = None,
        optimization: str = "all",
    ) -> None:
        ort = require("onnxruntime", "the onnxruntime backend")

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX file {self.path} does not exist")
        levels = {
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        }
        if optimization not in levels:
            raise ValueError(f"optimization={optimization!r}; valid: {list(levels)}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = levels[optimization]
        if threads is not None:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        self.providers = list(providers or ["CPUExecutionProvider"])
        self.session = ort.InferenceSession(str(self.path), sess_options=opts, providers=self.providers)
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise ValueError(
                f"{self.path}: expected one [B,3,H,W] input, got {[(i.name, i.shape) for i in inputs]}"
            )
        self.input_name = inputs[0].name
        shape = inputs[0].shape
        #: ``(B, H, W)`` of a static export (``anydepth export --static``), else None: other inputs are resized
        #: to ``(H, W)`` and run in chunks of ``B`` (the last one padded), and the output resized back.
        self.static_shape: tuple[int, int, int] | None = (
            (int(shape[0]), int(shape[2]), int(shape[3])) if all(isinstance(d, int) for d in shape) else None
        )
        self.output_name = self.session.get_outputs()[0].name
        meta: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        if "anydepth.patch_size" not in meta:
            raise ValueError(f"{self.path} has no anydepth metadata (export it with `anydepth export`)")
        self.patch_size = int(meta["anydepth.patch_size"])
        self.output_space = DepthSpace(
            meta.get("anydepth.output_space", DepthSpace.DISPARITY_AFFINE_INVARIANT.value)
        )
        self.precision = meta.get("anydepth.precision", "float32")
        cfg = meta.get("anydepth.model_config")
        self.model_config: dict[str, Any] | None = json.loads(cfg) if cfg else None
        self.device = torch.device("cpu")
        self.threads = threads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B,3,H,W]`` float RGB in [0, 1] -> float32 ``[B,1,H,W]`` in ``output_space`` (on the CPU).

        A static export runs at its one shape: the input is resized (bilinear) to its ``(H, W)``, run in chunks
        of its batch, and the output resized back to the input's ``(H, W)``.

        Raises:
            ValueError: wrong rank/channels or H, W not multiples of ``patch_size``.
        """
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[0] == 0:
            raise ValueError(f"expected input [B,3,H,W] with B >= 1, got {tuple(x.shape)}")
        if x.shape[-2] % self.patch_size or x.shape[-1] % self.patch_size:
            raise ValueError(
                f"input size {tuple(x.shape[-2:])} is not a multiple of the patch size {self.patch_size}"
            )
        x = x.detach().to("cpu", torch.float32)
        if self.static_shape is not None:
            return self._forward_static(x, self.static_shape)
        return self._run(x)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        (out,) = self.session.run([self.output_name], {self.input_name: np.ascontiguousarray(x.numpy())})
        return torch.from_numpy(np.asarray(out, dtype=np.float32))

    def _forward_static(self, x: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
        import torch.nn.functional as F

        b, h, w = shape
        hw = tuple(x.shape[-2:])
        if hw != (h, w):
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
        outs = []
        for i in range(0, x.shape[0], b):
            chunk = x[i : i + b]
            n = chunk.shape[0]
            if n < b:  # pad the last chunk with copies of its last image
                chunk = torch.cat([chunk, chunk[-1:].expand(b - n, -1, -1, -1)])
            outs.append(self._run(chunk)[:n])
        out = torch.cat(outs)
        if hw != (h, w):
            out = F.interpolate(out, size=hw, mode="bilinear", align_corners=False)
        return out

    __call__ = forward

    def __repr__(self) -> str:
        return (
            f"OnnxRunner({str(self.path)!r}, patch_size={self.patch_size}, precision={self.precision}, "
            f"static_shape={self.static_shape}, "
            f"providers={self.providers}, threads={self.threads})"
        )
