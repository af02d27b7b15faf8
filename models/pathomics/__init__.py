"""Pathomics: nuclear segmentation, per-nucleus morphology and k-NN cell-graph topology of slide tiles."""
