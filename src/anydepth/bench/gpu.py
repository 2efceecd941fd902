"""GPU efficiency check: official heads vs eager vs fast path, latency with CUDA events, peak memory, parity.

What ``scripts/gpu_check.sh`` runs on one accelerator (and, with the tiny presets, on the CPU as a dry run).
One *group* is one (part, preset, resolution, batch, dtype); its variants are built once, warmed up and
timed round-robin, and every group stays inside a global time budget (groups that do not fit are recorded
as skipped, never silently dropped). Groups run in priority order: the ViT-L rows the paper's claims are
about (bf16 first), then the other dtypes, then ViT-S/B, which get only the variants the targets compare (official,
eager, fast, and SDT's 4-tile path): from run 1's group times (``docs/gpu/``) the whole matrix then needs
about 320 s, an estimate not yet confirmed on a GPU.

Variants (``part="decoder"``: the decoder alone on random encoder features; ``part="model"``: the whole
``DepthModel`` on a random image):

* ``official``: the official AnyDepth ``SDTHead``/``DPTHead`` (imported by the caller from a local copy of
  the official repository, never shipped) with our weights copied in, ``torch.autocast`` for bf16/fp16;
* ``eager``: this package's module, ``torch.autocast`` for bf16/fp16;
* ``fast``: ``optimize_for_inference`` / ``fast_decoder`` with their defaults for the device;
* ``fast_untiled`` / ``fast_t2`` / ``fast_t4`` (SDT): no row tiling / 2 / 4 full-resolution row tiles
  (channels-last: the CUDA default memory format up to 512x512);
* ``fast_nchw``: the fast path with NCHW instead of channels-last convolutions (untiled for SDT);
* ``fast_graph``: the untiled fast path replayed from a CUDA graph (CUDA only);
* ``compiled``: the untiled fast path under ``torch.compile`` (replayed from a CUDA graph on CUDA); built only
  for the groups listed in ``GpuCheckConfig.compile`` since compilation takes tens of seconds per shape.

Latency: CUDA events around each call (``time.perf_counter`` + synchronisation elsewhere), median of the
timed calls. Memory: ``torch.cuda.max_memory_allocated`` during one call minus what was allocated before it
(weights and inputs excluded, the output included); for CUDA-graph variants the allocation of the capture.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import torch.nn.functional as F

from anydepth.atomic import atomic_path
from anydepth.bench.efficiency import TimingStats, build_runner, parse_dtype
from anydepth.bench.flops import synthetic_encoder_output
from anydepth.models.factory import build_model, get_model_config

__all__ = [
    "PAPER_H100_MS",
    "WIDTH_PRESETS",
    "TINY_PRESETS",
    "GpuCheckConfig",
    "GpuRow",
    "cuda_graph_runner",
    "official_head",
    "run_gpu_check",
    "summarize",
    "format_markdown",
    "write_report",
]

log = logging.getLogger(__name__)

#: the paper's H100 latencies (ms, ViT-L, whole model) by resolution: (SDT, DPT)
PAPER_H100_MS: dict[int, tuple[float, float]] = {256: (6.10, 6.66), 512: (23.17, 24.65), 1024: (93.09, 99.79)}

#: width label -> (SDT preset, DPT preset)
WIDTH_PRESETS: dict[str, tuple[str, str]] = {
    "L": ("sdt_dinov3_vitl16", "dpt_dinov3_vitl16"),
    "S": ("sdt_dinov3_vits16", "dpt_dinov3_vits16"),
    "B": ("sdt_dinov3_vitb16", "dpt_dinov3_vitb16"),
}
#: the tiny presets of the CPU dry run
TINY_PRESETS: dict[str, tuple[str, str]] = {"T": ("sdt_test", "dpt_test")}

_SKIP = "skipped:"


@dataclass(frozen=True)
class GpuCheckConfig:
    """What ``run_gpu_check`` measures.

    Attributes:
        widths: width label -> (SDT preset, DPT preset), in priority order.
        resolutions: square input sizes (pixels, multiples of the patch size).
        batches: batch sizes.
        dtypes: ``"bfloat16"``, ``"float16"``, ``"float32"`` (first = highest priority).
        parts: ``"decoder"`` and/or ``"model"``.
        device: torch device string.
        warmup: untimed calls per variant before timing.
        min_repeats, max_repeats: timed calls per variant; fewer than ``max_repeats`` when a group's timed
            rounds exceed ``group_seconds``.
        group_seconds: soft limit of a group's timed rounds.
        budget_s: global time budget; groups that would start after it are recorded as skipped.
        compile: ``(width, dtype, resolution, batch)`` decoder groups that also get the ``compiled`` variant.
        cuda_graphs: add the ``fast_graph`` variant on CUDA (experimental: on the H200 run of
            ``docs/efficiency.md`` a capture led to an illegal memory access a few groups later, so it is off).
        parity_hw: non-square input size of the fast == eager check.
        variants: measure only these variants (``None``: all that apply).
        seed: RNG seed of weights and inputs.
    """

    widths: Mapping[str, tuple[str, str]] = field(default_factory=lambda: dict(WIDTH_PRESETS))
    resolutions: tuple[int, ...] = (256, 512, 1024)
    batches: tuple[int, ...] = (1, 8)
    dtypes: tuple[str, ...] = ("bfloat16", "float16", "float32")
    parts: tuple[str, ...] = ("decoder", "model")
    device: str = "cuda"
    warmup: int = 2
    min_repeats: int = 3
    max_repeats: int = 15
    group_seconds: float = 1.0
    budget_s: float = 330.0
    compile: tuple[tuple[str, str, int, int], ...] = (("L", "bfloat16", 512, 1), ("L", "bfloat16", 1024, 1))
    cuda_graphs: bool = False
    parity_hw: tuple[int, int] = (320, 448)
    variants: tuple[str, ...] | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        for d in self.dtypes:
            parse_dtype(d)
        for p in self.parts:
            if p not in ("decoder", "model"):
                raise ValueError(f"unknown part {p!r}; valid: decoder, model")
        if self.min_repeats < 1 or self.max_repeats < self.min_repeats or self.warmup < 0:
            raise ValueError(
                f"need 1 <= min_repeats <= max_repeats and warmup >= 0, got {self.min_repeats}, "
                f"{self.max_repeats}, {self.warmup}"
            )
        if not self.widths:
            raise ValueError("no widths to measure")


@dataclass
class GpuRow:
    """One measured (part, preset, variant, resolution, batch, dtype). Times in ms, memory in MiB."""

    part: str
    width: str
    decoder: str
    model: str
    variant: str
    resolution: int
    batch: int
    dtype: str
    latency_ms: float | None = None
    latency_p25_ms: float | None = None
    latency_p75_ms: float | None = None
    repeats: int = 0
    peak_mib: float | None = None
    note: str = ""

    @property
    def skipped(self) -> bool:
        return self.note.startswith(_SKIP)


# --------------------------------------------------------------------------------------------- runners


def cuda_graph_runner(fn: Callable[[], torch.Tensor], device: torch.device) -> Callable[[], torch.Tensor]:
    """Capture ``fn()`` (static inputs, no host synchronisation inside) in a CUDA graph; return its replay.

    The returned callable replays the graph and returns the graph's static output tensor (overwritten by the
    next replay).
    """
    stream = torch.cuda.Stream(device=device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.no_grad(), torch.cuda.stream(stream):
        for _ in range(2):  # warm-up on a side stream, as torch.cuda.graph requires
            fn()
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(graph):
        out = fn()

    def replay() -> torch.Tensor:
        graph.replay()
        return out

    return replay


def official_head(module: ModuleType, decoder: torch.nn.Module, kind: str) -> torch.nn.Module:
    """The official ``SDTHead``/``DPTHead`` (from ``module``, the caller's local copy) with ``decoder``'s weights.

    Raises:
        ValueError: the decoder's configuration has no official counterpart (e.g. the tiny test presets).
    """
    from anydepth.models.official import to_official_state_dict

    dims = list(decoder.in_dims)  # type: ignore[arg-type]
    if kind == "sdt":
        head = module.SDTHead(
            dims, fusion_channels=decoder.fusion_channels, n_output_channels=1, use_cls_token=True
        )
    elif kind == "dpt":
        head = module.DPTHead(
            in_channels=dims,
            channels=decoder.channels,
            post_process_channels=list(decoder.post_process_channels),  # type: ignore[arg-type]
            readout_type=decoder.readout,
            n_output_channels=1,
            use_batchnorm=decoder.use_batchnorm,
        )
    else:
        raise ValueError(f"no official head for decoder {kind!r}")
    try:
        head.load_state_dict(to_official_state_dict(decoder.state_dict(), kind), strict=True)
    except RuntimeError as e:
        raise ValueError(f"official {kind} head does not match this configuration: {e}") from None
    return head.eval()


def _randomize_statistics(decoder: torch.nn.Module, seed: int) -> None:
    """Make every layer matter for the parity check: random BatchNorm statistics (BN folding), DySample
    offsets of about a pixel, and a positive output bias so the final ReLU does not flatten the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        last_out = [m for m in decoder.modules() if isinstance(m, torch.nn.Conv2d) and m.out_channels == 1]
        if last_out and last_out[-1].bias is not None:
            last_out[-1].bias.fill_(1.0)
        for m in decoder.modules():
            if type(m).__name__ == "DySample":
                for name in ("offset", "scope"):
                    conv = getattr(m, name, None)
                    if isinstance(conv, torch.nn.Conv2d):
                        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.05)
            if isinstance(m, torch.nn.BatchNorm2d):
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def _official_runner(
    head: torch.nn.Module, model: Any, dtype: torch.dtype, hw: tuple[int, int], batch: int, seed: int
) -> Callable[[], torch.Tensor]:
    dev = next(head.parameters()).device
    p = model.encoder.patch_size
    enc = synthetic_encoder_output(
        model.decoder.in_dims, (hw[0] // p, hw[1] // p), batch, p, dev, torch.float32,
        torch.Generator().manual_seed(seed),
    )  # fmt: skip
    feats = list(zip(enc.features, enc.cls_tokens, strict=True))
    min_out = float(model.decoder.min_output)

    def run() -> torch.Tensor:
        # the official FeaturesToDepth activation (ReLU + min) so all variants produce the same output
        with torch.autocast(dev.type, dtype=dtype, enabled=dtype != torch.float32, cache_enabled=False):
            return F.relu(head(feats)) + min_out

    return run


def _variant_runner(
    model: Any,
    part: str,
    variant: str,
    dtype: torch.dtype,
    res: int,
    batch: int,
    device: torch.device,
    seed: int,
) -> Callable[[], torch.Tensor]:
    """A runner for one of the package's variants (official heads: ``_official_runner``)."""
    h = res
    if variant in ("eager", "fast", "fast_untiled"):
        return build_runner(model, part, variant, dtype, res, batch, device, seed=seed)
    if variant in ("fast_t2", "fast_t4"):
        n = 2 if variant == "fast_t2" else 4
        return build_runner(model, part, "fast", dtype, res, batch, device, tile_rows=-(-h // n), seed=seed)
    untiled = "fast_untiled" if model.config.decoder == "sdt" else "fast"
    if variant == "fast_nchw":
        return build_runner(model, part, untiled, dtype, res, batch, device, channels_last=False, seed=seed)
    if variant == "fast_graph":
        return cuda_graph_runner(
            build_runner(model, part, untiled, dtype, res, batch, device, seed=seed), device
        )
    if variant == "compiled":
        return build_runner(model, part, "compiled", dtype, res, batch, device, seed=seed)
    raise ValueError(f"unknown variant {variant!r}")


def _variants(
    kind: str,
    part: str,
    device: torch.device,
    official: bool,
    compiled: bool,
    graphs: bool,
    detail: bool = True,
) -> list[str]:
    """The variants of one group; without ``detail`` (every width but the first) only what the targets compare:
    official, eager, fast and, for SDT, the lean 4-tile path."""
    v = ["official"] if official and part == "decoder" else []
    v += ["eager", "fast"]
    if kind == "sdt":
        v += ["fast_untiled", "fast_t2", "fast_t4"] if part == "decoder" and detail else ["fast_t4"]
    if part == "decoder" and detail:
        v.append("fast_nchw")
    if graphs and device.type == "cuda":
        v.append("fast_graph")
    if compiled:
        v.append("compiled")
    return v


# --------------------------------------------------------------------------------------------- timing


class _Timer:
    """CUDA-event timing on CUDA, ``perf_counter`` + synchronisation elsewhere."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.device = device

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def __call__(self, fn: Callable[[], Any]) -> float:
        """Seconds of one call."""
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1000.0
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0


def _reset_peak(device: torch.device) -> int:
    """Synchronise, reset the peak statistics and return the bytes allocated now."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    return torch.cuda.memory_allocated(device)


def _peak_mib(fn: Callable[[], Any], device: torch.device) -> float | None:
    """Peak memory of one call of ``fn`` beyond what was allocated before it (CUDA only)."""
    if device.type != "cuda":
        return None
    base = _reset_peak(device)
    with torch.no_grad():
        out = fn()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - base
    del out
    return peak / 2**20


def _time_group(
    fns: Mapping[str, Callable[[], Any]], cfg: GpuCheckConfig, timer: _Timer
) -> dict[str, TimingStats]:
    names = list(fns)
    samples: dict[str, list[float]] = {n: [] for n in names}
    with torch.no_grad():
        for _ in range(cfg.warmup):
            for n in names:
                fns[n]()
        timer.sync()
        t0 = time.perf_counter()
        for i in range(cfg.max_repeats):
            for n in names if i % 2 == 0 else names[::-1]:
                samples[n].append(timer(fns[n]))
            if i + 1 >= cfg.min_repeats and time.perf_counter() - t0 > cfg.group_seconds:
                break
    return {n: TimingStats.from_samples(s) for n, s in samples.items()}


# --------------------------------------------------------------------------------------------- check


def _groups(cfg: GpuCheckConfig) -> list[tuple[int, str, str, str, int, int, str]]:
    """(priority, part, width, kind, res, batch, dtype), highest priority first; one preset runs contiguously."""
    widths = list(cfg.widths)
    out = []
    for part in cfg.parts:
        for wi, w in enumerate(widths):
            for di, dt in enumerate(cfg.dtypes):
                for kind in ("sdt", "dpt"):
                    for res in cfg.resolutions:
                        for b in cfg.batches:
                            prio = (
                                (0 if wi == 0 else 4)
                                + (0 if di == 0 else 2)
                                + (0 if part == "decoder" else 1)
                            )
                            out.append((prio, part, w, kind, res, b, dt))
    # within a priority keep one preset together (model built once)
    out.sort(key=lambda g: (g[0], widths.index(g[2]), g[3], cfg.dtypes.index(g[6]), g[4], g[5]))
    return out


def _parity(
    model: Any, head: torch.nn.Module | None, cfg: GpuCheckConfig, device: torch.device
) -> dict[str, Any]:
    """fast == eager (and official == eager) on the device at a non-square size, strict fp32 (no TF32)."""
    from anydepth.models.fast import fast_decoder

    hw = cfg.parity_hw
    p = model.encoder.patch_size
    enc = synthetic_encoder_output(
        model.decoder.in_dims, (hw[0] // p, hw[1] // p), 2, p, device, torch.float32,
        torch.Generator().manual_seed(cfg.seed + 7),
    )  # fmt: skip
    tf32 = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    res: dict[str, Any] = {"hw": list(hw), "batch": 2}
    try:
        with torch.no_grad():
            ref = model.decoder(enc, hw).float()
            scale = float(ref.abs().max())
            res["output_abs_max"] = scale

            def err(out: torch.Tensor) -> dict[str, float]:
                d = float((out.float() - ref).abs().max())
                return {"max_abs": d, "max_rel": d / max(scale, 1e-12)}

            for dt in cfg.dtypes:
                dtype = parse_dtype(dt)
                kinds: dict[str, Any] = {"fast": {}}
                if model.config.decoder == "sdt":
                    kinds["fast_untiled"] = {"tile_rows": 0}
                    kinds["fast_t4"] = {"tile_rows": -(-hw[0] // 4)}
                for name, kw in kinds.items():
                    fdec = fast_decoder(model.decoder, dtype=dtype, **kw).to(device)
                    res[f"{name}/{dt}"] = err(fdec(enc, hw))
                if dtype != torch.float32:
                    with torch.autocast(device.type, dtype=dtype):
                        res[f"eager_autocast/{dt}"] = err(model.decoder(enc, hw))
                if head is not None:
                    feats = list(zip(enc.features, enc.cls_tokens, strict=True))
                    with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                        out = F.relu(head(feats)) + float(model.decoder.min_output)
                    res[f"official/{dt}"] = err(out)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    return res


#: CUDA-graph variants only up to this many input pixels x batch (launch-bound sizes, where graphs help)
_GRAPH_MAX_PIXELS = 512 * 512


def _build(
    preset: str,
    kind: str,
    official: Mapping[str, ModuleType] | None,
    cfg: GpuCheckConfig,
    device: torch.device,
    say: Callable[[str], None],
) -> tuple[Any, Any]:
    """(model with random weights and BN statistics on ``device``, official head or None)."""
    say(f"build {preset} on {device}")
    torch.manual_seed(cfg.seed)
    try:
        with torch.device(device):  # random initialisation on the device itself (fast for ViT-L)
            model = build_model(get_model_config(preset)).eval()
    except RuntimeError:  # an initialiser that insists on CPU generators
        model = build_model(get_model_config(preset)).eval().to(device)
    _randomize_statistics(model.decoder, cfg.seed + 1)
    head = None
    if official is not None and kind in official:
        try:
            head = official_head(official[kind], model.decoder, kind).to(device)
        except ValueError as e:
            say(f"official {kind} head for {preset}: {e}")
    return model, head


def _run_group(
    group: list[GpuRow],
    built: tuple[Any, Any],
    cfg: GpuCheckConfig,
    device: torch.device,
    timer: _Timer,
    alive: list[Callable[[], Any]],
    say: Callable[[str], None],
) -> None:
    """Build, measure memory of and time every variant of one group (results written into ``group``)."""
    model, head = built
    first = group[0]
    part, res, batch, dtype = first.part, first.resolution, first.batch, parse_dtype(first.dtype)
    fns: dict[str, Callable[[], Any]] = {}
    for r in group:
        try:
            if r.variant == "official" and head is None:
                r.note = "not run: no official head for this configuration"
                continue
            if r.variant == "fast_graph" and device.type == "cuda":
                # a graph allocates its activations once, at capture: measure the build
                before = _reset_peak(device)
                fns[r.variant] = _variant_runner(model, part, r.variant, dtype, res, batch, device, cfg.seed)
                alive.append(fns[r.variant])
                r.peak_mib = (torch.cuda.max_memory_allocated(device) - before) / 2**20
                r.note = "peak of the capture (includes the graph's inputs and weights)"
                continue
            if r.variant == "official":
                fns[r.variant] = _official_runner(head, model, dtype, (res, res), batch, cfg.seed)
            else:
                fns[r.variant] = _variant_runner(model, part, r.variant, dtype, res, batch, device, cfg.seed)
            r.peak_mib = _peak_mib(fns[r.variant], device)
        except Exception as e:  # a benchmark records every failure (OOM, capture, compile) and goes on
            msg = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            if "CUDA error" in msg:
                raise
            r.note = f"failed: {msg}"
            fns.pop(r.variant, None)
    say(f"time {part} {first.model} {first.dtype} {res}px b{batch}: {', '.join(fns)}")
    try:
        stats = _time_group(fns, cfg, timer)
    except Exception as e:  # recorded in the rows, unless the CUDA context is gone
        msg = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        if "CUDA error" in msg:
            raise
        for r in group:
            if r.variant in fns:
                r.note = f"failed: {msg}"
        return
    for r in group:
        st = stats.get(r.variant)
        if st is not None:
            r.latency_ms, r.latency_p25_ms, r.latency_p75_ms, r.repeats = (
                st.median_ms,
                st.p25_ms,
                st.p75_ms,
                st.n,
            )


#: relative tolerances of the fast path against eager float32 (TF32 off) on the device
PARITY_RTOL: dict[str, float] = {"float32": 5e-5, "bfloat16": 5e-2, "float16": 1e-2}


def run_gpu_check(
    cfg: GpuCheckConfig,
    *,
    official: Mapping[str, ModuleType] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Measure every group of ``cfg`` within its budget.

    Args:
        cfg: what to measure.
        official: ``{"sdt": module with SDTHead, "dpt": module with DPTHead}`` (the caller imports the official
            files), or None to leave the ``official`` variant out.
        progress: callback receiving one line per step.

    Returns:
        ``{"env": {...}, "rows": [GpuRow as dict...], "parity": {preset: {...}}, "elapsed_s": float}``.
    """
    say = progress or (lambda s: log.info("%s", s))
    device = torch.device(cfg.device)
    timer = _Timer(device)
    t_start = time.perf_counter()
    rows: list[GpuRow] = []
    parity: dict[str, Any] = {}
    built: dict[str, tuple[Any, Any]] = {}  # preset -> (model, official head), kept for the whole run
    compile_set = set(cfg.compile)
    alive: list[Callable[[], Any]] = []  # CUDA-graph runners stay alive for the run (see _GRAPH_MAX_PIXELS)
    fatal = ""
    for _prio, part, width, kind, res, batch, dt in _groups(cfg):
        preset = cfg.widths[width][0 if kind == "sdt" else 1]
        want_compile = part == "decoder" and (width, dt, res, batch) in compile_set
        graphs = cfg.cuda_graphs and res * res * batch <= _GRAPH_MAX_PIXELS
        detail = width == next(iter(cfg.widths))
        names = _variants(kind, part, device, official is not None, want_compile, graphs, detail)
        if cfg.variants is not None:
            names = [v for v in names if v in cfg.variants]
        group = [GpuRow(part, width, kind, preset, v, res, batch, dt) for v in names]
        rows.extend(group)
        if fatal or time.perf_counter() - t_start > cfg.budget_s:
            for r in group:
                r.note = f"{_SKIP} {fatal or f'time budget ({cfg.budget_s:.0f} s) spent'}"
            continue
        try:
            if preset not in built:
                built[preset] = _build(preset, kind, official, cfg, device, say)
                say(f"parity {preset} on {device}")
                parity[preset] = _parity(*built[preset], cfg, device)
            _run_group(group, built[preset], cfg, device, timer, alive, say)
        except Exception as e:  # noqa: BLE001 - a lost CUDA context ends the run; its rows say so
            msg = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            if "CUDA error" not in msg:
                raise
            fatal = f"not run: the CUDA context was lost earlier ({msg})"
            say(fatal)
            for r in group:
                r.note = r.note or f"failed: {msg}"
    return {
        "env": environment(device),
        "config": _config_dict(cfg),
        "rows": [dataclasses.asdict(r) for r in rows],
        "parity": parity,
        "parity_rtol": PARITY_RTOL,
        "elapsed_s": time.perf_counter() - t_start,
    }


def _config_dict(cfg: GpuCheckConfig) -> dict[str, Any]:
    d = dataclasses.asdict(cfg)
    d["widths"] = {k: list(v) for k, v in cfg.widths.items()}
    return d


def environment(device: torch.device) -> dict[str, Any]:
    """Versions and hardware of this run."""
    env: dict[str, Any] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "cudnn_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_tf32": torch.backends.cuda.matmul.allow_tf32,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(
            gpu=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            sm_count=props.multi_processor_count,
            capability=f"{props.major}.{props.minor}",
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
        )
        try:
            import subprocess

            env["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=20, check=False,
            ).stdout.strip()  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            env["driver"] = None
    else:
        env["cpu_threads"] = torch.get_num_threads()
    return env


# --------------------------------------------------------------------------------------------- report


def _index(rows: Sequence[Mapping[str, Any]]) -> dict[tuple[Any, ...], Mapping[str, Any]]:
    return {
        (r["part"], r["width"], r["decoder"], r["variant"], r["resolution"], r["batch"], r["dtype"]): r
        for r in rows
    }


def summarize(result: Mapping[str, Any], fast_variant: str = "fast") -> dict[str, Any]:
    """The issue's targets, evaluated on measured rows (``None`` where a row is missing).

    * SDT fast vs official SDTHead (bf16) at 512/1024: speed-up (target >= 1.5);
    * SDT fast peak memory vs official SDTHead and vs the leanest DPT variant at every size (target: lower);
    * whole model SDT-L vs DPT-L, fast and eager, at every size (target: SDT faster).
    """
    idx = _index(result["rows"])
    widths = list(result["config"]["widths"])
    res_list = result["config"]["resolutions"]
    batches = result["config"]["batches"]
    out: dict[str, Any] = {"speed_vs_official": [], "memory": [], "whole_model": []}

    def get(*k: Any) -> Mapping[str, Any] | None:
        r = idx.get(k)
        return r if r is not None and r.get("latency_ms") is not None else None

    for w in widths:
        for dt in result["config"]["dtypes"]:
            for res in res_list:
                for b in batches:
                    f = get("decoder", w, "sdt", fast_variant, res, b, dt)
                    o = get("decoder", w, "sdt", "official", res, b, dt)
                    lean = [
                        (r["peak_mib"], v)
                        for v in (fast_variant, "fast_t2", "fast_t4")
                        if (r := get("decoder", w, "sdt", v, res, b, dt)) and r.get("peak_mib") is not None
                    ]
                    if f and o:
                        out["speed_vs_official"].append(
                            {"width": w, "dtype": dt, "res": res, "batch": b, "fast_ms": f["latency_ms"],
                             "official_ms": o["latency_ms"], "speedup": o["latency_ms"] / f["latency_ms"]}
                        )  # fmt: skip
                    dpts = [
                        r["peak_mib"]
                        for v in ("official", "eager", "fast", "fast_nchw")
                        if (r := idx.get(("decoder", w, "dpt", v, res, b, dt)))
                        and r.get("peak_mib") is not None
                    ]
                    if lean and (o or dpts):
                        out["memory"].append(
                            {"width": w, "dtype": dt, "res": res, "batch": b, "sdt_fast_mib": min(lean)[0],
                             "sdt_fast_variant": min(lean)[1],
                             "sdt_official_mib": o["peak_mib"] if o else None,
                             "dpt_min_mib": min(dpts) if dpts else None}
                        )  # fmt: skip
                    for v in ("eager", fast_variant):
                        s = get("model", w, "sdt", v, res, b, dt)
                        d = get("model", w, "dpt", v, res, b, dt)
                        if s and d:
                            out["whole_model"].append(
                                {"width": w, "dtype": dt, "res": res, "batch": b, "variant": v,
                                 "sdt_ms": s["latency_ms"], "dpt_ms": d["latency_ms"],
                                 "dpt_over_sdt": d["latency_ms"] / s["latency_ms"]}
                            )  # fmt: skip
    return out


def _fmt(v: Any, spec: str) -> str:
    return "" if v is None else format(v, spec)


def format_markdown(result: Mapping[str, Any], fast_variant: str = "fast") -> str:
    """Markdown report: environment, targets, parity, then every row (ms and MiB)."""
    env = result["env"]
    lines = ["# GPU check", ""]
    lines.append(
        "Environment: " + ", ".join(f"{k} `{v}`" for k, v in env.items() if v is not None) + f"; elapsed "
        f"{result['elapsed_s']:.0f} s."
    )
    s = summarize(result, fast_variant)
    lines += ["", f"## Targets (fast variant: `{fast_variant}`)", ""]
    lines += [
        "| width | dtype | res | B | official SDTHead ms | fast SDT ms | speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in s["speed_vs_official"]:
        lines.append(
            f"| {r['width']} | {r['dtype']} | {r['res']} | {r['batch']} | {r['official_ms']:.2f} | "
            f"{r['fast_ms']:.2f} | {r['speedup']:.2f}x |"
        )
    lines += [
        "",
        "| width | dtype | res | B | fast SDT MiB | official SDTHead MiB | leanest DPT MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in s["memory"]:
        lines.append(
            f"| {r['width']} | {r['dtype']} | {r['res']} | {r['batch']} | {r['sdt_fast_mib']:.0f} ({r['sdt_fast_variant']}) | "
            f"{_fmt(r['sdt_official_mib'], '.0f')} | {_fmt(r['dpt_min_mib'], '.0f')} |"
        )
    lines += [
        "",
        "| width | dtype | res | B | variant | SDT model ms | DPT model ms | DPT / SDT |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in s["whole_model"]:
        lines.append(
            f"| {r['width']} | {r['dtype']} | {r['res']} | {r['batch']} | {r['variant']} | {r['sdt_ms']:.2f} | "
            f"{r['dpt_ms']:.2f} | {r['dpt_over_sdt']:.2f} |"
        )
    lines += ["", "## Parity on the device (relative max abs difference vs eager float32, TF32 off)", ""]
    lines += ["| preset | check | max abs | max rel | tolerance | ok |", "|---|---|---|---|---|---|"]
    for preset, checks in result["parity"].items():
        for k, v in checks.items():
            if not isinstance(v, dict):
                continue
            dt = k.split("/")[-1]
            tol = PARITY_RTOL.get(dt)
            ok = "" if k.startswith(("eager_autocast", "official")) and dt != "float32" else (
                "yes" if tol is not None and v["max_rel"] <= tol else "NO"
            )  # fmt: skip
            lines.append(
                f"| {preset} | {k} | {v['max_abs']:.2e} | {v['max_rel']:.2e} | {_fmt(tol, '.0e')} | {ok} |"
            )
    lines += ["", "## All rows", ""]
    lines += [
        "| part | width | decoder | variant | dtype | res | B | ms (median) | p25 | p75 | n | peak MiB | note |"
    ]
    lines += ["|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(
            f"| {r['part']} | {r['width']} | {r['decoder']} | {r['variant']} | {r['dtype']} | {r['resolution']} | "
            f"{r['batch']} | {_fmt(r['latency_ms'], '.3f')} | {_fmt(r['latency_p25_ms'], '.3f')} | "
            f"{_fmt(r['latency_p75_ms'], '.3f')} | {r['repeats']} | {_fmt(r['peak_mib'], '.1f')} | {r['note']} |"
        )
    return "\n".join(lines) + "\n"


def write_report(
    result: Mapping[str, Any], out_dir: str | Path, *, overwrite: bool = False
) -> dict[str, Path]:
    """Write ``gpu_check.json`` and ``gpu_check.md`` atomically (strict JSON: no NaN/inf).

    Raises:
        FileExistsError: a target exists and ``overwrite`` is False.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "gpu_check.json", "md": out / "gpu_check.md"}
    texts = {"json": json.dumps(result, indent=1, allow_nan=False), "md": format_markdown(result)}
    for k, p in paths.items():
        with atomic_path(p, overwrite=overwrite) as tmp:
            Path(tmp).write_text(texts[k])
    return paths
