"""anydepth.ops."""
