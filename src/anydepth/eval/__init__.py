"""anydepth.eval."""
