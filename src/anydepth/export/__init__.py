"""anydepth.export."""
