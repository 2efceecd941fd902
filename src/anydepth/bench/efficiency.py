"""Efficiency benchmark: parameters, FLOPs, latency, throughput and peak memory of depth models.

One *row* is one (preset, part, variant, resolution, batch, device, dtype) configuration. Parts:

* ``"decoder"``: the decoder alone, fed random encoder features of the right shape (what the paper's
  efficiency tables compare);
* ``"model"``: the whole ``DepthModel`` (normalisation + encoder + decoder) on a random image.

Variants:

* ``"eager"``: the plain module (``torch.autocast`` for non-float32 dtypes);
* ``"fast"``: ``anydepth.export.optimize_for_inference`` with its defaults, i.e. what ``anydepth infer --fast``
  runs: folded BN, merged DySample convs, full-resolution row tiling (SDT) and, for float32 on a CPU with
  NNPACK, Winograd 3x3 convolutions (``conv_algo="auto"``);
* ``"fast_direct"``: ``fast`` with oneDNN's direct convolutions (``conv_algo="direct"``);
* ``"fast_untiled"``: ``fast`` without row tiling (SDT only);
* ``"compiled"``: ``fast_untiled`` with direct convolutions under ``torch.compile`` (opt-in, slow to build).

Low-precision rows (bfloat16/float16) on a CPU without native kernels for that dtype are not run unless
``BenchConfig.allow_emulated`` is set: emulated bf16 convolutions are 10x-300x slower than float32 and a
benchmark of them would take hours (``anydepth.export.fast.native_low_precision``).

Timing hygiene (``time_interleaved``): every variant of one (preset, part, resolution, batch, device) group
is built once, warmed up, then timed round-robin (A, B, C, A, B, C, ...) so that load from other processes
hits all variants alike; the device is synchronised around every call; median and quartiles are reported
and speed-ups are ratios of medians within the group. Peak memory is measured separately, one fresh
subprocess per configuration (``anydepth.bench.memory``).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from anydepth.atomic import atomic_path, json_text
from anydepth.bench.flops import decoder_flops, model_flops, synthetic_encoder_output
from anydepth.models.config import ModelConfig
from anydepth.models.factory import build_model, count_parameters, get_model_config

__all__ = [
    "TimingStats",
    "BenchConfig",
    "BenchRow",
    "VARIANTS",
    "PARTS",
    "DTYPES",
    "time_callable",
    "time_interleaved",
    "device_sync",
    "parse_dtype",
    "allocator_name",
    "build_runner",
    "benchmark",
    "rows_to_csv",
    "rows_to_json",
    "format_table",
    "write_outputs",
    "paper_tables",
    "format_paper_tables",
    "table3_decoders",
    "TABLE3_PRESETS",
]

log = logging.getLogger(__name__)

VARIANTS: tuple[str, ...] = ("eager", "fast", "fast_direct", "fast_untiled", "compiled")
PARTS: tuple[str, ...] = ("decoder", "model")
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


# --------------------------------------------------------------------------------------------- timing


@dataclass(frozen=True)
class TimingStats:
    """Latency statistics of repeated calls, in milliseconds."""

    median_ms: float
    p25_ms: float
    p75_ms: float
    mean_ms: float
    min_ms: float
    n: int
    samples_ms: tuple[float, ...] = ()

    @classmethod
    def from_samples(cls, samples_s: Sequence[float]) -> TimingStats:
        ms = sorted(1000.0 * s for s in samples_s)
        if not ms:
            raise ValueError("no timing samples")
        q = statistics.quantiles(ms, n=4, method="inclusive") if len(ms) > 1 else [ms[0]] * 3
        return cls(
            median_ms=statistics.median(ms),
            p25_ms=q[0],
            p75_ms=q[2],
            mean_ms=statistics.fmean(ms),
            min_ms=ms[0],
            n=len(ms),
            samples_ms=tuple(1000.0 * s for s in samples_s),
        )


def device_sync(device: torch.device | str) -> Callable[[], None]:
    """A function that waits for all queued work on ``device`` (no-op on CPU)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return lambda: torch.cuda.synchronize(dev)
    if dev.type == "mps":
        return torch.mps.synchronize
    return lambda: None


