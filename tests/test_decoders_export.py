"""Both decoders export with ``torch.export`` and a dynamic token grid (slow: run with ``-m slow``)."""

from __future__ import annotations

import pytest
import torch

import anydepth.models.decoders  # noqa: F401  (registers "sdt" and "dpt")
from anydepth.registry import DECODERS
from anydepth.types import EncoderOutput


class _Flat(torch.nn.Module):
    """Flat-tensor wrapper (export needs tensor inputs); out_hw follows the token grid (patch 14)."""

    def __init__(self, dec: torch.nn.Module) -> None:
        super().__init__()
        self.dec = dec

    def forward(self, f0, f1, f2, f3, c0, c1, c2, c3) -> torch.Tensor:  # type: ignore[no-untyped-def]
        enc = EncoderOutput((f0, f1, f2, f3), (c0, c1, c2, c3), 14)
        return self.dec(enc, (f0.shape[-2] * 14, f0.shape[-1] * 14))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sdt", "dpt"])
def test_torch_export_with_dynamic_token_grid(kind: str) -> None:
    # Neither decoder may bake the token grid (or its parity) into an exported graph.
    dec = DECODERS.get(kind)(
        [16] * 4, **({"channels": 8} if kind == "dpt" else {"fusion_channels": 8, "head_channels": (8, 8)})
    )
    model = _Flat(dec.eval())
    g = torch.Generator().manual_seed(0)
    cls = tuple(torch.randn(1, 16, generator=g) for _ in range(4))
    args = tuple(torch.randn(1, 16, 4, 6, generator=g) for _ in range(4)) + cls
    h, w = torch.export.Dim("h", min=3, max=64), torch.export.Dim("w", min=3, max=64)
    dynamic = tuple({2: h, 3: w} for _ in range(4)) + (None,) * 4
    exported = torch.export.export(model, args, dynamic_shapes=dynamic).module()
    for grid in ((5, 7), (3, 8)):
        feats = tuple(torch.randn(1, 16, *grid, generator=g) for _ in range(4))
        with torch.no_grad():
            torch.testing.assert_close(exported(*feats, *cls), model(*feats, *cls))
