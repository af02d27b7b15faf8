"""onnxruntime sessions as the service's models run them: CPU, a bounded thread count, no spinning."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def cpu_session(path: Path, threads: int = 1) -> Any:
    """An ``onnxruntime.InferenceSession`` on the CPU with ``threads`` intra-op threads.

    No busy-waiting between operators: the service shares its cores with the listeners, the
    dispatcher and the other models, and a spinning pool would take them for nothing."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
