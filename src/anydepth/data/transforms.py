"""Sample -> Sample transforms for training and evaluation, driven by an explicit ``torch.Generator``.

Every transform is a callable ``t(sample, generator) -> Sample`` that returns a new ``Sample`` (inputs are not
modified). Geometry is applied consistently to ``image`` ``[3,H,W]`` (bilinear), ``depth`` ``[1,H,W]`` and
``valid`` ``[1,H,W]`` (nearest, so depth values are never mixed across edges), and ``intrinsics`` are updated
(resize, crop, flip). All randomness comes from the generator argument, so a transform chain is deterministic
given the generator state; ``TransformedDataset`` seeds one generator per ``(seed, epoch, index)``.

Conventions: pixel-index coordinates (pixel u's centre is at u); ``Intrinsics.scaled`` handles resizes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from anydepth.types import Intrinsics, Sample

__all__ = [
    "Transform",
    "Compose",
    "RandomHorizontalFlip",
    "RandomRotation",
    "ResizeShortSide",
    "Resize",
    "RandomCrop",
    "CenterCrop",
    "ColorJitter",
    "TransformedDataset",
    "seeded_apply",
    "build_transforms",
    "derive_seed",
    "make_generator",
    "hflip",
    "rotate",
    "resize",
    "crop",
]

Transform = Callable[[Sample, torch.Generator], Sample]


def derive_seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers (e.g. ``(seed, epoch, index)``) with numpy's ``SeedSequence``."""
    if any(int(p) < 0 for p in parts):
        raise ValueError(f"derive_seed: parts must be >= 0, got {parts}")
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def make_generator(*parts: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``derive_seed(*parts)``."""
    g = torch.Generator()
    g.manual_seed(derive_seed(*parts))
    return g


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def _hw(s: Sample) -> tuple[int, int]:
    return int(s.image.shape[-2]), int(s.image.shape[-1])


def _check(s: Sample) -> None:
    h, w = _hw(s)
    if s.image.ndim != 3 or s.depth.shape[-2:] != (h, w) or s.valid.shape[-2:] != (h, w):
        raise ValueError(
            f"sample {s.name!r}: image {tuple(s.image.shape)}, depth {tuple(s.depth.shape)} and valid "
            f"{tuple(s.valid.shape)} must be [3,H,W], [1,H,W], [1,H,W] of the same size"
        )


# ---------------------------------------------------------------------------------------------------------------
# Deterministic geometric operations
# ---------------------------------------------------------------------------------------------------------------


def hflip(s: Sample) -> Sample:
    """Mirror left-right; ``cx -> W - 1 - cx``."""
    _check(s)
    w = _hw(s)[1]
    k = s.intrinsics
    k2 = None if k is None else Intrinsics(k.fx, k.fy, (w - 1) - k.cx, k.cy)
    return dataclasses.replace(
        s, image=s.image.flip(-1), depth=s.depth.flip(-1), valid=s.valid.flip(-1), intrinsics=k2
    )


def resize(s: Sample, size: tuple[int, int]) -> Sample:
    """Resize to ``size = (H', W')``: image bilinear (antialiased when shrinking), depth/valid nearest."""
    _check(s)
    h, w = _hw(s)
    nh, nw = int(size[0]), int(size[1])
    if nh < 1 or nw < 1:
        raise ValueError(f"resize: target size must be positive, got {size}")
    if (nh, nw) == (h, w):
        return s
    shrink = nh < h or nw < w
    img = F.interpolate(
        s.image[None].float(), size=(nh, nw), mode="bilinear", align_corners=False, antialias=shrink
    )
    img = img[0].clamp_(0.0, 1.0)
    depth = F.interpolate(s.depth[None].float(), size=(nh, nw), mode="nearest-exact")[0]
    valid = F.interpolate(s.valid[None].float(), size=(nh, nw), mode="nearest-exact")[0] > 0.5
    k = None if s.intrinsics is None else s.intrinsics.scaled(nw / w, nh / h)
    return dataclasses.replace(s, image=img, depth=depth, valid=valid, intrinsics=k)


def crop(s: Sample, top: int, left: int, height: int, width: int) -> Sample:
    """Crop ``[top:top+height, left:left+width]``; regions outside the image are padded (image 0, invalid)."""
    _check(s)
    h, w = _hw(s)
    if height < 1 or width < 1:
        raise ValueError(f"crop: size must be positive, got {height}x{width}")
    pad_t, pad_l = max(0, -top), max(0, -left)
    pad_b, pad_r = max(0, top + height - h), max(0, left + width - w)
    img, depth, valid = s.image, s.depth, s.valid
    if pad_t or pad_l or pad_b or pad_r:
        pads = (pad_l, pad_r, pad_t, pad_b)
        img = F.pad(img, pads, value=0.0)
        depth = F.pad(depth, pads, value=0.0)
        valid = F.pad(valid.to(torch.uint8), pads, value=0).bool()
    t0, l0 = top + pad_t, left + pad_l
    sl = (slice(None), slice(t0, t0 + height), slice(l0, l0 + width))
    k = s.intrinsics
    k2 = None if k is None else Intrinsics(k.fx, k.fy, k.cx - left, k.cy - top)
    return dataclasses.replace(
        s,
        image=img[sl].contiguous(),
        depth=depth[sl].contiguous(),
        valid=valid[sl].contiguous(),
        intrinsics=k2,
    )


def rotate(s: Sample, angle_deg: float) -> Sample:
    """Rotate the image plane by ``angle_deg`` (counter-clockwise as displayed) about the image centre.

    Image: bilinear; depth and valid: nearest; pixels whose source falls outside the image become invalid
    (image 0). Intrinsics are kept: a rotation about the principal point is a camera roll, which a pinhole
    model absorbs exactly only when the principal point is the image centre (true up to a few pixels here).
    """
    _check(s)
    if angle_deg == 0:
        return s
    h, w = _hw(s)
    a = math.radians(angle_deg)
    c, si = math.cos(a), math.sin(a)
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij"
    )
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    x0, y0 = xs - cx, ys - cy
    # Output pixel p samples the source at R(-a) p (image y axis points down, so CCW on screen is -a here).
    src_x = c * x0 - si * y0 + cx
    src_y = si * x0 + c * y0 + cy
    grid = torch.stack([2 * (src_x + 0.5) / w - 1, 2 * (src_y + 0.5) / h - 1], dim=-1)[None]
    img = F.grid_sample(
        s.image[None].float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    both = torch.cat([s.depth.float(), s.valid.float()], dim=0)[None]
    dv = F.grid_sample(both, grid, mode="nearest", padding_mode="zeros", align_corners=False)[0]
    inside = (src_x > -0.5) & (src_x < w - 0.5) & (src_y > -0.5) & (src_y < h - 0.5)
    valid = (dv[1:2] > 0.5) & inside[None]
    depth = torch.where(valid, dv[0:1], torch.zeros_like(dv[0:1]))
    return dataclasses.replace(s, image=img[0].clamp_(0.0, 1.0), depth=depth, valid=valid)


# ---------------------------------------------------------------------------------------------------------------
# Transform objects
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Compose:
    """Apply ``transforms`` in order with the same generator."""

    transforms: Sequence[Transform]

    def __call__(self, s: Sample, g: torch.Generator) -> Sample:
        for t in self.transforms:
            s = t(s, g)
        return s


@dataclass
class RandomHorizontalFlip:
    """Mirror with probability ``p``."""

    p: float = 0.5

    def __call__(self, s: Sample, g: torch.Generator) -> Sample:
        return hflip(s) if _uniform(g, 0.0, 1.0) < self.p else s


@dataclass
class RandomRotation:
    """With probability ``p``, rotate by an angle uniform in ``[-max_deg, max_deg]`` (DINOv3 depth: 2.5, 0.5)."""

    max_deg: float = 2.5
    p: float = 0.5

    def __call__(self, s: Sample, g: torch.Generator) -> Sample:
        apply = _uniform(g, 0.0, 1.0) < self.p
        angle = _uniform(g, -self.max_deg, self.max_deg)
        return rotate(s, angle) if apply else s


@dataclass
class ResizeShortSide:
    """Resize so the shorter side equals ``size`` (aspect kept; the longer side rounded)."""

    size: int

    def __call__(self, s: Sample, g: torch.Generator) -> Sample:
        h, w = _hw(s)
        scale = self.size / min(h, w)
        return resize(s, (max(self.size, round(h * scale)), max(self.size, round(w * scale))))


@dataclass
class Resize:
    """Resize to a fixed ``(H, W)`` (aspect not kept)."""

    size: tuple[int, int]

    def __call__(self, s: Sample, g: torch.Generator) -> Sample:
        return resize(s, (int(self.size[0]), int(self.size[1])))


def _size2(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    if len(size) != 2:
        raise ValueError(f"crop size must be an int or (H, W), got {size!r}")
    return int(size[0]), int(size[1])


@dataclass
class RandomCrop:
    """Crop ``size`` (int or (H, W)) at a uniformly random position; smaller images are padded as invalid."""

    size: int | tuple[int, int]

    def __call__(self, s: Sample, g: torch.Generator) -> Sample:
        ch, cw = _size2(self.size)
        h, w = _hw(s)
        top = int(torch.randint(0, max(h - ch, 0) + 1, (), generator=g))
        left = int(torch.randint(0, max(w - cw, 0) + 1, (), generator=g))
        if h < ch:
            top = -((ch - h) // 2)
        if w < cw:
            left = -((cw - w) // 2)
        return crop(s, top, left, ch, cw)


@dataclass
class CenterCrop:
    """Crop ``size`` (int or (H, W)) at the centre; smaller images are padded as invalid."""

    size: int | tuple[int, int]

    def __call__(self, s: Sample, g: torch.Generator) -> Sample:
        ch, cw = _size2(self.size)
        h, w = _hw(s)
        return crop(s, (h - ch) // 2, (w - cw) // 2, ch, cw)


@dataclass
class ColorJitter:
    """Photometric jitter: multiply brightness, contrast (about the mean grey) and saturation by factors drawn
    uniformly from the given ranges (None = off), in that order, with probability ``p``; result clamped to [0, 1]."""

    brightness: tuple[float, float] | None = (0.9, 1.1)
    contrast: tuple[float, float] | None = None
    saturation: tuple[float, float] | None = None
    p: float = 1.0

    def __call__(self, s: Sample, g: torch.Generator) -> Sample:
        apply = _uniform(g, 0.0, 1.0) < self.p
        fb = _uniform(g, *self.brightness) if self.brightness else 1.0
        fc = _uniform(g, *self.contrast) if self.contrast else 1.0
        fs = _uniform(g, *self.saturation) if self.saturation else 1.0
        if not apply:
            return s
        img = s.image.float() * fb
        grey = 0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2]
        if fc != 1.0:
            img = (img - grey.mean()) * fc + grey.mean()
            grey = 0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2]
        if fs != 1.0:
            img = (img - grey[None]) * fs + grey[None]
        return dataclasses.replace(s, image=img.clamp(0.0, 1.0))


def build_transforms(
    size: int | tuple[int, int] = 768,
    *,
    train: bool = True,
    flip_p: float = 0.5,
    rotate_deg: float = 2.5,
    rotate_p: float = 0.5,
    brightness: tuple[float, float] | None = None,
    contrast: tuple[float, float] | None = None,
    saturation: tuple[float, float] | None = None,
) -> Compose:
    """The standard chain. Train: resize short side -> random rotation -> random crop -> flip -> jitter.
    Eval: resize short side -> center crop. ``size`` is the crop (768x768 in the paper's recipe)."""
    ch, cw = _size2(size) if not isinstance(size, int) else (size, size)
    ts: list[Transform] = [ResizeShortSide(max(ch, cw))]
    if train:
        if rotate_deg > 0 and rotate_p > 0:
            ts.append(RandomRotation(rotate_deg, rotate_p))
        ts.append(RandomCrop((ch, cw)))
        if flip_p > 0:
            ts.append(RandomHorizontalFlip(flip_p))
        if brightness or contrast or saturation:
            ts.append(ColorJitter(brightness, contrast, saturation))
    else:
        ts.append(CenterCrop((ch, cw)))
    return Compose(ts)


class TransformedDataset(torch.utils.data.Dataset):
    """Apply ``transform`` to ``dataset[i]`` with a generator seeded by ``(seed, epoch, i)``: the one seeded wrapper.

    Reproducible regardless of worker count or order. Two ways to say the epoch: call ``set_epoch`` each epoch and
    index with ``i``, or index with ``(epoch, i)`` (what ``engine.distributed.ShardedSampler(with_epoch=True)``
    yields, so every DataLoader worker knows the epoch without shared state). Either way ``dataset.set_epoch``
    (weighted mixtures draw a new schedule per epoch) is called when the epoch changes.

    Args:
        dataset: map-style dataset of ``Sample``s.
        transform: ``(sample, generator) -> sample``, e.g. ``build_transforms(...)``.
        seed: base seed.
    """

    def __init__(self, dataset: Any, transform: Transform, seed: int = 0) -> None:
        self.dataset = dataset
        self.transform = transform
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | tuple[int, int]) -> Sample:
        if isinstance(key, tuple):
            epoch, i = key
            if epoch != self.epoch:
                self.set_epoch(epoch)
        else:
            i = key
        return seeded_apply(self.transform, self.dataset[i], self.seed, self.epoch, i)


def seeded_apply(transform: Transform, sample: Sample, seed: int, epoch: int, index: int) -> Sample:
    """``transform(sample)`` with the generator of ``(seed, epoch, index)``, the seeding of every augmentation."""
    return transform(sample, make_generator(seed, epoch, index))
