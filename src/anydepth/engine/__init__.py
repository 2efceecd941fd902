"""anydepth.engine."""
