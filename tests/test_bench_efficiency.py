"""Benchmark harness: timing statistics, ``anydepth bench`` outputs, peak-memory subprocess."""

from __future__ import annotations

import csv
import dataclasses
import json
import sys
from pathlib import Path

import pytest
import torch

from anydepth.bench.efficiency import (
    BenchConfig,
    TimingStats,
    benchmark,
    build_runner,
    format_table,
    parse_dtype,
    time_interleaved,
)
from anydepth.cli.main import main


def test_timing_stats_quartiles() -> None:
    st = TimingStats.from_samples([0.004, 0.001, 0.003, 0.002, 0.005])
    assert st.median_ms == pytest.approx(3.0)
    assert st.p25_ms == pytest.approx(2.0) and st.p75_ms == pytest.approx(4.0)
    assert st.min_ms == pytest.approx(1.0) and st.n == 5
    with pytest.raises(ValueError):
        TimingStats.from_samples([])


def test_time_interleaved_round_robin_and_sync() -> None:
    calls: list[str] = []
    syncs = [0]
    fns = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    stats = time_interleaved(fns, warmup=1, repeats=3, sync=lambda: syncs.__setitem__(0, syncs[0] + 1))
    assert set(stats) == {"a", "b"} and all(s.n == 3 for s in stats.values())
    # warm-up a b, then a b / b a / a b: neither variant always runs first
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]
    assert syncs[0] >= 2 * 6
    with pytest.raises(ValueError):
        time_interleaved(fns, repeats=0)


def test_config_validation_and_dtypes() -> None:
    assert parse_dtype("bf16") is torch.bfloat16 and parse_dtype("float32") is torch.float32
    with pytest.raises(ValueError, match="dtype"):
        parse_dtype("int8")
    with pytest.raises(ValueError, match="variant"):
        BenchConfig(variants=("turbo",))
    with pytest.raises(ValueError, match="part"):
        BenchConfig(parts=("head",))


def test_runner_variants_agree() -> None:
    import anydepth

    model = anydepth.create_model("sdt_test")
    outs = {
        v: build_runner(model, "decoder", v, torch.float32, 64, 1, "cpu", tile_rows=8)()
        for v in ("eager", "fast", "fast_direct", "fast_untiled")
    }
    for v, o in outs.items():
        assert o.shape == (1, 1, 64, 64)
        assert (o - outs["eager"]).abs().max() <= 1e-4, v
    with pytest.raises(ValueError, match="SDT"):
        build_runner(
            anydepth.create_model("dpt_test"), "decoder", "fast_untiled", torch.float32, 64, 1, "cpu"
        )


def test_benchmark_rows_without_timing() -> None:
    rows = benchmark(
        BenchConfig(
            models=("sdt_test", "dpt_test"),
            resolutions=(64,),
            latency=False,
            memory=False,
            variants=("eager",),
        )
    )
    assert [r.model for r in rows] == ["sdt_test", "dpt_test"]
    assert all(r.gflops and r.gflops_paper and r.latency_ms is None for r in rows)
    assert rows[0].params_decoder + rows[0].params_encoder == rows[0].params_total
    assert "| sdt_test |" in format_table(rows)


def test_cli_bench_quick_writes_table_json_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench"
    threads = torch.get_num_threads()
    try:
        rc = main(
            [
                "bench",
                "--quick",
                "--resolutions",
                "64",
                "--repeats",
                "2",
                "--no-memory",
                "--threads",
                "1",
                "-o",
                str(out),
            ]
        )
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| model |" in printed and "sdt_test" in printed and "dpt_test" in printed
    doc = json.loads((out / "bench.json").read_text())
    rows = doc["rows"]
    # default variants eager, fast, fast_direct for both decoders
    assert len(rows) == 6
    assert doc["meta"]["torch"] == torch.__version__
    for r in rows:
        assert r["latency_ms"] > 0 and r["throughput"] > 0 and r["max_abs_diff"] <= 1e-4
        assert r["speedup_vs_eager_fp32"] > 0
    eager = [r for r in rows if r["variant"] == "eager"]
    assert all(r["speedup_vs_eager_fp32"] == 1.0 for r in eager)
    with open(out / "bench.csv", newline="") as f:
        csv_rows = list(csv.DictReader(f))
    assert len(csv_rows) == 6 and {"model", "latency_ms", "gflops", "peak_mem_mib"} <= set(csv_rows[0])
    assert (out / "bench.md").read_text().startswith("| model |")
    assert (out / "bench.png").stat().st_size > 1000
    # never overwrites without --overwrite
    rc = main(["bench", "--quick", "--resolutions", "64", "--no-latency", "--no-memory", "-o", str(out)])
    assert rc == 2


