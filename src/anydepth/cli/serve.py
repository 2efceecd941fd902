"""``anydepth serve``: the local web page and JSON/HTTP API (FastAPI + uvicorn, extra ``anydepth[serve]``).

The command resolves everything the library leaves to the caller: the device and dtype, the bearer token
(``--token`` or the ``ANYDEPTH_TOKEN`` environment variable), the accepted Host names for the bind address; then
it builds the app with ``anydepth.serve.create_app`` and runs uvicorn in this process.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import re
import sys
from typing import Any

from anydepth.cli.runner import CHECKPOINT_HELP, ENCODER_WEIGHTS_HELP, add_runtime_args, build_runner

log = logging.getLogger(__name__)

TOKEN_ENV = "ANYDEPTH_TOKEN"

_EXAMPLES = """examples:
  anydepth serve --checkpoint anydepth_vits16.safetensors --encoder-weights dinov3_vits16.pth
  anydepth serve --model sdt_test                       # random-weight smoke test
  ANYDEPTH_TOKEN=$(openssl rand -hex 16) anydepth serve --checkpoint ckpt.safetensors --port 8080
  curl -F image=@photo.jpg -F format=png16 -o depth.png http://127.0.0.1:8000/v1/predict
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a web page and a JSON/HTTP API for depth prediction",
        description="Serve the AnyDepth web page (upload, depth view, 3D point cloud) and HTTP API.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = p.add_argument_group("model")
    g.add_argument("--checkpoint", metavar="FILE", help=CHECKPOINT_HELP)
    g.add_argument("--model", metavar="PRESET", help="preset name (see `anydepth models`); decoder is random")
    g.add_argument("--encoder-weights", metavar="FILE", help=ENCODER_WEIGHTS_HELP)
    add_runtime_args(
        g,
        fast_help="optimised inference path (same depth within 1e-4, faster, less memory; docs/efficiency.md)",
        backend_group=g,
    )
    g.add_argument("--tta", action="store_true", help="horizontal-flip test-time augmentation (2x compute)")

    g = p.add_argument_group("network and security")
    g.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes the service)")  # fmt: skip
    g.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    g.add_argument("--token", metavar="T",
                   help=f"require 'Authorization: Bearer T' on every route (default: ${TOKEN_ENV} if set)")  # fmt: skip
    g.add_argument("--allowed-hosts", metavar="H1,H2",
                   help="Host header names to accept (default: loopback names for a loopback --host, "
                        "any otherwise; '*' accepts any)")  # fmt: skip

    g = p.add_argument_group("limits and batching")
    g.add_argument("--max-upload-mb", type=float, default=20.0, metavar="MB",
                   help="largest accepted image file in MiB (default 20)")  # fmt: skip
    g.add_argument("--max-megapixels", type=float, default=50.0, metavar="MP",
                   help="largest accepted image in megapixels (default 50)")  # fmt: skip
    g.add_argument("--queue-size", type=int, default=16, metavar="N",
                   help="requests waiting for or in inference before answering 503 (default 16)")  # fmt: skip
    g.add_argument("--batch-size", type=int, default=4, metavar="N",
                   help="largest micro-batch of concurrent same-size requests (default 4; 1 = no batching)")  # fmt: skip
    g.add_argument("--batch-wait-ms", type=float, default=5.0, metavar="MS",
                   help="how long to wait for same-size requests to batch (default 5 ms)")  # fmt: skip

    g = p.add_argument_group("defaults for requests")
    g.add_argument("--size", default="768", metavar="SPEC",
                   help="default processing size: N or short:N (default 768), long:N, HxW, native")  # fmt: skip
    g.add_argument("--colormap", default="turbo", metavar="NAME", help="default colour map (default turbo)")
    g.add_argument("--default-fov", type=float, default=60.0, metavar="DEG",
                   help="horizontal FOV when a request gives none and the image has no EXIF focal (default 60)")  # fmt: skip
    g.add_argument("--nominal-range", type=float, nargs=2, default=(1.0, 10.0), metavar=("NEAR", "FAR"),
                   help="nominal depth range of point clouds (default 1 10, arbitrary units)")  # fmt: skip
    g.add_argument("--live", metavar="SOURCE",
                   help="also run a live stream (camera index/device, RTSP/HTTP URL or video file) shown on /live")  # fmt: skip
    g.add_argument("--live-size", default="384", metavar="SPEC", help="processing size of the live stream")
    g.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn log level (default info)")  # fmt: skip
    p.set_defaults(func=run)


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_allowed_hosts(host: str, spec: str | None) -> list[str] | None:
    """Host header names to accept: ``--allowed-hosts`` if given ('*' = any), loopback names for a loopback
    bind address, and any host (None) for other bind addresses (the token is the protection there)."""
    from anydepth.serve.security import LOOPBACK_HOSTS

    if spec is not None:
        names = [h.strip() for h in spec.split(",") if h.strip()]
        if not names:
            raise ValueError("--allowed-hosts: give a comma list of host names, or '*'")
        return None if "*" in names else names
    if _is_loopback(host):
        return sorted({*LOOPBACK_HOSTS, host.strip("[]").lower()})
    return None


