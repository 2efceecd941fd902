"""Dataset concatenation, the reproducible weighted mixture and config-dict builders."""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np
import pytest

from anydepth.data import io
from anydepth.data.datasets.synthetic import SyntheticDataset
from anydepth.data.datasets.vkitti2 import VKITTI2Dataset
from anydepth.data.mixture import ConcatDepthDataset, MixtureDataset, build_dataset, build_mixture
from anydepth.data.transforms import build_transforms


class _Items:
    def __init__(self, name: str, n: int) -> None:
        self.name, self.n = name, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[str, int]:
        if not 0 <= i < self.n:
            raise IndexError(i)
        return self.name, i


def test_concatenation():
    c = ConcatDepthDataset([_Items("a", 3), _Items("empty", 0), _Items("b", 2)])
    assert len(c) == 5
    assert [c[i] for i in range(5)] == [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1)]
    assert c.locate(-1) == (2, 1)
    with pytest.raises(IndexError):
        c[5]


def test_mixture_is_reproducible_and_follows_weights():
    ds = [_Items("a", 50), _Items("b", 7), _Items("c", 100)]
    m = MixtureDataset(ds, weights=[3.0, 1.0, 0.0], length=4000, seed=11)
    items = [m[i] for i in range(len(m))]
    again = MixtureDataset(ds, weights=[3.0, 1.0, 0.0], length=4000, seed=11)
    assert items == [again[i] for i in range(4000)]
    counts = Counter(name for name, _ in items)
    assert "c" not in counts  # zero weight
    assert counts["a"] / 4000 == pytest.approx(0.75, abs=0.03)
    # within a dataset, no repeat until every sample has been used
    b_seq = [j for name, j in items if name == "b"]
    for start in range(0, len(b_seq) - 7, 7):
        assert sorted(b_seq[start : start + 7]) == list(range(7))
    m.set_epoch(1)
    assert [m[i] for i in range(50)] != items[:50]
    m.set_epoch(0)
    assert [m[i] for i in range(50)] == items[:50]


def test_mixture_defaults_and_errors():
    m = MixtureDataset([_Items("a", 4), _Items("b", 12)], seed=0)  # weights by size, one pass
    assert len(m) == 16
    assert m.weights == pytest.approx([0.25, 0.75])
    with pytest.raises(ValueError, match="empty"):
        MixtureDataset([_Items("a", 0)], weights=[1.0])
    with pytest.raises(ValueError, match="weights"):
        MixtureDataset([_Items("a", 3)], weights=[-1.0])
    with pytest.raises(ValueError, match="2 weights for 1"):
        MixtureDataset([_Items("a", 3)], weights=[1.0, 2.0])


def test_mixture_with_transform_is_deterministic():
    syn = SyntheticDataset(length=5, size=(40, 48), seed=0)
    mk = lambda: MixtureDataset([syn], [1.0], length=6, seed=3, transform=build_transforms(32))  # noqa: E731
    a, b = mk()[4], mk()[4]
    assert a.image.shape == (3, 32, 32) and a.image.equal(b.image) and a.depth.equal(b.depth)


def test_build_dataset_from_config_dicts(tmp_path):
    rgb = "Scene02/fog/frames/rgb/Camera_0/rgb_00001.jpg"
    dep = "Scene02/fog/frames/depth/Camera_0/depth_00001.png"
    io.write_image(tmp_path / rgb, np.zeros((3, 4, 3), np.uint8))
    io.write_png16(tmp_path / dep, np.full((3, 4), 500, np.uint16))
    (tmp_path / "train.txt").write_text(f"{rgb} {dep}\n")
    spec = {"name": "vkitti2", "root": str(tmp_path), "split_file": str(tmp_path / "train.txt"), "weight": 2.0,
            "sky_policy": "far_plane", "max_depth": 80.0}  # fmt: skip
    ds = build_dataset(spec)
    assert isinstance(ds, VKITTI2Dataset) and ds.sky_policy == "far_plane" and ds.max_depth == 80.0
    assert float(ds[0].depth[0, 0, 0]) == 5.0
    syn = build_dataset({"name": "synthetic", "length": 3, "size": [16, 24], "scene_types": ["indoor"]})
    assert len(syn) == 3 and syn[0].image.shape == (3, 16, 24)
    with pytest.raises(KeyError, match="vkitti2"):
        build_dataset({"name": "vkiti2", "root": str(tmp_path)})
    with pytest.raises(ValueError, match="name"):
        build_dataset({"root": str(tmp_path)})
    with pytest.raises(ValueError, match="unknown option"):
        build_dataset(
            {"name": "vkitti2", "root": str(tmp_path), "split_file": str(tmp_path / "train.txt"), "x": 1}
        )
    mix = build_mixture(
        [spec, {"name": "synthetic", "length": 4, "size": [3, 4], "weight": 1.0}], length=9, seed=1
    )
    assert len(mix) == 9 and mix.weights == pytest.approx([2 / 3, 1 / 3])
    with pytest.raises(ValueError, match="every dataset or for none"):
        build_mixture([spec, {"name": "synthetic", "length": 4}])


def test_trainer_datasets_use_the_one_mixture():
    # engine.data.build_datasets: no weights = concatenation; weights = build_mixture (share of samples drawn)
    from anydepth.engine.config import DatasetSpec
    from anydepth.engine.data import build_datasets

    a = DatasetSpec(name="synthetic", kwargs={"length": 2, "size": (8, 8)})
    b = DatasetSpec(name="synthetic", kwargs={"length": 6, "size": (8, 8)})
    plain = build_datasets([a, b])
    assert isinstance(plain, ConcatDepthDataset) and len(plain) == 8
    mixed = build_datasets([dataclasses.replace(a, weight=3.0), dataclasses.replace(b, weight=1.0)], seed=4)
    assert isinstance(mixed, MixtureDataset) and len(mixed) == 8
    assert mixed.weights == pytest.approx([0.75, 0.25])  # independent of the sizes 2 and 6
    with pytest.raises(ValueError, match="every dataset or for none"):
        build_datasets([dataclasses.replace(a, weight=3.0), b])
    with pytest.raises(ValueError, match="unknown option"):
        build_datasets([DatasetSpec(name="synthetic", kwargs={"no_such_option": 1})])
