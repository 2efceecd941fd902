"""Every registry entry gets the same checks, with no new test code: every ``*_test`` encoder, every decoder
(through its ``*_test`` presets) and every fast decoder builder.

A new encoder registered as ``<name>_test`` and a new decoder with a ``<decoder>_*test`` preset are picked up
automatically; a registered decoder without a tiny preset fails ``test_every_decoder_has_a_test_preset``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

import anydepth
from anydepth.models.encoders.base import EncoderWrapper
from anydepth.models.factory import get_model_config
from anydepth.models.fast import optimize_for_inference
from anydepth.registry import DECODERS, ENCODERS, FAST_DECODERS

pytestmark = pytest.mark.usefixtures("one_thread")

TEST_ENCODERS = [n for n in ENCODERS.names() if n.endswith("_test")]
TEST_PRESETS = anydepth.list_models("*_test")
FAST_PRESETS = [p for p in TEST_PRESETS if get_model_config(p).decoder in FAST_DECODERS]

# Parameter counts of the tiny presets (a change means the architecture changed; update with care).
PARAM_COUNTS = {
    "sdt_test": {"encoder": 75936, "decoder": 82629, "total": 158565},
    "dpt_test": {"encoder": 75936, "decoder": 188385, "total": 264321},
    "sdt_dinov2_test": {"encoder": 72128, "decoder": 82629, "total": 154757},
}
FP32_TOL = 1e-4  # fast path vs eager, float32 (docs/efficiency.md)


def test_registries_are_populated() -> None:
    assert {"dinov3_test", "dinov2_test"} <= set(TEST_ENCODERS)
    assert {"sdt", "dpt"} <= set(DECODERS.names()) and {"sdt", "dpt"} <= set(FAST_DECODERS.names())
    assert set(FAST_DECODERS.names()) <= set(DECODERS.names())  # a fast builder belongs to a decoder
    assert {"sdt_test", "dpt_test"} <= set(FAST_PRESETS)


def test_every_decoder_has_a_test_preset() -> None:
    covered = {get_model_config(p).decoder for p in TEST_PRESETS}
    missing = sorted(set(DECODERS.names()) - covered)
    assert not missing, f"decoders without a *_test preset (add one in models/presets.py): {missing}"


@pytest.mark.parametrize("name", TEST_ENCODERS)
def test_encoder_forward_and_taps(name: str) -> None:
    torch.manual_seed(0)
    backbone = ENCODERS.get(name)().eval()
    n, p = int(backbone.n_blocks), int(backbone.patch_size)
    taps = tuple(range(n))[-4:]
    enc = EncoderWrapper(backbone, taps)
    x = torch.randn(2, 3, 2 * p, 3 * p, generator=torch.Generator().manual_seed(1))
    out = enc(x)
    assert out.patch_size == p and len(out.features) == len(out.cls_tokens) == len(taps)
    for c, f, t in zip(enc.embed_dims, out.features, out.cls_tokens, strict=True):
        assert tuple(f.shape) == (2, c, 2, 3) and tuple(t.shape) == (2, c)
        assert torch.isfinite(f).all() and torch.isfinite(t).all()
    # a tap is the output of its own block: changing the last block changes the last tap only (Meta's block
    # names ``blocks.N.*``, which every ViT here uses; VGGT's aggregator taps block pairs ``frame_blocks.N`` +
    # ``global_blocks.N``, its own names)
    own = tuple(f"{b}.{taps[-1]}." for b in ("blocks", "frame_blocks", "global_blocks"))
    last = [q for k, q in backbone.named_parameters() if k.startswith(own)]
    assert last, f"{name}: no parameters named blocks.{taps[-1]}.*"
    with torch.no_grad():
        for q in last:
            q.add_(0.5)
    again = enc(x)
    for f0, f1 in zip(out.features[:-1], again.features[:-1], strict=True):
        assert torch.equal(f0, f1)
    assert not torch.equal(out.features[-1], again.features[-1])
    with pytest.raises(ValueError, match="out of range"):
        EncoderWrapper(backbone, (n,))


@pytest.mark.parametrize("preset", TEST_PRESETS)
def test_preset_builds_and_predicts(preset: str) -> None:
    torch.manual_seed(0)
    model = anydepth.create_model(preset)
    p = model.patch_size
    x = torch.rand(2, 3, 3 * p, 4 * p, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x)
    assert tuple(y.shape) == (2, 1, 3 * p, 4 * p) and y.dtype == torch.float32
    assert torch.isfinite(y).all() and (y >= 0).all()
    # counts from the meta-device build (no memory) equal those of the built model, and stay stable
    counts = anydepth.count_parameters(preset)
    assert counts == anydepth.count_parameters(model)
    if preset in PARAM_COUNTS:
        assert counts == PARAM_COUNTS[preset]


@pytest.mark.parametrize("preset", FAST_PRESETS)
def test_fast_path_equals_eager(preset: str, nontrivial: Callable[..., nn.Module]) -> None:
    torch.manual_seed(0)
    model = nontrivial(anydepth.create_model(preset))
    p = model.patch_size
    x = torch.rand(1, 3, 3 * p, 5 * p, generator=torch.Generator().manual_seed(2))
    fast = optimize_for_inference(model, conv_algo="direct")
    assert type(fast.decoder) is FAST_DECODERS.get(get_model_config(preset).decoder)
    with torch.no_grad():
        ref = model(x)
        got = fast(x)
    assert float((got - ref).abs().max()) <= FP32_TOL
