"""Dataset readers. Importing this package registers every reader in ``anydepth.registry.DATASETS``.

One import per line (explicit list, no directory scanning); add a line when adding a reader module.
"""

# isort: off
from anydepth.data.datasets import base  # noqa: F401
from anydepth.data.datasets import blendedmvs  # noqa: F401
from anydepth.data.datasets import diode  # noqa: F401
from anydepth.data.datasets import eth3d  # noqa: F401
from anydepth.data.datasets import folder  # noqa: F401
from anydepth.data.datasets import hypersim  # noqa: F401
from anydepth.data.datasets import irs  # noqa: F401
from anydepth.data.datasets import kitti  # noqa: F401
from anydepth.data.datasets import nyuv2  # noqa: F401
from anydepth.data.datasets import scannet  # noqa: F401
from anydepth.data.datasets import synthetic  # noqa: F401
from anydepth.data.datasets import tartanair  # noqa: F401
from anydepth.data.datasets import vkitti2  # noqa: F401

# isort: on
from anydepth.data.datasets.base import DepthDataset, read_pair_list
from anydepth.data.datasets.common import ListDepthDataset

__all__ = ["DepthDataset", "ListDepthDataset", "read_pair_list"]
