"""anydepth.data.datasets."""