def time_callable(
    fn: Callable[[], Any], *, warmup: int = 2, repeats: int = 10, sync: Callable[[], None] | None = None
) -> TimingStats:
    """Time ``fn()``: ``warmup`` untimed calls, then ``repeats`` timed calls with device synchronisation.

    Raises:
        ValueError: ``repeats < 1`` or ``warmup < 0``.
    """
    return time_interleaved({"fn": fn}, warmup=warmup, repeats=repeats, sync=sync)["fn"]


def time_interleaved(
    fns: Mapping[str, Callable[[], Any]],
    *,
    warmup: int = 2,
    repeats: int = 10,
    sync: Callable[[], None] | None = None,
) -> dict[str, TimingStats]:
    """Time several callables round-robin so that background load affects all of them alike.

    Args:
        fns: name -> zero-argument callable.
        warmup: untimed calls of each callable before timing (also round-robin).
        repeats: timed calls of each callable.
        sync: device synchronisation called before starting and after finishing each timed call.

    Returns:
        name -> ``TimingStats``.

    Raises:
        ValueError: ``repeats < 1`` or ``warmup < 0``.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    sync = sync or (lambda: None)
    names = list(fns)
    with torch.no_grad():
        for _ in range(warmup):
            for n in names:
                fns[n]()
                sync()
        samples: dict[str, list[float]] = {n: [] for n in names}
        for i in range(repeats):
            # alternate the order so no variant always runs right after the same neighbour
            order = names if i % 2 == 0 else names[::-1]
            for n in order:
                sync()
                t0 = time.perf_counter()
                fns[n]()
                sync()
                samples[n].append(time.perf_counter() - t0)
    return {n: TimingStats.from_samples(samples[n]) for n in names}


# --------------------------------------------------------------------------------------------- config


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    """``"float32"``/``"fp32"``/``"bf16"``/``"fp16"``/... -> ``torch.dtype``; ValueError for others."""
    if isinstance(name, torch.dtype):
        return name
    alias = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16", "float": "float32"}
    key = alias.get(name.lower(), name.lower())
    if key not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; valid: {sorted(DTYPES) + sorted(alias)}")
    return DTYPES[key]


def allocator_name() -> str:
    """The memory allocator of this process: ``jemalloc``/``tcmalloc`` if preloaded, else ``glibc``."""
    pre = os.environ.get("LD_PRELOAD", "")
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        maps = ""
    for lib in ("jemalloc", "tcmalloc", "mimalloc"):
        if lib in pre or f"lib{lib}" in maps:
            return lib
    return "glibc" if platform.system() == "Linux" else "system"


@dataclass(frozen=True)
class BenchConfig:
    """What ``benchmark`` measures.

    Attributes:
        models: preset names (``anydepth.list_models()``).
        resolutions: square input sizes in pixels (multiples of the patch size).
        batch_sizes: batch sizes B.
        devices: torch device strings (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
        dtypes: ``"float32"``, ``"bfloat16"``, ``"float16"``.
        parts: ``"decoder"`` and/or ``"model"``.
        variants: subset of ``VARIANTS``.
        warmup, repeats: timing calls per configuration (untimed / timed).
        latency: measure latency (False: parameters and FLOPs only).
        memory: measure peak memory (one subprocess per configuration).
        flops: count FLOPs (meta device).
        tile_rows, max_tile_pixels: tiling of the ``fast``/``fast_direct`` variants (SDT).
        allow_emulated: also run low-precision dtypes on CPUs that lack native kernels for them.
        threads: ``torch.set_num_threads`` for the run (``None``: leave as is). CLI only.
        seed: RNG seed for inputs.
    """

    models: tuple[str, ...] = ("sdt_dinov3_vits16", "dpt_dinov3_vits16")
    resolutions: tuple[int, ...] = (256, 512, 1024)
    batch_sizes: tuple[int, ...] = (1,)
    devices: tuple[str, ...] = ("cpu",)
    dtypes: tuple[str, ...] = ("float32",)
    parts: tuple[str, ...] = ("decoder",)
    variants: tuple[str, ...] = ("eager", "fast", "fast_direct")
    warmup: int = 2
    repeats: int = 10
    latency: bool = True
    memory: bool = True
    flops: bool = True
    tile_rows: int | None = None
    max_tile_pixels: int | None = None
    threads: int | None = None
    seed: int = 0
    allow_emulated: bool = False

    def __post_init__(self) -> None:
        for v in self.variants:
            if v not in VARIANTS:
                raise ValueError(f"unknown variant {v!r}; valid: {list(VARIANTS)}")
        for p in self.parts:
            if p not in PARTS:
                raise ValueError(f"unknown part {p!r}; valid: {list(PARTS)}")
        for d in self.dtypes:
            parse_dtype(d)
        for r in self.resolutions:
            if r < 1:
                raise ValueError(f"resolution must be positive, got {r}")
        for b in self.batch_sizes:
            if b < 1:
                raise ValueError(f"batch size must be positive, got {b}")
        if self.repeats < 1 or self.warmup < 0:
            raise ValueError(f"need repeats >= 1 and warmup >= 0, got {self.repeats}, {self.warmup}")


_SKIPPED = "skipped:"


@dataclass
class BenchRow:
    """One measured configuration. Times in ms, memory in MiB, FLOPs in GFLOPs, throughput in images/s."""

    model: str
    decoder: str
    encoder: str
    part: str
    variant: str
    resolution: int
    batch: int
    device: str
    dtype: str
    threads: int
    allocator: str
    torch_version: str
    params_encoder: int
    params_decoder: int
    params_total: int
    gflops: float | None = None
    gflops_paper: float | None = None
    latency_ms: float | None = None
    latency_p25_ms: float | None = None
    latency_p75_ms: float | None = None
    throughput: float | None = None
    speedup_vs_eager_fp32: float | None = None
    peak_mem_mib: float | None = None
    mem_kind: str | None = None
    max_abs_diff: float | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def skipped(self) -> bool:
        """Not measured on purpose (``note`` says why, e.g. an emulated low-precision dtype)."""
        return self.note.startswith(_SKIPPED)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("extra")
        d.update(self.extra)
        return d


# --------------------------------------------------------------------------------------------- runners


def build_runner(
    model: Any,
    part: str,
    variant: str,
    dtype: torch.dtype,
    resolution: int,
    batch: int,
    device: torch.device | str,
    *,
    tile_rows: int | None = None,
    max_tile_pixels: int | None = None,
    channels_last: bool | None = None,
    seed: int = 0,
) -> Callable[[], torch.Tensor]:
    """A zero-argument callable running one configuration (inputs are created here, once).

    Args:
        model: a ``DepthModel`` already on ``device`` (eval mode).
        part: ``"decoder"`` or ``"model"``.
        variant: one of ``VARIANTS``.
        dtype: compute dtype (eager: autocast for non-float32).
        resolution: square input size in pixels.
        batch: B.
        device: where inputs are created.
        tile_rows, max_tile_pixels: tiling for ``fast`` / ``fast_direct`` (SDT).
        channels_last: memory format of the fast variants (``None``: the fast path's default).
        seed: input RNG seed.

    Returns:
        ``fn()`` that returns the ``[B,1,H,W]`` output.

    Raises:
        ValueError: unknown part/variant, or a variant the decoder does not support.
    """
    from anydepth.models.decoders.sdt import SDTDecoder
    from anydepth.models.fast import fast_decoder, optimize_for_inference

    if part not in PARTS:
        raise ValueError(f"unknown part {part!r}; valid: {list(PARTS)}")
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; valid: {list(VARIANTS)}")
    dev = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    hw = (resolution, resolution)
    is_sdt = isinstance(model.decoder, SDTDecoder)
    if variant == "fast_untiled" and not is_sdt:
        raise ValueError("variant 'fast_untiled' is only available for the SDT decoder")
    opts: dict[str, Any] = {
        "conv_algo": "direct" if variant in ("fast_direct", "compiled") else "auto",
        "channels_last": channels_last,
    }
    if is_sdt:
        if variant in ("fast_untiled", "compiled"):
            opts["tile_rows"] = 0
        else:
            opts.update(tile_rows=tile_rows, max_tile_pixels=max_tile_pixels)

    if part == "decoder":
        p = model.encoder.patch_size
        enc = synthetic_encoder_output(
            model.encoder.embed_dims, (resolution // p, resolution // p), batch, p, dev, torch.float32, gen
        )
        if variant == "eager":
            dec = model.decoder
            if dtype == torch.float32:
                return lambda: dec(enc, hw)

            def run_autocast() -> torch.Tensor:
                with torch.autocast(dev.type, dtype=dtype):
                    return dec(enc, hw)

            return run_autocast
        fdec = fast_decoder(model.decoder, dtype=dtype, **opts).to(dev)
        if variant == "compiled":
            with torch.no_grad():
                fdec(enc, hw)  # one eager call settles the weights' memory format before tracing
            fdec = torch.compile(fdec, dynamic=False)  # type: ignore[assignment]
        return lambda: fdec(enc, hw)

    x = torch.rand(batch, 3, resolution, resolution, generator=gen).to(dev)
    if variant == "eager":
        if dtype == torch.float32:
            return lambda: model(x)

        def run_model_autocast() -> torch.Tensor:
            with torch.autocast(dev.type, dtype=dtype):
                return model(x)

        return run_model_autocast
    fast = optimize_for_inference(model, dtype=dtype, compile=variant == "compiled", **opts).to(dev)
    return lambda: fast(x)


# --------------------------------------------------------------------------------------------- benchmark


def paper_tables(
    encoders: Sequence[str] = ("vits16", "vitb16", "vitl16"), resolutions: Sequence[int] = (256, 512, 1024)
) -> dict[str, Any]:
    """Reproduce the paper's decoder parameter table (Table 5) and FLOP table (Table 4) on the meta device.

    Returns:
        ``{"params": [{"encoder", "sdt", "dpt"}...], "flops": [{"encoder", "resolution", "sdt_paper",
        "dpt_paper", "sdt_torch", "dpt_torch"}...]}`` with parameter counts and GFLOPs (decoder only; "paper"
        = the thop-style convention of Table 4, "torch" = correct count).
    """
    params = []
    flops = []
    for enc in encoders:
        sdt, dpt = f"sdt_dinov3_{enc}", f"dpt_dinov3_{enc}"
        params.append(
            {"encoder": enc, "sdt": count_parameters(sdt)["decoder"], "dpt": count_parameters(dpt)["decoder"]}
        )
        for res in resolutions:
            flops.append(
                {
                    "encoder": enc,
                    "resolution": res,
                    "sdt_paper": decoder_flops(sdt, res, convention="paper") / 1e9,
                    "dpt_paper": decoder_flops(dpt, res, convention="paper") / 1e9,
                    "sdt_torch": decoder_flops(sdt, res) / 1e9,
                    "dpt_torch": decoder_flops(dpt, res) / 1e9,
                }
            )
    return {"params": params, "flops": flops, "table3": table3_decoders()}


# Paper Table 3 rows (pre-trained foundation encoders + freshly initialised decoders): row label -> preset.
TABLE3_PRESETS: dict[str, str] = {
    "DAv2 ViT-B + DPT": "dpt_dav2_vitb14",
    "DAv2 ViT-B + SDT": "sdt_dinov2_vitb14",
    "DA3 ViT-L + DPT": "dpt_da3_vitl14",
    "DA3 ViT-L + Dual-DPT": "dualdpt_da3_vitl14",
    "DA3 ViT-L + SDT": "sdt_da3_vitl14",
    "VGGT-1B + DPT": "dpt_vggt_1b",
    "VGGT-1B + SDT": "sdt_vggt_1b",
}


def table3_decoders(
    rows: Mapping[str, str] | None = None, resolutions: Sequence[int] = (256, 512)
) -> list[dict[str, Any]]:
    """Decoder parameters and GFLOPs of the paper's Table 3 rows (meta device, decoder only, ``forward`` path).

    Args:
        rows: row label -> preset (default ``TABLE3_PRESETS``).
        resolutions: nominal square sizes; each is rounded down to the preset's patch multiple (14: 252, 504).

    Returns:
        One dict per row: ``row``, ``preset``, ``params``, and per resolution ``gflops_<res>`` (torch convention)
        with the size used in ``size_<res>``.
    """
    import torch

    from anydepth.models.factory import build_model, get_model_config

    out = []
    for label, preset in (rows or TABLE3_PRESETS).items():
        with torch.device("meta"):
            patch = int(build_model(get_model_config(preset)).patch_size)
        row: dict[str, Any] = {"row": label, "preset": preset, "params": count_parameters(preset)["decoder"]}
        for res in resolutions:
            size = res - res % patch
            row[f"size_{res}"] = size
            row[f"gflops_{res}"] = decoder_flops(preset, size) / 1e9
        out.append(row)
    return out


def format_paper_tables(tables: Mapping[str, Any]) -> str:
    """Markdown rendering of ``paper_tables()`` with the paper's published values next to ours."""
    from anydepth.bench.flops import PAPER_TABLE4_GFLOPS

    paper_params = {"vits16": (50.83, 5.51), "vitb16": (76.05, 9.45), "vitl16": (99.58, 13.38)}
    lines = ["Decoder parameters (paper Table 5: DPT / SDT in M)", ""]
    lines += ["| encoder | SDT | DPT | paper SDT | paper DPT |", "|---|---|---|---|---|"]
    for r in tables["params"]:
        pp = paper_params.get(r["encoder"], (None, None))
        lines.append(f"| {r['encoder']} | {r['sdt']:,} | {r['dpt']:,} | {pp[1]} | {pp[0]} |")
    lines += ["", "Decoder GFLOPs (paper Table 4 is ViT-L, paper convention)", ""]
    lines += [
        "| encoder | res | SDT (paper conv.) | DPT (paper conv.) | paper SDT | paper DPT | SDT (torch) | DPT (torch) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in tables["flops"]:
        ps = PAPER_TABLE4_GFLOPS["sdt"].get(r["resolution"]) if r["encoder"] == "vitl16" else None
        pd = PAPER_TABLE4_GFLOPS["dpt"].get(r["resolution"]) if r["encoder"] == "vitl16" else None
        lines.append(
            f"| {r['encoder']} | {r['resolution']} | {r['sdt_paper']:.3f} | {r['dpt_paper']:.3f} | "
            f"{'' if ps is None else ps} | {'' if pd is None else pd} | {r['sdt_torch']:.2f} | {r['dpt_torch']:.2f} |"
        )
    if tables.get("table3"):
        lines += [
            "",
            "Table 3 decoders (pre-trained encoders, fresh decoders; decoder only, torch GFLOPs)",
            "",
        ]
        res = sorted(int(k.removeprefix("gflops_")) for k in tables["table3"][0] if k.startswith("gflops_"))
        lines += ["| row | preset | decoder params | " + " | ".join(f"GFLOPs {r}" for r in res) + " |"]
        lines += ["|---|---|---|" + "---|" * len(res)]
        for r in tables["table3"]:
            cells = " | ".join(f"{r[f'gflops_{x}']:.2f} ({r[f'size_{x}']} px)" for x in res)
            lines.append(f"| {r['row']} | `{r['preset']}` | {r['params']:,} | {cells} |")
    return "\n".join(lines)


def _variants_for(cfg: ModelConfig, variants: Iterable[str]) -> list[str]:
    return [v for v in variants if not (v == "fast_untiled" and cfg.decoder != "sdt")]


def benchmark(config: BenchConfig, progress: Callable[[str], None] | None = None) -> list[BenchRow]:
    """Run the benchmark described by ``config``.

    Args:
        config: what to measure.
        progress: optional callback receiving one line per step (the CLI logs it).

    Returns:
        One ``BenchRow`` per (model, part, variant, resolution, batch, device, dtype).

    Raises:
        KeyError: unknown preset. ValueError: invalid configuration.
    """
    from anydepth.bench.memory import measure_peak_memory

    say = progress or (lambda s: log.info("%s", s))
    rows: list[BenchRow] = []
    threads = torch.get_num_threads()
    alloc = allocator_name()
    for name in config.models:
        cfg = get_model_config(name)
        params = count_parameters(cfg)
        model_cache: dict[str, Any] = {}
        for res in config.resolutions:
            flops_cache: dict[tuple[str, int], tuple[float | None, float | None]] = {}
            for batch in config.batch_sizes:
                for part in config.parts:
                    key = (part, batch)
                    if config.flops and key not in flops_cache:
                        try:
                            if part == "decoder":
                                g = decoder_flops(cfg, res, batch) / 1e9
                            else:
                                g = model_flops(cfg, res, batch)["total"] / 1e9
                            gp = decoder_flops(cfg, res, batch, convention="paper") / 1e9
                        except ValueError as e:
                            log.warning("FLOPs for %s at %d: %s", name, res, e)
                            g, gp = None, None
                        flops_cache[key] = (g, gp)
                    g_flops, g_paper = flops_cache.get(key, (None, None))
                    for device in config.devices:
                        variants = _variants_for(cfg, config.variants)
                        group: list[BenchRow] = []
                        for dtype_name in config.dtypes:
                            for variant in variants:
                                group.append(
                                    BenchRow(
                                        model=name,
                                        decoder=cfg.decoder,
                                        encoder=cfg.encoder,
                                        part=part,
                                        variant=variant,
                                        resolution=res,
                                        batch=batch,
                                        device=str(device),
                                        dtype=str(parse_dtype(dtype_name)).replace("torch.", ""),
                                        threads=threads,
                                        allocator=alloc,
                                        torch_version=torch.__version__,
                                        params_encoder=params["encoder"],
                                        params_decoder=params["decoder"],
                                        params_total=params["total"],
                                        gflops=g_flops,
                                        gflops_paper=g_paper if part == "decoder" else None,
                                        note=_fast_path_note(cfg, variant)
                                        or _emulation_note(dtype_name, device, config.allow_emulated),
                                    )
                                )
                        if config.latency:
                            dev_key = str(device)
                            if dev_key not in model_cache:
                                torch.manual_seed(config.seed)
                                model_cache.clear()
                                model_cache[dev_key] = build_model(cfg).eval().to(device)
                            model = model_cache[dev_key]
                            _time_group(model, group, config, say)
                        if config.memory:
                            for row in group:
                                if row.skipped:
                                    continue
                                say(
                                    f"memory {row.model} {row.part} {row.variant} {row.dtype} {res}px b{batch}"
                                )
                                try:
                                    mem = measure_peak_memory(
                                        name,
                                        part=row.part,
                                        variant=row.variant,
                                        dtype=row.dtype,
                                        resolution=res,
                                        batch=batch,
                                        device=row.device,
                                        tile_rows=config.tile_rows,
                                        max_tile_pixels=config.max_tile_pixels,
                                    )
                                    row.peak_mem_mib = mem["peak_mib"]
                                    row.mem_kind = mem["kind"]
                                    row.extra["process_peak_mib"] = mem.get("process_peak_mib")
                                except (RuntimeError, ValueError) as e:
                                    row.note = (row.note + f" memory failed: {e}").strip()
                        rows.extend(group)
    return rows


def _fast_path_note(cfg: ModelConfig, variant: str) -> str:
    """``"skipped: ..."`` for a fast-path variant of a model whose decoder has no fast builder, else ``""``."""
    from anydepth.registry import FAST_DECODERS

    if variant == "eager" or cfg.decoder in FAST_DECODERS:
        return ""
    return f"{_SKIPPED} no fast path for the {cfg.decoder} decoder (fast paths: {', '.join(FAST_DECODERS.names())})"


def _emulation_note(dtype_name: str, device: str, allow: bool) -> str:
    """``"skipped: ..."`` for a low-precision dtype this CPU only emulates (unless allowed), else ``""``."""
    from anydepth.models.fast import native_low_precision

    dtype = parse_dtype(dtype_name)
    if allow or native_low_precision(dtype, device):
        return ""
    name = str(dtype).replace("torch.", "")
    return f"{_SKIPPED} no native {name} kernels on this CPU (emulated: 10-300x slower than float32)"


def _time_group(model: Any, group: list[BenchRow], config: BenchConfig, say: Callable[[str], None]) -> None:
    """Build every runner of a group, check outputs against eager fp32, time them interleaved."""
    if all(row.skipped for row in group):
        return
    first = group[0]
    device = first.device
    runners: dict[str, Callable[[], torch.Tensor]] = {}
    for row in group:
        if row.skipped:
            continue
        key = f"{row.variant}/{row.dtype}"
        say(f"build {row.model} {row.part} {key} {row.resolution}px b{row.batch} on {device}")
        try:
            runners[key] = build_runner(
                model,
                row.part,
                row.variant,
                parse_dtype(row.dtype),
                row.resolution,
                row.batch,
                device,
                tile_rows=config.tile_rows,
                max_tile_pixels=config.max_tile_pixels,
                seed=config.seed,
            )
        except (RuntimeError, ValueError) as e:
            row.note = f"not run: {e}"
    # accuracy of every variant against the eager float32 output (same inputs: same seed)
    ref_key = "eager/float32"
    ref = None
    with torch.no_grad():
        if ref_key in runners:
            ref = runners[ref_key]().float()
        else:
            ref = build_runner(
                model,
                first.part,
                "eager",
                torch.float32,
                first.resolution,
                first.batch,
                device,
                seed=config.seed,
            )().float()
        for row in group:
            key = f"{row.variant}/{row.dtype}"
            if key in runners:
                try:
                    out = runners[key]().float()
                    row.max_abs_diff = float((out - ref).abs().max())
                except RuntimeError as e:
                    row.note = f"failed: {e}"
                    runners.pop(key)
    del ref
    say(f"time {first.model} {first.part} {first.resolution}px b{first.batch}: {', '.join(runners)}")
    stats = time_interleaved(runners, warmup=config.warmup, repeats=config.repeats, sync=device_sync(device))
    base = stats.get(ref_key)
    for row in group:
        st = stats.get(f"{row.variant}/{row.dtype}")
        if st is None:
            continue
        row.latency_ms = st.median_ms
        row.latency_p25_ms = st.p25_ms
        row.latency_p75_ms = st.p75_ms
        row.throughput = 1000.0 * row.batch / st.median_ms
        if base is not None:
            row.speedup_vs_eager_fp32 = base.median_ms / st.median_ms


# --------------------------------------------------------------------------------------------- output

_TABLE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("model", "model", "s"),
    ("part", "part", "s"),
    ("variant", "variant", "s"),
    ("dtype", "dtype", "s"),
    ("resolution", "res", "d"),
    ("batch", "B", "d"),
    ("params_decoder", "dec params", ",d"),
    ("params_total", "total params", ",d"),
    ("gflops", "GFLOPs", ".2f"),
    ("gflops_paper", "GFLOPs (paper conv.)", ".2f"),
    ("latency_ms", "ms (median)", ".1f"),
    ("latency_p25_ms", "p25", ".1f"),
    ("latency_p75_ms", "p75", ".1f"),
    ("throughput", "img/s", ".2f"),
    ("speedup_vs_eager_fp32", "x eager fp32", ".2f"),
    ("peak_mem_mib", "peak MiB", ".1f"),
    ("max_abs_diff", "max |diff|", ".1e"),
    ("note", "note", "s"),
)


def format_table(rows: Sequence[BenchRow]) -> str:
    """A markdown table of the rows (columns with no value in any row are dropped)."""
    cols = [c for c in _TABLE_COLUMNS if any(getattr(r, c[0]) not in (None, "") for r in rows)]
    lines = ["| " + " | ".join(c[1] for c in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        cells = []
        for attr, _, fmt in cols:
            v = getattr(r, attr)
            text = "" if v is None else format(v, fmt) if fmt != "s" else str(v)
            cells.append(" ".join(text.split()).replace("|", "\\|"))  # one line, no cell breaks
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def rows_to_json(rows: Sequence[BenchRow], meta: Mapping[str, Any] | None = None) -> str:
    """JSON document ``{"meta": {...}, "rows": [...]}``."""
    info = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "allocator": allocator_name(),
    }
    info.update(meta or {})
    return json_text({"meta": info, "rows": [r.to_dict() for r in rows]}, nonfinite="null", indent=2)


def rows_to_csv(rows: Sequence[BenchRow]) -> str:
    """CSV text with one line per row (union of all keys as header)."""
    dicts = [r.to_dict() for r in rows]
    keys: list[str] = []
    for d in dicts:
        keys.extend(k for k in d if k not in keys)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    for d in dicts:
        w.writerow(d)
    return buf.getvalue()


def write_outputs(
    rows: Sequence[BenchRow],
    output_dir: str | os.PathLike[str],
    *,
    stem: str = "bench",
    plot: bool = True,
    overwrite: bool = False,
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write ``<stem>.json``, ``<stem>.csv``, ``<stem>.md`` (and ``<stem>.png``) atomically into ``output_dir``.

    Raises:
        FileExistsError: a target exists and ``overwrite`` is False.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / f"{stem}.json", "csv": out / f"{stem}.csv", "md": out / f"{stem}.md"}
    texts = {"json": rows_to_json(rows, meta), "csv": rows_to_csv(rows), "md": format_table(rows) + "\n"}
    for k, p in paths.items():
        with atomic_path(p, overwrite=overwrite) as tmp:
            Path(tmp).write_text(texts[k])
    if plot:
        from anydepth.bench.plot import plot_rows

        png = out / f"{stem}.png"
        if plot_rows(rows, png, overwrite=overwrite):
            paths["png"] = png
    return paths


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()
