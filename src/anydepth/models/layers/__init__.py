"""anydepth.models.layers."""
