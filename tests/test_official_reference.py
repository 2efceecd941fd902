"""Regression against outputs of the official AnyDepth heads, stored in tests/data (no official code needed).

The files were written by ``scripts/parity/official_decoders.py --write-refs tests/data`` from the official
``model/sdt_head.py`` / ``model/dpt_head.py`` (commit recorded in the file metadata) with random weights and
random BatchNorm statistics: official-named state dict (``state_dict/*``), inputs (``input/*``) and the
official raw head output (``output/raw``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from anydepth.models.decoders import DPTDecoder, SDTDecoder
from anydepth.models.official import OFFICIAL_COMMIT, convert_official_state_dict
from anydepth.types import EncoderOutput

DATA = Path(__file__).resolve().parent / "data"


def _load(name: str) -> tuple[dict[str, torch.Tensor], EncoderOutput, torch.Tensor, dict[str, str]]:
    path = DATA / name
    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
    sd = {k.removeprefix("state_dict/"): v for k, v in tensors.items() if k.startswith("state_dict/")}
    n = sum(k.startswith("input/features.") for k in tensors)
    enc = EncoderOutput(
        tuple(tensors[f"input/features.{i}"] for i in range(n)),
        tuple(tensors[f"input/cls.{i}"] for i in range(n)),
        int(meta["patch_size"]),
    )
    return sd, enc, tensors["output/raw"], meta


@pytest.mark.parametrize(
    ("name", "cls", "kind"),
    [("official_sdt_tiny", SDTDecoder, "sdt"), ("official_dpt_tiny", DPTDecoder, "dpt")],
)
def test_matches_official_head(name: str, cls: type, kind: str) -> None:
    sd, enc, ref_raw, meta = _load(f"{name}.safetensors")
    assert meta["official_commit"] == OFFICIAL_COMMIT
    assert (DATA / f"{name}.safetensors").stat().st_size < 200_000
    dec_sd, enc_sd, info = convert_official_state_dict(sd)
    assert enc_sd is None and info["decoder"] == kind
    official_kwargs = json.loads(meta["official_kwargs"])
    assert list(info["in_dims"]) == official_kwargs["in_channels"]
    decoder = cls(info["in_dims"], **info["decoder_kwargs"])
    decoder.load_state_dict(dec_sd, strict=True)
    decoder.eval()
    with torch.no_grad():
        raw = decoder.forward_raw(enc)
        out = decoder(enc, tuple(ref_raw.shape[-2:]))
    assert raw.shape == ref_raw.shape
    assert (
        float((raw - ref_raw).abs().max()) <= 1e-4
    )  # the parity tolerance; oneDNN picks thread-count-dependent kernels
    # the official model wraps the head in FeaturesToDepth: ReLU(x) + 0.001
    assert float((out - (torch.relu(ref_raw) + 0.001)).abs().max()) <= 1e-4
