"""Known-answer tests for the training losses and the disparity target."""

from __future__ import annotations

import math

import pytest
import torch

from anydepth.losses import DepthLoss, depth_loss, disparity_target, gradient_loss, ssi_loss
from anydepth.losses.ssi import masked_median, residual_loss, robust_normalize
from anydepth.types import DepthSpace


def _img(values: list[list[float]]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)[None, None]


def _rand(
    b: int = 2, h: int = 16, w: int = 20, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(b, 1, h, w, generator=g)
    pred = torch.rand(b, 1, h, w, generator=g)
    mask = torch.rand(b, 1, h, w, generator=g) > 0.3
    return pred, target, mask


# ---------------------------------------------------------------------------------------------- SSI term
@pytest.mark.parametrize("variant", ["robust", "lstsq"])
@pytest.mark.parametrize("reduction", ["batch", "image"])
def test_affine_prediction_gives_zero_loss(variant: str, reduction: str) -> None:
    _, target, mask = _rand()
    pred = 3.7 * target + 0.25
    total, parts = depth_loss(pred, target, mask, variant=variant, reduction=reduction)
    assert float(parts["ssi"]) == pytest.approx(0.0, abs=1e-6)
    assert float(parts["grad"]) == pytest.approx(0.0, abs=1e-5)
    assert float(total) == pytest.approx(0.0, abs=1e-5)


def test_lstsq_is_invariant_to_negative_scale_robust_is_not() -> None:
    _, target, mask = _rand()
    pred = -2.0 * target + 5.0
    assert float(ssi_loss(pred, target, mask, variant="lstsq")) == pytest.approx(0.0, abs=1e-6)
    assert float(ssi_loss(pred, target, mask, variant="robust")) > 0.1


def test_robust_hand_computed() -> None:
    # target [0,1,2,3]: lower median 1, MAD mean(1,0,1,2)=1 -> [-1,0,1,2]
    # pred [0,0,0,4]: lower median 0, MAD mean(0,0,0,4)=1 -> [0,0,0,4]
    # |residual| = [1,0,1,2], sum 4 -> L = 4 / (2*4) = 0.5
    target = _img([[0.0, 1.0], [2.0, 3.0]])
    pred = _img([[0.0, 0.0], [0.0, 4.0]])
    mask = torch.ones_like(target, dtype=torch.bool)
    assert torch.allclose(robust_normalize(target, mask), _img([[-1.0, 0.0], [1.0, 2.0]]))
    assert float(ssi_loss(pred, target, mask)) == pytest.approx(0.5, abs=1e-7)
    # R = p_hat - d_hat = [[1,0],[-1,2]]: x diffs |0-1| + |2+1| = 4, y diffs |-1-1| + |2-0| = 4 -> 8 / M=4 = 2
    # coarser scales are single pixels: no pairs. total = 0.5 + 2 * 2 = 4.5
    total, parts = depth_loss(pred, target, mask)
    assert float(parts["grad"]) == pytest.approx(2.0, abs=1e-6)
    assert float(total) == pytest.approx(4.5, abs=1e-6)


def test_lstsq_hand_computed() -> None:
    # fit s*p+t to d=[0,1,1] with p=[0,1,2]: s=0.5, t=1/6; residuals 1/6,-1/3,1/6 -> SSE 1/6 -> L = (1/6)/(2*3)
    pred = _img([[0.0, 1.0, 2.0]])
    target = _img([[0.0, 1.0, 1.0]])
    mask = torch.ones_like(target, dtype=torch.bool)
    assert float(ssi_loss(pred, target, mask, variant="lstsq")) == pytest.approx(1.0 / 36.0, abs=1e-7)


def test_masked_median_ignores_invalid_pixels() -> None:
    x = _img([[5.0, 1.0, 100.0, 3.0, 2.0]])
    mask = torch.tensor([[[[True, True, False, True, False]]]])
    assert float(masked_median(x, mask)) == 3.0  # median of {5, 1, 3}
    x2 = _img([[1.0, 2.0, 3.0, 4.0]])
    assert float(masked_median(x2, torch.ones_like(x2, dtype=torch.bool))) == 2.0  # lower middle value


@pytest.mark.parametrize("variant", ["robust", "lstsq"])
def test_masked_pixels_do_not_matter(variant: str) -> None:
    pred, target, mask = _rand(seed=1)
    loss_fn = DepthLoss(variant=variant)
    base, _ = loss_fn(pred, target, mask)
    g = torch.Generator().manual_seed(7)
    pred2 = torch.where(mask, pred, torch.rand(pred.shape, generator=g) * 1000)
    target2 = torch.where(mask, target, torch.rand(pred.shape, generator=g) * -1000)
    pred2.requires_grad_(True)
    other, _ = loss_fn(pred2, target2, mask)
    assert float(other.detach()) == pytest.approx(float(base), rel=1e-6, abs=1e-7)
    other.backward()
    assert pred2.grad is not None
    assert torch.all(pred2.grad[~mask] == 0)
    assert torch.isfinite(pred2.grad).all()


def test_trimming_drops_largest_residuals() -> None:
    # residuals |p-d| = [1, 2, 3, 10] on 4 valid pixels; trim 0.25 keeps the smallest 3: (1+2+3)/(2*4)
    p = _img([[1.0, 2.0, 3.0, 10.0]])
    d = torch.zeros_like(p)
    m = torch.ones_like(p, dtype=torch.bool)
    assert float(residual_loss(p, d, m)) == pytest.approx(16.0 / 8.0)
    assert float(residual_loss(p, d, m, trim=0.25)) == pytest.approx(6.0 / 8.0)


def test_reduction_batch_vs_image() -> None:
    # image 0: 1 valid pixel with residual 4; image 1: 3 valid pixels with residual 1 each
    p = torch.tensor([4.0, 9.0, 9.0, 9.0, 1.0, 1.0, 1.0, 9.0]).view(2, 1, 1, 4)
    d = torch.zeros_like(p)
    m = torch.tensor([True, False, False, False, True, True, True, False]).view(2, 1, 1, 4)
    assert float(residual_loss(p, d, m, reduction="batch")) == pytest.approx((4 + 3) / (2 * 4))
    assert float(residual_loss(p, d, m, reduction="image")) == pytest.approx((4 / 2 + 3 / 6) / 2)


def test_no_valid_pixel_gives_zero_with_graph() -> None:
    pred = torch.rand(2, 1, 8, 8, requires_grad=True)
    target = torch.rand(2, 1, 8, 8)
    mask = torch.zeros_like(target, dtype=torch.bool)
    total, _ = depth_loss(pred, target, mask)
    assert float(total.detach()) == 0.0
    total.backward()
    assert torch.all(pred.grad == 0)


def test_one_empty_image_in_batch_is_ignored() -> None:
    pred, target, mask = _rand(b=2, seed=3)
    mask[1] = False
    alone, _ = depth_loss(pred[:1], target[:1], mask[:1], reduction="image")
    both, _ = depth_loss(pred, target, mask, reduction="image")
    assert float(both) == pytest.approx(float(alone), rel=1e-6)
    assert math.isfinite(float(both))


# -------------------------------------------------------------------------------------------- gradient
def test_gradient_of_constant_residual_is_zero() -> None:
    pred, target, mask = _rand(seed=4)
    assert float(gradient_loss(target + 0.37, target, mask)) == pytest.approx(0.0, abs=1e-6)


def test_gradient_ignores_pairs_with_an_invalid_pixel() -> None:
    # a step in the residual only across an invalid pixel: no valid pair sees it
    target = torch.zeros(1, 1, 1, 5)
    pred = _img([[0.0, 0.0, 7.0, 1.0, 1.0]])
    mask = torch.tensor([[[[True, True, False, True, True]]]])
    assert float(gradient_loss(pred, target, mask, scales=1)) == pytest.approx(0.0)
    # making the middle pixel valid exposes |7-0| + |1-7| = 13 over M = 5
    assert float(gradient_loss(pred, target, torch.ones_like(mask), scales=1)) == pytest.approx(13.0 / 5.0)


def test_gradient_multiscale_uses_strided_slices() -> None:
    # 1x8 ramp residual r = j: scale 0: 7 pairs of 1 over 8 pixels; scale 1 (j=0,2,4,6): 3 pairs of 2 over 4;
    # scale 2 (j=0,4): 1 pair of 4 over 2; scale 3 (j=0): nothing. Sum = 7/8 + 6/4 + 4/2
    pred = torch.arange(8, dtype=torch.float32).view(1, 1, 1, 8)
    target = torch.zeros_like(pred)
    mask = torch.ones_like(pred, dtype=torch.bool)
    assert float(gradient_loss(pred, target, mask, scales=4)) == pytest.approx(7 / 8 + 6 / 4 + 4 / 2)
    assert float(gradient_loss(pred, target, mask, scales=1)) == pytest.approx(7 / 8)


def test_loss_is_finite_under_bf16_input() -> None:
    pred, target, mask = _rand(seed=5)
    total, _ = depth_loss(pred.bfloat16(), target, mask)
    assert total.dtype == torch.float32 and torch.isfinite(total)


def test_bad_arguments_raise() -> None:
    pred, target, mask = _rand()
    with pytest.raises(ValueError, match="variant"):
        ssi_loss(pred, target, mask, variant="median")
    with pytest.raises(ValueError, match="reduction"):
        ssi_loss(pred, target, mask, reduction="sum")
    with pytest.raises(ValueError, match="shape"):
        ssi_loss(pred, target[:, :, :-1], mask)
    with pytest.raises(ValueError, match="trim"):
        DepthLoss(trim=1.0)


# ---------------------------------------------------------------------------------------------- target
def test_disparity_target_known_values() -> None:
    depth = _img([[1.0, 2.0, 4.0, 200.0, 0.0]])
    valid = torch.tensor([[[[True, True, True, True, True]]]])
    t, m = disparity_target(depth, valid)
    # depth 0 is invalid; 200 m is clipped to the 100 m far plane -> disparity 0.01
    assert m.tolist() == [[[[True, True, True, True, False]]]]
    disp = torch.tensor([1.0, 0.5, 0.25, 0.01])
    expected = (disp - 0.01) / (1.0 - 0.01)
    assert torch.allclose(t[0, 0, 0, :4], expected, atol=1e-6)
    assert float(t[0, 0, 0, 4]) == 0.0
    raw, _ = disparity_target(depth, valid, normalize=False)
    assert torch.allclose(raw[0, 0, 0, :4], disp)


def test_disparity_target_spaces_and_invalid() -> None:
    depth = torch.tensor([[2.0, 4.0, 500.0], [2.0, 4.0, 8.0]]).view(2, 1, 1, 3)
    valid = torch.tensor([[True, False, True], [True, True, True]]).view(2, 1, 1, 3)
    t, m = disparity_target(
        depth, valid, depth_space=[DepthSpace.DEPTH_AFFINE_INVARIANT, "disparity_affine_invariant"]
    )
    # image 0: affine depth is not far-clipped: disp 1/2, 1/500 -> min-max [1, 0]; masked pixel 0
    assert torch.allclose(t[0].flatten(), torch.tensor([1.0, 0.0, 0.0]))
    # image 1 is already disparity: min-max of [2,4,8] -> [0, 1/3, 1]
    assert torch.allclose(t[1].flatten(), torch.tensor([0.0, 1.0 / 3.0, 1.0]))
    assert m[0].flatten().tolist() == [True, False, True]
    const, _ = disparity_target(torch.full((1, 1, 2, 2), 3.0), torch.ones(1, 1, 2, 2, dtype=torch.bool))
    assert torch.all(const == 0)
    with pytest.raises(ValueError, match="depth space"):
        disparity_target(depth, valid, depth_space="furlongs")
