"""Mammography model: 4-class classification, lesion localization and ordinal grading.

``training`` needs torch; ``preprocess``, ``pairing`` and ``runtime`` do not,
so the pipeline runs the shipped ONNX file with onnxruntime alone.
"""
