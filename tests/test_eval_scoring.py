"""The one scoring function (``eval.score_batch``): per image, as ``score_prediction``, and as the trainer's
validation used to score (align -> clamp -> metrics), value for value."""

from __future__ import annotations

import torch

import anydepth
from anydepth.engine.data import Batch
from anydepth.engine.trainer import evaluate_model
from anydepth.eval.evaluate import score_batch, score_prediction
from anydepth.eval.metrics import compute_metrics
from anydepth.ops.alignment import align_to_depth
from anydepth.types import DepthSpace

DISP = DepthSpace.DISPARITY_AFFINE_INVARIANT


def _scene(b: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    gt = 0.5 + 20 * torch.rand(b, 24, 32, generator=g, dtype=torch.float64)
    pred = 1.0 / gt * (2.0 + 0.1 * torch.rand(b, 24, 32, generator=g, dtype=torch.float64)) + 0.3
    valid = torch.rand(b, 24, 32, generator=g) > 0.2
    return pred, gt, valid


def test_score_batch_is_per_image_and_matches_score_prediction() -> None:
    pred, gt, valid = _scene(3, 0)
    kw = {"min_depth": 1e-3, "max_depth": 10.0}
    sc = score_batch(pred, DISP, gt, valid, **kw)
    assert sc.depth.shape == (3, 24, 32) and float(sc.depth.max()) <= 10.0
    for i in range(3):
        one = score_prediction(pred[i], "disparity", gt[i], valid[i], **kw)
        for m, v in sc.metrics.items():
            assert one[m] == float(v[i]), m
        assert one["scale"] == float(sc.scale[i]) and one["fit_pixels"] == int(sc.fit_pixels[i])
    empty = score_batch(pred[:1], DISP, gt[:1], torch.zeros_like(valid[:1]), **kw, metrics=("abs_rel",))
    assert torch.isnan(empty.metrics["abs_rel"]).all()


class _Const(torch.nn.Module):
    """Planted network: disparity = 1 / (1 + 5 * mean RGB); has the DepthModel attributes."""

    patch_size = 16
    output_space = DISP

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w / (1.0 + 5.0 * x.mean(1, keepdim=True))


def _old_validation(model: torch.nn.Module, loader: list[Batch], min_d: float, max_d: float) -> dict:
    """The trainer's validation before the shared path (copied from the previous ``evaluate_model``)."""
    values: dict[str, list[float]] = {"abs_rel": [], "delta1": []}
    with torch.no_grad():
        for b in loader:
            pred = model(b.image).float()[:, 0].cpu().double()
            gt = b.depth[:, 0].double()
            valid = b.valid[:, 0].bool() & (gt > min_d) & (gt < max_d)
            res = align_to_depth(pred, DISP, gt, valid, "least_square_disparity")
            aligned = res.depth.clamp(min_d, max_d).clamp(min=1e-6)
            keep = valid.flatten(1).any(1)
            if not bool(keep.any()):
                continue
            m = compute_metrics(aligned[keep], gt[keep], valid[keep], names=("abs_rel", "delta1"))
            for k in values:
                values[k] += [float(v) for v in m[k]]
    n = len(values["abs_rel"])
    return {**{k: sum(v) / n for k, v in values.items()}, "num_images": n}


def test_trainer_validation_scores_exactly_as_before() -> None:
    loader = []
    for seed in range(2):
        g = torch.Generator().manual_seed(seed)
        depth = 0.5 + 30 * torch.rand(3, 1, 32, 48, generator=g)
        valid = torch.rand(3, 1, 32, 48, generator=g) > 0.1
        if seed == 1:
            valid[0] = False  # an image without ground truth is skipped
        loader.append(Batch(torch.rand(3, 3, 32, 48, generator=g), depth, valid, [DISP] * 3, ["a", "b", "c"]))
    for model in (_Const(), anydepth.create_model("sdt_test")):
        model.train()
        new = evaluate_model(model, loader, device=torch.device("cpu"), max_depth=20.0)
        assert model.training  # train mode restored
        old = _old_validation(model.eval(), loader, 1e-3, 20.0)
        assert new == old and new["num_images"] == 5
