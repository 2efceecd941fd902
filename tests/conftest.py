"""Fixtures shared by the test modules.

* ``rgbd_root`` / ``rgbd_fixtures``: the real RGB-D frames of ``../shared/fixtures/rgbd`` (next to the repository;
  never copied into it); ``rgbd_fixtures`` skips the test where they are not available.
* ``one_thread``: one intra-op torch thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``):
  tiny tensors and many small ops only add OpenMP contention on the shared 2-core CI machine.
* ``nontrivial``: randomises a decoder's weights, BatchNorm statistics and DySample offsets so that every layer
  matters (with the default init the tiny models output an almost constant map, which would hide errors).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from anydepth.models.layers.dysample import DySample

RGBD_FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "rgbd"


@pytest.fixture(scope="session")
def rgbd_root() -> Path | None:
    """The shared RGB-D fixture directory, or None where it (its ``manifest.json``) is not available."""
    return RGBD_FIXTURES if (RGBD_FIXTURES / "manifest.json").is_file() else None


@pytest.fixture(scope="session")
def rgbd_fixtures(rgbd_root: Path | None) -> Path:
    """The shared RGB-D fixture directory; skips the test where it is not available."""
    if rgbd_root is None:
        pytest.skip("shared RGB-D fixtures not available")
    return rgbd_root


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _nontrivial(model: nn.Module, seed: int = 0, offset_std: float = 0.3) -> nn.Module:
    """He-scaled conv weights, random BN statistics and sizeable DySample offsets: every layer matters."""
    g = torch.Generator().manual_seed(seed)
    dysample_convs = {id(c) for m in model.modules() if isinstance(m, DySample) for c in m.children()}
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
        elif isinstance(m, DySample):
            m.offset.weight.data.normal_(0, offset_std, generator=g)
            if m.scope is not None:
                m.scope.weight.data.normal_(0, 0.3, generator=g)
        elif isinstance(m, nn.Conv2d | nn.ConvTranspose2d) and id(m) not in dysample_convs:
            m.weight.data.normal_(0, math.sqrt(2.0 / m.weight[0].numel()), generator=g)
            if m.bias is not None:
                m.bias.data.normal_(0, 0.1, generator=g)
    return model.eval()


@pytest.fixture(scope="session")
def nontrivial() -> Callable[..., nn.Module]:
    """``nontrivial(module, seed=0, offset_std=0.3) -> module`` (in place, eval mode)."""
    return _nontrivial
