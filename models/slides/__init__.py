"""Whole-slide lymph-node metastasis model: two-stage tiling, tile CNN and gated-attention MIL.

Runtime (:mod:`models.slides.runtime`) uses onnxruntime only; training (:mod:`models.slides.training.train`)
uses PyTorch.
"""
