"""Zero-shot evaluation under the Marigold protocol (NYUv2, KITTI, ETH3D, ScanNet, DIODE).

``evaluate(predict_fn, spec, data_root) -> BenchmarkResult`` runs one benchmark and writes nothing;
``anydepth.eval.report`` writes ``metrics.json`` / ``per_sample.csv`` / ``table.md``. Importing this package
registers the benchmark specs in ``anydepth.registry.BENCHMARKS`` and the evaluation-set readers in ``DATASETS``.
"""

from __future__ import annotations

from anydepth.eval.benchmarks import (
    PAPER_BENCHMARKS,
    BenchmarkSpec,
    get_benchmark,
    list_benchmarks,
    open_dataset,
)
from anydepth.eval.evaluate import (
    BenchmarkResult,
    FunctionPredictor,
    IncompleteBenchmarkError,
    ModelPredictor,
    PrecomputedPredictions,
    Predictor,
    Scores,
    evaluate,
    score_batch,
    score_prediction,
)
from anydepth.eval.metrics import DEFAULT_METRICS, METRICS, compute_metrics, mean_over_images

__all__ = [
    "PAPER_BENCHMARKS",
    "BenchmarkSpec",
    "get_benchmark",
    "list_benchmarks",
    "open_dataset",
    "BenchmarkResult",
    "FunctionPredictor",
    "IncompleteBenchmarkError",
    "ModelPredictor",
    "PrecomputedPredictions",
    "Predictor",
    "evaluate",
    "Scores",
    "score_batch",
    "score_prediction",
    "DEFAULT_METRICS",
    "METRICS",
    "compute_metrics",
    "mean_over_images",
]
