"""anydepth.models.decoders."""
