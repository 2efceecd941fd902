"""Conversion of foreign checkpoint families (whole original models) into ``anydepth`` models."""
