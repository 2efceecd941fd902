"""The GPU efficiency check (``anydepth.bench.gpu`` + ``scripts/gpu_check.py``): its CPU dry run and its rules."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

import anydepth
from anydepth.bench.gpu import (
    PARITY_RTOL,
    TINY_PRESETS,
    GpuCheckConfig,
    format_markdown,
    run_gpu_check,
    summarize,
    write_report,
)
from anydepth.models.fast import FastSDTDecoder

REPO = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("gpu_check_script", REPO / "scripts" / "gpu_check.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _tiny(**kw) -> GpuCheckConfig:
    base = dict(
        widths=dict(TINY_PRESETS),
        resolutions=(64,),
        batches=(1,),
        dtypes=("float32",),
        device="cpu",
        compile=(),
        warmup=0,
        min_repeats=1,
        max_repeats=2,
        parity_hw=(48, 80),
    )
    base.update(kw)
    return GpuCheckConfig(**base)


def test_dry_run_measures_every_variant_and_fast_matches_eager(tmp_path, one_thread):
    result = run_gpu_check(_tiny())
    rows = result["rows"]
    variants = {(r["part"], r["decoder"], r["variant"]) for r in rows}
    assert ("decoder", "sdt", "fast_t4") in variants and ("decoder", "dpt", "fast_nchw") in variants
    assert ("model", "sdt", "fast") in variants and ("model", "dpt", "eager") in variants
    assert not any(r["variant"] in ("official", "fast_graph", "compiled") for r in rows)  # none asked for
    for r in rows:
        assert r["latency_ms"] is not None and r["latency_ms"] > 0, r
        assert r["peak_mib"] is None  # memory is a CUDA statistic
    # the parity check is non-trivial (outputs vary) and within the documented tolerance
    for preset, checks in result["parity"].items():
        assert checks["output_abs_max"] > 0.01
        for k, v in checks.items():
            if isinstance(v, dict):
                assert v["max_rel"] <= PARITY_RTOL["float32"], (preset, k, v)
    s = summarize(result)
    assert {(w["variant"], w["res"]) for w in s["whole_model"]} == {("eager", 64), ("fast", 64)}
    paths = write_report(result, tmp_path)
    doc = json.loads(paths["json"].read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
    assert doc["env"]["device"] == "cpu" and len(doc["rows"]) == len(rows)
    md = paths["md"].read_text()
    assert "## Parity on the device" in md and "## All rows" in md
    with pytest.raises(FileExistsError):
        write_report(result, tmp_path)


def test_widths_after_the_first_get_the_target_variants_only():
    result = run_gpu_check(_tiny(widths={"T": TINY_PRESETS["T"], "U": TINY_PRESETS["T"]}, parts=("decoder",)))
    by_width = {
        w: {r["variant"] for r in result["rows"] if r["width"] == w and r["decoder"] == "sdt"} for w in "TU"
    }
    assert by_width["T"] == {"eager", "fast", "fast_untiled", "fast_t2", "fast_t4", "fast_nchw"}
    assert by_width["U"] == {"eager", "fast", "fast_t4"}


def test_budget_and_variant_filter_are_recorded():
    result = run_gpu_check(_tiny(budget_s=0.0, variants=("eager", "fast")))
    assert result["rows"] and {r["variant"] for r in result["rows"]} == {"eager", "fast"}
    assert all(
        r["note"].startswith("skipped: time budget") and r["latency_ms"] is None for r in result["rows"]
    )
    assert "skipped: time budget" in format_markdown(result)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="part"):
        _tiny(parts=("encoder",))
    with pytest.raises(ValueError, match="dtype"):
        _tiny(dtypes=("int8",))
    with pytest.raises(ValueError, match="repeats"):
        _tiny(min_repeats=3, max_repeats=2)


def test_script_dry_run_and_argument_errors(tmp_path, capsys):
    script = _script()
    out = tmp_path / "dry"
    argv = ["--dry-run", "--out", str(out), "--resolutions", "64", "--batches", "1", "--parts", "decoder"]
    assert script.main(argv) == 0
    assert (out / "gpu_check.json").is_file() and (out / "gpu_check.md").is_file()
    assert script.main(argv) == 2  # never overwrites
    assert "exists" in capsys.readouterr().err
    assert script.main(["--dry-run", "--out", str(tmp_path / "x"), "--widths", "Q"]) == 2
    assert "unknown width" in capsys.readouterr().err
    assert script.main(["--dry-run", "--out", str(tmp_path / "y"), "--official-dir", str(tmp_path)]) == 2
    assert "sdt_head.py" in capsys.readouterr().err


def test_gpu_default_tiling_rule():
    """On accelerators the SDT fast path tiles only when one full-resolution map would exceed its cap."""
    dec = FastSDTDecoder(anydepth.create_model("sdt_test").decoder)
    cap = FastSDTDecoder.GPU_MAX_FULLRES_BYTES
    assert dec._tile(1024, 1024, "cuda", cap) == 1024  # fits: untiled
    assert dec._tile(1024, 1024, "cuda", cap + 1) == 512  # two equal tiles
    assert dec._tile(1024, 1024, "cuda", 3 * cap) == 342  # three, rounded up to even rows
    assert dec._tile(1024, 1024, "cpu", 1) < 1024  # the CPU keeps its quarter-image tiles
    assert math.isclose(cap / 2**30, 4.0)
