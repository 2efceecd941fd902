"""anydepth.vis: visual comparisons (figure grids, offscreen point-cloud renders, point-cloud quality)."""