def resolve_token(arg: str | None) -> str | None:
    """``--token`` if given, else ``$ANYDEPTH_TOKEN`` if set and non-empty, else None."""
    token = arg if arg is not None else os.environ.get(TOKEN_ENV)
    if token is not None:
        token = token.strip()
        if not token:
            return None
        if len(token) < 8:
            log.warning(
                "the bearer token is short (%d characters); use at least 16 random characters", len(token)
            )
    return token


def build_app(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """Load the model and build the app from parsed arguments; returns ``(app, info)``."""
    from anydepth.inference import Resolution
    from anydepth.serve.app import create_app

    if not 1 <= args.port <= 65535:
        raise ValueError(f"--port must be in 1..65535, got {args.port}")
    for name in ("max_upload_mb", "max_megapixels"):
        if not getattr(args, name) > 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    Resolution.parse(args.size)
    built = build_runner(args)
    info = built.source(basenames=True)
    if built.random_decoder:
        info["random_decoder"] = True
    runner = built.runner
    token = resolve_token(args.token)
    allowed = resolve_allowed_hosts(args.host, args.allowed_hosts)
    if not _is_loopback(args.host) and token is None:
        log.warning(
            "serving on %s without a token: anyone who can reach this address can use the service; "
            "set --token or %s",
            args.host,
            TOKEN_ENV,
        )
    session = None
    if args.live:
        from anydepth.live import parse_source
        from anydepth.live.web import DepthColorizer, LiveSession

        session = LiveSession(parse_source(args.live), DepthColorizer(runner, resolution=args.live_size))
    app = create_app(
        runner,
        live_session=session,
        token=token,
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        max_pixels=int(args.max_megapixels * 1_000_000),
        queue_size=args.queue_size,
        max_batch_size=args.batch_size,
        batch_wait_ms=args.batch_wait_ms,
        allowed_hosts=allowed,
        default_resolution=args.size,
        default_colormap=args.colormap,
        default_fov_deg=args.default_fov,
        nominal_range=tuple(args.nominal_range),
        flip_tta=args.tta,
        model_info=info,
    )
    return app, {
        "token": token,
        "allowed_hosts": allowed,
        "device": str(runner.device),
        "live_session": session,
    }


class _RedactToken(logging.Filter):
    """Replace ``token=<value>`` in access-log arguments by ``token=***``."""

    _pattern = re.compile(r"(token=)[^&\s]*", re.IGNORECASE)

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                self._pattern.sub(r"\1***", a) if isinstance(a, str) and "token=" in a.lower() else a
                for a in record.args
            )
        return True


def _return_freed_memory() -> None:
    """glibc only: serve large buffers (decoded uploads, tensors, answers) from mmap so that freeing them returns
    the memory to the system: the worker's RSS goes back to its idle level after a large request instead of
    staying at its peak in malloc's arenas (the default threshold grows with every large free). A no-op elsewhere.
    """
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl ...)
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 1 << 20)  # allocations >= 1 MiB: mmap, unmapped on free
    mallopt(m_trim_threshold, 8 << 20)  # give the top of the heap back beyond 8 MiB free


def run(args: argparse.Namespace) -> int:
    from anydepth.extras import require

    uvicorn = require("uvicorn", "anydepth serve")
    app, info = build_app(args)
    host_for_url = f"[{args.host}]" if ":" in args.host else args.host
    if args.host in ("0.0.0.0", "::"):
        host_for_url = "127.0.0.1"
    url = f"http://{host_for_url}:{args.port}/"
    if info["token"] is not None:
        print(f"anydepth serve: open {url}?token=<your token> once in the browser (API: Authorization: Bearer)",
              file=sys.stderr)  # fmt: skip
    else:
        print(f"anydepth serve: open {url}", file=sys.stderr)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        limit_concurrency=max(8, 4 * args.queue_size),
        timeout_graceful_shutdown=10,
        server_header=False,
    )
    # uvicorn's access log prints request paths with their query: hide the one-time "/?token=..." login value.
    logging.getLogger("uvicorn.access").addFilter(_RedactToken())
    _return_freed_memory()
    session = info["live_session"]
    if session is not None:
        session.start()
        print(f"anydepth serve: live stream {args.live} on {url}live", file=sys.stderr)
    try:
        uvicorn.Server(config).run()
    finally:
        if session is not None:
            session.stop()
    return 0