def test_cli_bench_paper_tables(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--paper"]) == 0
    text = capsys.readouterr().out
    for n in ("5,517,381", "9,451,077", "13,384,261", "50,825,153", "76,047,425", "99,579,713"):
        assert n in text
    assert "444.139" in text and "234.176" in text


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_peak_memory_subprocess_tiled_is_lower() -> None:
    from anydepth.bench.memory import measure_peak_memory

    eager = measure_peak_memory("sdt_test", variant="eager", resolution=256, threads=1)
    tiled = measure_peak_memory("sdt_test", variant="fast", resolution=256, tile_rows=16, threads=1)
    assert eager["kind"] == "cpu_rss_delta"
    assert eager["process_peak_mib"] > eager["peak_mib"] > 0
    # 32-channel maps at 256x256 are 8 MiB each; the tiled path keeps only 16-row slices of them
    assert tiled["peak_mib"] < eager["peak_mib"]


def test_emulated_low_precision_is_skipped_not_timed(monkeypatch: pytest.MonkeyPatch) -> None:
    import anydepth.export.fast as fast

    monkeypatch.setattr(fast, "native_low_precision", lambda dtype, device="cpu": dtype == torch.float32)
    cfg = BenchConfig(
        models=("sdt_test",), resolutions=(64,), dtypes=("float32", "bfloat16"), variants=("eager", "fast"),
        warmup=0, repeats=1, memory=False, flops=False,
    )  # fmt: skip
    rows = benchmark(cfg)
    by = {(r.variant, r.dtype): r for r in rows}
    assert len(rows) == 4
    for v in ("eager", "fast"):
        assert by[(v, "float32")].latency_ms is not None and by[(v, "float32")].note == ""
        skipped = by[(v, "bfloat16")]
        assert skipped.latency_ms is None and skipped.note.startswith("skipped: no native bfloat16")
    assert "skipped: no native bfloat16" in format_table(rows)
    # a group with only skipped rows is reported, not timed
    only = benchmark(dataclasses.replace(cfg, dtypes=("bfloat16",)))
    assert len(only) == 2 and all(r.latency_ms is None and r.note for r in only)
    # allowed explicitly: timed (tiny model, so emulation is affordable)
    rows = benchmark(dataclasses.replace(cfg, allow_emulated=True, variants=("fast",)))
    assert all(r.latency_ms is not None and r.note == "" for r in rows)


def test_models_without_a_fast_path_get_skipped_rows_and_the_table_stays_one_line_per_row() -> None:
    cfg = BenchConfig(
        models=("dpt_dav2_test",), resolutions=(56,), variants=("eager", "fast", "fast_direct"),
        warmup=0, repeats=1, memory=True, flops=False,
    )  # fmt: skip
    rows = benchmark(cfg)
    by = {r.variant: r for r in rows}
    assert by["eager"].latency_ms is not None and by["eager"].peak_mem_mib is not None
    for v in ("fast", "fast_direct"):
        assert by[v].latency_ms is None and by[v].peak_mem_mib is None
        assert by[v].note.startswith("skipped: no fast path for the dpt_dav2 decoder")
    # a note with a line break or a pipe (e.g. an error text) cannot break the markdown table
    by["eager"].note = "failed: line one\nline | two"
    table = format_table(rows)
    assert len(table.splitlines()) == 2 + len(rows)
    assert "failed: line one line \\| two" in table
