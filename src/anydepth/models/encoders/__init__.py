"""anydepth.models.encoders."""
