"""The AnyDepth data-quality filter (paper Appendix A.2): per-sample scores, the selection rule and the runner.

* :mod:`~anydepth.data.filtering.scores`: pure score functions on a depth map (``S_dist``, ``S_grad``, ...),
  registered in ``anydepth.registry.FILTERS``;
* :mod:`~anydepth.data.filtering.select`: which samples are kept, from a score table;
* :mod:`~anydepth.data.filtering.run`: ``filter_index`` scores datasets in parallel (resumable) and writes the
  tables, lists, summary and plots (:mod:`~anydepth.data.filtering.report`).
"""

from anydepth.data.filtering.run import FilterResult, Source, filter_index, score_sample
from anydepth.data.filtering.scores import (
    ScoreParams,
    depth_distribution_score,
    gradient_continuity_score,
    quality_scores,
    valid_mask,
)
from anydepth.data.filtering.select import SelectionConfig, select

__all__ = [
    "FilterResult",
    "ScoreParams",
    "SelectionConfig",
    "Source",
    "depth_distribution_score",
    "filter_index",
    "gradient_continuity_score",
    "quality_scores",
    "score_sample",
    "select",
    "valid_mask",
]
