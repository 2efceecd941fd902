"""anydepth.bench."""
