"""anydepth.data: file IO, dataset readers, transforms, batching and dataset mixtures.

Importing this package registers every dataset reader in ``anydepth.registry.DATASETS``.
"""

from anydepth.data import datasets  # noqa: F401  (registers the readers)
from anydepth.data.collate import collate_samples
from anydepth.data.datasets.synthetic import SyntheticDataset, write_synthetic_dataset
from anydepth.data.mixture import ConcatDepthDataset, MixtureDataset, build_dataset, build_mixture
from anydepth.data.transforms import TransformedDataset, build_transforms

__all__ = [
    "ConcatDepthDataset",
    "MixtureDataset",
    "SyntheticDataset",
    "TransformedDataset",
    "build_dataset",
    "build_mixture",
    "build_transforms",
    "collate_samples",
    "write_synthetic_dataset",
]
