"""anydepth.losses."""
