"""The fast inference path (``anydepth.models.fast``, old path ``anydepth.export.fast``) gives the plain model's numbers, tiled or not."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

import anydepth
from anydepth.bench.flops import synthetic_encoder_output
from anydepth.export.fast import (
    FastDPTDecoder,
    FastSDTDecoder,
    fast_decoder,
    fold_bn_after,
    fold_bn_before,
    native_low_precision,
    nnpack_available,
    optimize_for_inference,
    resolve_conv_algo,
)
from anydepth.models.decoders.sdt import SDTDecoder

FP32_TOL = 1e-4


pytestmark = pytest.mark.usefixtures("one_thread")  # many small per-tile ops: no OpenMP barrier stalls

Nontrivial = Callable[..., nn.Module]  # the conftest fixture ``nontrivial``


def _enc(decoder: nn.Module, hw: tuple[int, int], batch: int = 2, seed: int = 3):
    return synthetic_encoder_output(
        decoder.in_dims, hw, batch, 16, "cpu", torch.float32, torch.Generator().manual_seed(seed)
    )


@pytest.fixture(scope="module")
def sdt(nontrivial: Nontrivial) -> SDTDecoder:
    torch.manual_seed(0)
    dec = nontrivial(anydepth.create_model("sdt_test").decoder)
    assert isinstance(dec, SDTDecoder)
    return dec


def test_fold_bn_matches_module(nontrivial: Nontrivial) -> None:
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(4, 6, 3, padding=1, bias=True), nn.BatchNorm2d(6)
    nontrivial(nn.Sequential(conv, bn))
    x = torch.randn(2, 4, 7, 5)
    w, b = fold_bn_after(conv, bn)
    torch.testing.assert_close(nn.functional.conv2d(x, w, b, padding=1), bn(conv(x)), atol=1e-5, rtol=1e-5)
    bn2, proj = nn.BatchNorm2d(4), nn.Conv2d(4, 3, 1)
    nontrivial(nn.Sequential(bn2, proj))
    w, b = fold_bn_before(bn2, proj)
    torch.testing.assert_close(nn.functional.conv2d(x, w, b), proj(bn2(x)), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="unpadded"):
        fold_bn_before(bn2, nn.Conv2d(4, 3, 3, padding=1))


def test_output_is_not_trivial(sdt: SDTDecoder) -> None:
    # guards the other tests: a constant output would make every comparison pass
    raw = sdt.forward_raw(_enc(sdt, (6, 8)))
    assert raw.std() > 0.05


@pytest.mark.parametrize(
    ("token_hw", "tile_rows"),
    [((4, 4), 0), ((4, 4), 2), ((6, 8), 10), ((5, 3), 6), ((5, 3), 1000), ((1, 2), 4)],
)
@pytest.mark.parametrize("conv_algo", ["auto", "direct"])
def test_sdt_fast_matches_plain(
    sdt: SDTDecoder, token_hw: tuple[int, int], tile_rows: int, conv_algo: str
) -> None:
    enc = _enc(sdt, token_hw)
    with torch.no_grad():
        ref = sdt.forward_raw(enc)
    got = FastSDTDecoder(sdt, tile_rows=tile_rows, conv_algo=conv_algo).forward_raw(enc)
    assert got.shape == ref.shape
    assert (got - ref).abs().max() <= FP32_TOL


def test_sdt_tiled_equals_untiled(sdt: SDTDecoder) -> None:
    enc = _enc(sdt, (7, 5), batch=1)
    untiled = FastSDTDecoder(sdt, tile_rows=0).forward_raw(enc)
    for kw in (
        {"tile_rows": 4},
        {"tile_rows": 14},
        {"max_tile_pixels": 80 * 16},
        {"tile_rows": 8, "channels_last": True},
    ):
        tiled = FastSDTDecoder(sdt, **kw).forward_raw(enc)
        # the same arithmetic up to float rounding (conv shapes and grid normalisation differ per tile)
        torch.testing.assert_close(tiled, untiled, atol=1e-5, rtol=0)


def test_sdt_tiling_exact_with_large_offsets(nontrivial: Nontrivial) -> None:
    # offsets of several pixels force the tile slabs to widen beyond the default margin
    torch.manual_seed(1)
    dec = nontrivial(anydepth.create_model("sdt_test").decoder, seed=5, offset_std=5.0)
    enc = _enc(dec, (5, 4), batch=1)
    with torch.no_grad():
        ref = dec.forward_raw(enc)
    for kw in ({"tile_rows": 0}, {"tile_rows": 6}, {"tile_rows": 4, "max_materialized_pixels": 0}):
        assert (FastSDTDecoder(dec, **kw).forward_raw(enc) - ref).abs().max() <= FP32_TOL


def test_sdt_bilinear_ablation_and_no_cls(nontrivial: Nontrivial) -> None:
    torch.manual_seed(2)
    cfg = anydepth.models.factory.get_model_config("sdt_test").replace(
        decoder_kwargs={"upsampler": "bilinear", "use_cls_token": False, "use_sde": False}
    )
    dec = nontrivial(anydepth.create_model(cfg).decoder)
    enc = _enc(dec, (5, 6))
    with torch.no_grad():
        ref = dec(enc, (80, 96))
    for t in (0, 12):
        assert (FastSDTDecoder(dec, tile_rows=t)(enc, (80, 96)) - ref).abs().max() <= FP32_TOL


def test_dpt_fast_matches_plain(nontrivial: Nontrivial) -> None:
    torch.manual_seed(3)
    dec = nontrivial(anydepth.create_model("dpt_test").decoder)
    for hw in ((4, 4), (6, 8), (3, 5)):
        enc = _enc(dec, hw)
        with torch.no_grad():
            ref = dec(enc, (16 * hw[0], 16 * hw[1]))
        assert ref.std() > 0.05
        for algo in ("auto", "direct"):
            got = FastDPTDecoder(dec, conv_algo=algo)(enc, (16 * hw[0], 16 * hw[1]))
            assert (got - ref).abs().max() <= FP32_TOL * max(1.0, float(ref.abs().max()))


@pytest.mark.parametrize("name", ["sdt_test", "dpt_test"])
def test_whole_model_fast_path(name: str, nontrivial: Nontrivial) -> None:
    torch.manual_seed(4)
    model = nontrivial(anydepth.create_model(name))
    x = torch.rand(2, 3, 96, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(x)
    fast = optimize_for_inference(model)
    got = fast(x)
    assert got.shape == ref.shape == (2, 1, 96, 64)
    assert got.dtype == torch.float32
    assert (got - ref).abs().max() <= FP32_TOL * max(1.0, float(ref.abs().max()))
    assert fast.patch_size == model.patch_size and fast.output_space == model.output_space
    # the source model is untouched
    with torch.no_grad():
        assert torch.equal(model(x), ref)


@pytest.mark.skipif(not nnpack_available(), reason="torch built without NNPACK")
def test_winograd_within_tolerance(sdt: SDTDecoder) -> None:
    enc = _enc(sdt, (6, 8))
    with torch.no_grad():
        ref = sdt.forward_raw(enc)
    for t in (0, 6):
        got = FastSDTDecoder(sdt, tile_rows=t, conv_algo="winograd").forward_raw(enc)
        assert (got - ref).abs().max() <= FP32_TOL


def test_conv_algo_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    import anydepth.models.fast.common as fast

    for have in (True, False):
        monkeypatch.setattr(fast, "nnpack_available", lambda have=have: have)
        assert resolve_conv_algo("auto", torch.float32) == ("winograd" if have else "direct")
        assert resolve_conv_algo("auto", torch.bfloat16) == "direct"
        assert resolve_conv_algo("direct", torch.float32) == "direct"
        assert resolve_conv_algo("winograd", torch.float32) == ("winograd" if have else "direct")
    with pytest.raises(ValueError, match="float32"):
        resolve_conv_algo("winograd", torch.float16)
    with pytest.raises(ValueError, match="unknown conv_algo"):
        resolve_conv_algo("fft", torch.float32)
    assert native_low_precision(torch.float32) and native_low_precision(torch.bfloat16, "cuda")


def test_emulated_low_precision_warns_once(
    sdt: SDTDecoder, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import anydepth.models.fast.common as fast

    monkeypatch.setattr(fast, "native_low_precision", lambda dtype, device="cpu": dtype == torch.float32)
    dec = FastSDTDecoder(sdt, dtype=torch.bfloat16, tile_rows=0)
    enc = _enc(sdt, (2, 2), batch=1)
    with caplog.at_level("WARNING", logger="anydepth.models.fast.common"):
        dec.forward_raw(enc)
        dec.forward_raw(enc)
    assert sum("no native kernels" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_modes_run_and_stay_close(sdt: SDTDecoder, dtype: torch.dtype) -> None:
    enc = _enc(sdt, (4, 4), batch=1)
    with torch.no_grad():
        ref = sdt.forward_raw(enc)
    got = FastSDTDecoder(sdt, dtype=dtype, tile_rows=8).forward_raw(enc)
    assert got.dtype == torch.float32
    err = float((got - ref).abs().max())
    # measured on this tiny model: bf16 ~3e-2, fp16 ~4e-3 on outputs of magnitude ~1.4
    assert err < (0.15 if dtype == torch.bfloat16 else 0.03) * float(ref.abs().max())


def test_bad_options_raise(sdt: SDTDecoder) -> None:
    with pytest.raises(ValueError, match="tile_rows"):
        FastSDTDecoder(sdt, tile_rows=-1)
    with pytest.raises(ValueError, match="max_materialized_pixels"):
        FastSDTDecoder(sdt, max_materialized_pixels=-1)
    with pytest.raises(ValueError, match="conv_algo"):
        FastSDTDecoder(sdt, conv_algo="fft")
    with pytest.raises(ValueError, match="float32"):
        FastSDTDecoder(sdt, conv_algo="winograd", dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="dtype"):
        FastSDTDecoder(sdt, dtype=torch.float64)
    dpt = anydepth.create_model("dpt_test")
    with pytest.raises(ValueError, match="SDT only"):
        fast_decoder(dpt.decoder, tile_rows=4)
    with pytest.raises(ValueError, match="only supported for the SDT"):
        optimize_for_inference(dpt, tile_rows=4)
    with pytest.raises(ValueError, match="untiled"):
        optimize_for_inference(anydepth.create_model("sdt_test"), compile=True, tile_rows=8)
    with pytest.raises(ValueError, match="no fast path"):
        fast_decoder(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="feature"):
        FastSDTDecoder(sdt).forward_raw(synthetic_encoder_output((8, 8, 8), (4, 4)))


@pytest.mark.slow
def test_compile_matches_eager(sdt: SDTDecoder) -> None:
    enc = _enc(sdt, (4, 4), batch=1)
    compiled = torch.compile(FastSDTDecoder(sdt, tile_rows=0), dynamic=False)
    with torch.no_grad():
        ref = sdt(enc, (64, 64))
    assert (compiled(enc, (64, 64)) - ref).abs().max() <= FP32_TOL
