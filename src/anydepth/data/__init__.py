"""anydepth.data."""
