"""DPT baseline decoder: shapes (odd/non-square grids, patch 14), range, gradients, parameter counts, options."""

from __future__ import annotations

import pytest
import torch

from anydepth.models.decoders import DPTDecoder
from anydepth.registry import DECODERS
from anydepth.types import EncoderOutput

SMALL = {"channels": 8, "post_process_channels": (8, 8, 16, 16)}


def _enc(
    c: int = 24, grid: tuple[int, int] = (4, 6), b: int = 2, patch: int = 16, cls: bool = True
) -> EncoderOutput:
    g = torch.Generator().manual_seed(0)
    feats = tuple(torch.randn(b, c, *grid, generator=g) for _ in range(4))
    tokens = tuple(torch.randn(b, c, generator=g) for _ in range(4)) if cls else ()
    return EncoderOutput(feats, tokens, patch)


def _n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_registered() -> None:
    assert DECODERS.get("dpt") is DPTDecoder


@pytest.mark.parametrize(("c", "expected"), [(384, 50_825_153), (768, 76_047_425), (1024, 99_579_713)])
def test_parameter_counts_match_paper(c: int, expected: int) -> None:
    with torch.device("meta"):
        dec = DPTDecoder([c] * 4)
    assert _n_params(dec) == expected


@pytest.mark.parametrize(
    ("grid", "patch", "native", "out_hw"),
    [
        ((4, 4), 16, (64, 64), (64, 64)),
        ((4, 6), 16, (64, 96), (64, 96)),
        ((4, 6), 14, (64, 96), (56, 84)),
        ((3, 5), 16, (64, 96), (48, 80)),  # odd grid: the stride-2 branch rounds up, then resized
    ],
)
def test_output_shape_and_range(
    grid: tuple[int, int], patch: int, native: tuple[int, int], out_hw: tuple[int, int]
) -> None:
    dec = DPTDecoder([24] * 4, **SMALL).eval()
    enc = _enc(grid=grid, patch=patch)
    with torch.no_grad():
        raw = dec.forward_raw(enc)
        out = dec(enc, out_hw)
    assert raw.shape == (2, 1, *native)
    assert out.shape == (2, 1, *out_hw)
    assert torch.isfinite(out).all() and out.min() >= 0.001 - 1e-7


def test_gradients_reach_every_parameter() -> None:
    dec = DPTDecoder([24] * 4, **SMALL).train()
    with torch.no_grad():
        dec.head.conv_out.bias.fill_(10.0)  # keep the output ReLU active
    dec(_enc(), (64, 96)).square().mean().backward()
    missing = [n for n, p in dec.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing


def test_state_dict_keys() -> None:
    keys = set(DPTDecoder([24] * 4, **SMALL).state_dict())
    for k in (
        "reassemble.readouts.0.weight",
        "reassemble.norms.2.running_mean",
        "reassemble.projects.3.bias",
        "reassemble.resizes.0.weight",
        "reassemble.resizes.3.weight",
        "layer_convs.1.weight",
        "fusions.0.res2.conv1.weight",
        "fusions.3.res1.conv2.weight",
        "fusions.2.project.bias",
        "project.weight",
        "head.conv_out.weight",
    ):
        assert k in keys
    assert "fusions.0.res1.conv1.weight" not in keys and "reassemble.resizes.2.weight" not in keys
    assert "layer_convs.0.bias" not in keys


def test_options_change_structure() -> None:
    base = DPTDecoder([24] * 4, **SMALL)
    no_bn = DPTDecoder([24] * 4, use_batchnorm=False, **SMALL)
    assert not any(k.startswith("reassemble.norms") for k in no_bn.state_dict())
    assert _n_params(base) - _n_params(no_bn) == 4 * 2 * 24
    for readout in ("ignore", "add"):
        dec = DPTDecoder([24] * 4, readout=readout, **SMALL)
        assert not any("readouts" in k for k in dec.state_dict())
        assert _n_params(base) - _n_params(dec) == 4 * (48 * 24 + 24)
    out = DPTDecoder([24] * 4, readout="ignore", **SMALL).eval()(_enc(cls=False), (64, 96))
    assert out.shape == (2, 1, 64, 96)
    with pytest.raises(ValueError, match="class tokens"):
        DPTDecoder([24] * 4, readout="add", **SMALL)(_enc(cls=False), (64, 96))
    wide = DPTDecoder([24] * 4, channels=12, post_process_channels=(4, 6, 8, 10))
    sd = wide.state_dict()
    assert sd["reassemble.projects.1.weight"].shape == (6, 24, 1, 1)
    assert sd["layer_convs.3.weight"].shape == (12, 10, 3, 3)
    assert sd["head.conv1.weight"].shape == (6, 12, 3, 3)
    with torch.device("meta"):
        assert DPTDecoder([24] * 4).post_process_channels == (24, 24, 24, 24)  # default [C]*4


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ([24] * 3, {}, "exactly 4"),
        ([24] * 4, {"chanels": 8}, "unknown DPT decoder option"),
        ([24] * 4, {"readout": "concat"}, "readout"),
        ([24] * 4, {"channels": 7}, "even"),
        ([24] * 4, {"post_process_channels": (8, 8)}, "post_process_channels"),
    ],
)
def test_bad_options_are_rejected(args: list, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DPTDecoder(args, **kwargs)
