"""``anydepth.serve``: the local web app and JSON/HTTP API (FastAPI + uvicorn, extra ``anydepth[serve]``).

``create_app(model_or_runner, token=..., max_upload_bytes=..., ...)`` builds the application; ``anydepth serve``
runs it with uvicorn. FastAPI is imported only when ``create_app`` is called, so importing this package is cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def create_app(*args: Any, **kwargs: Any) -> Any:
    """Build the web app (see ``anydepth.serve.app.create_app`` for the arguments)."""
    from anydepth.serve.app import create_app as _create_app

    return _create_app(*args, **kwargs)
