"""Mammography model: 4-class classification, lesion localization and ordinal grading.

``net``/``train``/``export`` need torch (training only); ``preprocess`` and ``runtime`` do not,
so the pipeline runs the shipped ONNX file with onnxruntime alone.
"""
