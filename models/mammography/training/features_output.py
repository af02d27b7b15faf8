"""Expose the pooled feature vector of the shipped mammography ONNX as an extra graph output.

The out-of-distribution score (:mod:`models.domain`) needs the network's own embedding: the
vector the class and grade heads read (the input of the class ``Gemm``). This adds that tensor as
the output :data:`FEATURES_OUTPUT` without touching any weight or node, so the three existing
outputs stay bit-identical (checked by :func:`outputs_identical`; the result is recorded in the
card). No retraining.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

FEATURES_OUTPUT = "features"
ORIGINAL_OUTPUTS = ("class_logits", "lesion_prob", "grade_probs")


def _feature_tensor(graph: onnx.GraphProto) -> str:
    """The tensor feeding the Gemm that produces ``class_logits``."""
    for node in graph.node:
        if node.op_type == "Gemm" and "class_logits" in node.output:
            return str(node.input[0])
    raise ValueError("no Gemm producing class_logits in the mammography graph")


def add_features_output(path: Path, out: Path | None = None) -> Path:
    """Write ``out`` (default: ``path`` in place) with the pooled features as a 4th output."""
    model = onnx.load(str(path))
    graph = model.graph
    if any(o.name == FEATURES_OUTPUT for o in graph.output):
        if out is not None and Path(out) != Path(path):
            onnx.save(model, str(out))
        return Path(out or path)
    source = _feature_tensor(graph)
    ident = helper.make_node("Identity", [source], [FEATURES_OUTPUT], name="features_identity")
    graph.node.append(ident)
    graph.output.append(helper.make_tensor_value_info(FEATURES_OUTPUT, TensorProto.FLOAT, ["n", None]))
    onnx.checker.check_model(model)
    target = Path(out or path)
    onnx.save(model, str(target))
    return target


def outputs_identical(before: Path, after: Path, inputs: np.ndarray) -> dict[str, bool]:
    """Whether each original output is bit-identical between two ONNX files, at alpha 0 and 0.5."""
    import onnxruntime as ort

    a = ort.InferenceSession(str(before), providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(str(after), providers=["CPUExecutionProvider"])
    same: dict[str, bool] = {}
    for alpha in (0.0, 0.5):
        feed = {"image": np.ascontiguousarray(inputs, np.float32), "tta_alpha": np.array([alpha], np.float32)}
        ra = a.run(list(ORIGINAL_OUTPUTS), feed)
        rb = b.run(list(ORIGINAL_OUTPUTS), feed)
        for name, x, y in zip(ORIGINAL_OUTPUTS, ra, rb):
            same[f"{name}@alpha={alpha}"] = bool(np.array_equal(x, y))
    return same
