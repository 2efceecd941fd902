"""Checkpoint families: reading and converting foreign weight files into anydepth modules (one module per family)."""
