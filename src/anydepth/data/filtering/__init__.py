"""anydepth.data.filtering."""
