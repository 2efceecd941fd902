"""The one forward path of every prediction: resize -> runner -> flip TTA -> restore. Writes nothing.

Every consumer of a depth network goes through ``predict_resized``: ``anydepth.inference`` (``predict``,
``predict_iter``, hence ``anydepth infer`` and ``anydepth serve``), ``anydepth.eval.ModelPredictor``
(``anydepth eval``), the trainer's validation and the CPU demo. They differ only in how they choose the
processing size (``ops.resize.processing_size`` policies) and in what they do with the restored map.

A *runner* is anything with ``patch_size``, ``output_space``, ``device`` and ``__call__(x [B,3,H,W]) ->
[B,1,H,W]`` (the ``Runner`` protocol): ``TorchRunner`` wraps a ``DepthModel`` (also the ``--fast`` model of
``export.fast.optimize_for_inference``); ``export.onnx_runtime.OnnxRunner`` runs an exported ONNX graph. The
module lives in the base layer so that ``eval`` (which may not import ``inference``) shares it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import torch

from anydepth.ops.resize import ResizeInfo, fit_to_patch_multiple, restore
from anydepth.types import DepthSpace

__all__ = ["Runner", "TorchRunner", "as_runner", "predict_resized", "runner_forward"]

log = logging.getLogger(__name__)


@runtime_checkable
class Runner(Protocol):
    """A forward function with the ``DepthModel.forward`` contract.

    Attributes:
        patch_size: input H and W must be multiples of this.
        output_space: ``DepthSpace`` of the output.
        device: device the input tensor must be on.
    """

    patch_size: int
    output_space: DepthSpace
    device: torch.device

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` float32 ``[B,3,H,W]`` RGB in [0, 1] on ``device`` -> float32 ``[B,1,H,W]`` in ``output_space``."""
        ...


class TorchRunner:
    """Run a PyTorch ``DepthModel`` in inference mode with an explicit device and compute dtype.

    Args:
        model: the model (``forward(x [B,3,H,W]) -> [B,1,H,W]``, ``patch_size``, ``output_space``). It is moved
            to ``device`` in place if it is elsewhere, and put in eval mode.
        device: where to run; None = the device of the model's parameters.
        dtype: compute dtype: ``torch.float32`` (default), or ``torch.bfloat16`` / ``torch.float16`` run under
            ``torch.autocast`` (weights stay float32; outputs are returned as float32).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if not hasattr(model, "patch_size") or not hasattr(model, "output_space"):
            raise ValueError(f"{type(model).__name__} lacks patch_size/output_space; expected a DepthModel")
        params = list(model.parameters())
        here = params[0].device if params else torch.device("cpu")
        self.device = torch.device(device) if device is not None else here
        if self.device != here:
            log.info("moving model from %s to %s", here, self.device)
            model.to(self.device)
        self.dtype = dtype or torch.float32
        if self.dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"dtype must be float32, bfloat16 or float16, got {self.dtype}")
        self.model = model.eval()
        self.patch_size = int(model.patch_size)  # type: ignore[arg-type]
        self.output_space = DepthSpace(model.output_space)  # type: ignore[arg-type]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            if self.dtype == torch.float32:
                y = self.model(x)
            else:
                with torch.autocast(device_type=self.device.type, dtype=self.dtype):
                    y = self.model(x)
        return y.float()


def as_runner(
    model: Any, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> Runner:
    """A ``Runner`` for ``model``: a ``torch.nn.Module`` is wrapped in ``TorchRunner(model, device, dtype)``; a
    runner is returned as is (``device``/``dtype`` must then be None: configure the runner itself).

    Raises:
        ValueError: anything else, or ``device``/``dtype`` given with a runner.
    """
    if isinstance(model, torch.nn.Module):
        return TorchRunner(model, device=device, dtype=dtype)
    if isinstance(model, Runner):
        if device is not None or dtype is not None:
            raise ValueError(
                f"device/dtype apply to PyTorch models only; configure the {type(model).__name__} runner instead"
            )
        return model
    raise ValueError(
        f"model must be a DepthModel (torch.nn.Module) or a Runner (patch_size, output_space, device, __call__); "
        f"got {type(model).__name__}"
    )


def runner_forward(runner: Runner, x: torch.Tensor, *, flip_tta: bool = False) -> torch.Tensor:
    """``runner(x)`` for ``x`` ``[B,3,H,W]`` (patch multiples), moved to ``runner.device``; with ``flip_tta`` the
    horizontally flipped batch runs in the same forward pass and its output, flipped back, is averaged in.

    Returns:
        float ``[B,1,H,W]`` in ``runner.output_space``, on ``runner.device``.

    Raises:
        ValueError: the runner returned another shape.
    """
    x = x.to(runner.device)
    b = int(x.shape[0])
    y = runner(torch.cat([x, x.flip(-1)])) if flip_tta else runner(x)
    n = 2 * b if flip_tta else b
    if y.ndim != 4 or y.shape[0] != n or y.shape[1] != 1:
        raise ValueError(f"runner returned shape {tuple(y.shape)}; expected [{n},1,H,W]")
    if flip_tta:
        return (y[:b] + y[b:].flip(-1)) / 2.0
    return y


def predict_resized(
    runner: Runner,
    images: torch.Tensor | Sequence[torch.Tensor],
    proc_hw: tuple[int, int],
    *,
    flip_tta: bool = False,
) -> list[torch.Tensor]:
    """Predict a batch of images that share one processing size: resize -> forward -> TTA -> restore.

    Args:
        runner: the network (see ``Runner``).
        images: float ``[3,H_i,W_i]`` RGB in [0, 1] (sizes may differ; a ``[B,3,H,W]`` tensor works too).
        proc_hw: processing ``(H', W')``, multiples of ``runner.patch_size`` (``ops.resize.processing_size``).
        flip_tta: average with the prediction of the horizontally flipped images (one forward pass of 2B).

    Returns:
        One float ``[1,H_i,W_i]`` map per image in ``runner.output_space``, at the image's own size, on
        ``runner.device``.

    Raises:
        ValueError: empty input, or a runner that returns another shape.
    """
    if len(images) == 0:
        raise ValueError("predict_resized needs at least one image")
    patch = int(runner.patch_size)
    batch = torch.cat(
        [fit_to_patch_multiple(im[None].to(runner.device), patch, size=proc_hw)[0] for im in images]
    )
    raw = runner_forward(runner, batch, flip_tta=flip_tta)
    out = []
    for i, im in enumerate(images):
        hw = (int(im.shape[-2]), int(im.shape[-1]))
        out.append(restore(raw[i][None], ResizeInfo(hw, proc_hw))[0])
    return out
