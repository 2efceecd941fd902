"""Whether a module is being traced (export / compile), for code paths that must stay shape-generic then."""

from __future__ import annotations

import torch

__all__ = ["is_tracing"]


def is_tracing() -> bool:
    """True under ``torch.compile``/``torch.export`` (dynamo) or ``torch.jit.trace`` (TorchScript ONNX export)."""
    return bool(torch.compiler.is_compiling() or torch.jit.is_tracing())
