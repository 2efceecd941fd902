"""Sample transforms (geometry, intrinsics, determinism) and batching."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from anydepth.data.collate import Batch, collate, collate_samples
from anydepth.data.datasets.synthetic import SyntheticDataset
from anydepth.data.transforms import (
    CenterCrop,
    ColorJitter,
    Compose,
    RandomCrop,
    RandomHorizontalFlip,
    RandomRotation,
    ResizeShortSide,
    TransformedDataset,
    build_transforms,
    crop,
    hflip,
    make_generator,
    resize,
    rotate,
)
from anydepth.types import DepthSpace, Intrinsics, Sample


def _sample(h: int = 9, w: int = 13, seed: int = 0) -> Sample:
    g = torch.Generator().manual_seed(seed)
    depth = torch.rand(1, h, w, generator=g) * 10 + 1
    valid = torch.rand(1, h, w, generator=g) > 0.2
    return Sample(
        image=torch.rand(3, h, w, generator=g),
        depth=torch.where(valid, depth, torch.zeros_like(depth)),
        valid=valid,
        depth_space=DepthSpace.DEPTH_METRIC,
        source="test",
        name=f"s{seed}",
        intrinsics=Intrinsics(20.0, 21.0, 5.5, 4.0),
    )


def _same(a: Sample, b: Sample) -> bool:
    return (
        a.image.equal(b.image)
        and a.depth.equal(b.depth)
        and a.valid.equal(b.valid)
        and a.intrinsics == b.intrinsics
    )


def test_flip_twice_is_identity_and_mirrors_intrinsics():
    s = _sample()
    f = hflip(s)
    assert f.image[:, 2, 0].equal(s.image[:, 2, -1])
    assert f.intrinsics.cx == 12 - 5.5 and f.intrinsics.fx == 20.0
    assert _same(hflip(f), s)


def test_crop_updates_principal_point_and_pads_invalid():
    s = _sample()
    c = crop(s, 2, 3, 5, 6)
    assert c.image.shape == (3, 5, 6) and c.depth.equal(s.depth[:, 2:7, 3:9])
    assert (c.intrinsics.cx, c.intrinsics.cy) == (2.5, 2.0)
    big = CenterCrop((11, 13))(s, make_generator(0))  # taller than the image: padded rows are invalid
    assert big.image.shape == (3, 11, 13)
    assert not big.valid[:, 0].any() and not big.valid[:, -1].any() and big.valid[:, 1:10].equal(s.valid)
    assert big.intrinsics.cy == 5.0


def test_resize_scales_intrinsics_and_keeps_depth_values():
    s = _sample(8, 12)
    r = resize(s, (16, 6))
    assert r.image.shape == (3, 16, 6) and r.depth.shape == (1, 16, 6)
    k = r.intrinsics
    assert k.fx == pytest.approx(10.0) and k.fy == pytest.approx(42.0)
    assert k.cx == pytest.approx((5.5 + 0.5) * 0.5 - 0.5) and k.cy == pytest.approx((4.0 + 0.5) * 2 - 0.5)
    # nearest: every output depth is an input depth and validity travels with it
    assert set(r.depth[r.valid].tolist()) <= set(s.depth[s.valid].tolist())
    assert (r.depth[~r.valid] == 0).all()
    short = ResizeShortSide(16)(s, make_generator(0))
    assert short.image.shape[-2:] == (16, 24)


def test_rotate_90_matches_rot90_and_small_rotation_invalidates_corners():
    s = _sample(11, 11)
    r = rotate(s, 90.0)
    torch.testing.assert_close(r.image, torch.rot90(s.image, 1, (-2, -1)), atol=1e-5, rtol=0)
    assert r.depth.equal(torch.rot90(s.depth, 1, (-2, -1)))
    s2 = dataclasses.replace(_sample(40, 50), valid=torch.ones(1, 40, 50, dtype=torch.bool))
    r2 = rotate(s2, 2.5)
    assert not r2.valid[0, 0, 0] and not r2.valid[0, -1, -1] and r2.valid[0, 20, 25]
    assert r2.intrinsics == s2.intrinsics
    assert (r2.depth[~r2.valid] == 0).all()


def test_random_transforms_are_deterministic_given_the_generator():
    s = _sample(30, 40)
    t = Compose(
        [
            RandomRotation(2.5, 0.5),
            RandomCrop(24),
            RandomHorizontalFlip(0.5),
            ColorJitter((0.9, 1.1), (0.9, 1.1), (0.8, 1.2)),
        ]
    )
    a = [t(s, make_generator(7, 0, i)) for i in range(6)]
    b = [t(s, make_generator(7, 0, i)) for i in range(6)]
    assert all(_same(x, y) for x, y in zip(a, b, strict=True))
    assert not all(_same(a[0], x) for x in a[1:])
    assert all(x.image.shape == (3, 24, 24) for x in a)
    # flips happen and the crop offsets move the principal point
    assert len({x.intrinsics.cx for x in a}) > 1


def test_color_jitter_brightness_factor():
    s = dataclasses.replace(_sample(), image=torch.full((3, 9, 13), 0.5))
    out = ColorJitter(brightness=(0.8, 0.8), p=1.0)(s, make_generator(0))
    torch.testing.assert_close(out.image, torch.full((3, 9, 13), 0.4))
    assert out.depth.equal(s.depth)


def test_build_transforms_and_transformed_dataset():
    ds = SyntheticDataset(length=4, size=(40, 56), seed=1)
    tds = TransformedDataset(ds, build_transforms(32), seed=5)
    a = tds[2]
    assert a.image.shape == (3, 32, 32) and a.depth.shape == (1, 32, 32)
    assert _same(a, TransformedDataset(ds, build_transforms(32), seed=5)[2])
    tds.set_epoch(1)
    ev = build_transforms(32, train=False)(ds[2], make_generator(0))
    assert ev.image.shape == (3, 32, 32)


def test_collate_samples():
    samples = [_sample(seed=i) for i in range(3)]
    samples[1] = dataclasses.replace(samples[1], intrinsics=None)
    b = collate_samples(samples)
    assert b["image"].shape == (3, 3, 9, 13) and b["depth"].shape == (3, 1, 9, 13)
    assert b["valid"].dtype == torch.bool and b["valid"].shape == (3, 1, 9, 13)
    assert b["intrinsics"].shape == (3, 4) and torch.isnan(b["intrinsics"][1]).all()
    assert b["metric"].tolist() == [True, True, True]
    assert all(isinstance(v, torch.Tensor) for v in b.values())
    assert collate_samples(samples, include_meta=True)["name"] == ["s0", "s1", "s2"]
    with pytest.raises(ValueError, match="s1"):
        collate_samples([_sample(), _sample(5, 5, seed=1)])


def test_transformed_dataset_epoch_keys_equal_set_epoch():
    # the sampler's (epoch, index) keys and set_epoch + index are one seeding: (seed, epoch, index)
    ds = SyntheticDataset(length=3, size=(40, 48), seed=2)
    by_key = TransformedDataset(ds, build_transforms(32), seed=7)
    by_epoch = TransformedDataset(ds, build_transforms(32), seed=7)
    by_epoch.set_epoch(3)
    assert _same(by_key[(3, 1)], by_epoch[1]) and by_key.epoch == 3
    assert not by_key[(4, 1)].image.equal(by_epoch[1].image)  # another epoch, another augmentation


def test_collate_builds_batch_directly():
    samples = [_sample(seed=i) for i in range(2)]
    samples[1] = dataclasses.replace(samples[1], depth_space=DepthSpace.DISPARITY_AFFINE_INVARIANT)
    b = collate(samples)
    assert isinstance(b, Batch) and b.names == ["s0", "s1"]
    assert b.depth_space == [samples[0].depth_space, DepthSpace.DISPARITY_AFFINE_INVARIANT]
    d = collate_samples(samples)
    assert b.image.equal(d["image"]) and b.depth.equal(d["depth"]) and b.valid.equal(d["valid"])
    with pytest.raises(ValueError, match="s1"):
        collate([_sample(), _sample(5, 5, seed=1)])
