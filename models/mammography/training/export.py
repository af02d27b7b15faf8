"""ONNX export of the mammography network, the torch/onnxruntime parity check and the model card."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cds.contracts.cards import ModelCard
from cds.contracts.domain import MAMMO_CLASSES, NOT_FOR_CLINICAL_USE
from models.mammography.preprocess import INPUT_SHAPE
from models.mammography.training.config import (
    MIN_LESION_PIXELS,
    MODEL_NAME,
    MODEL_VERSION,
    TTA_ALPHA,
    EvalResult,
)
from models.mammography.training.net import N_GRADES, ExportWrapper, MammoNet
from models.training.files import finite
from models.training.files import sha256_file as _sha256


def export_onnx(net: MammoNet, path: Path) -> Path:
    """Export the eval-mode network (TTA alpha as an input) to ONNX, opset 17, dynamic batch."""
    net.eval()
    wrapper = ExportWrapper(net).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    x = torch.zeros(2, net.in_channels, *INPUT_SHAPE)
    a = torch.zeros(1)
    torch.onnx.export(
        wrapper, (x, a), str(path), input_names=["image", "tta_alpha"],
        output_names=["class_logits", "lesion_prob", "grade_probs"],
        dynamic_axes={"image": {0: "n"}, "class_logits": {0: "n"}, "lesion_prob": {0: "n"},
                      "grade_probs": {0: "n"}},
        opset_version=17, dynamo=False,
    )
    return path


def onnx_parity(net: MammoNet, path: Path, x: np.ndarray) -> dict:
    """Largest absolute difference torch vs onnxruntime per output, at alpha 0 and TTA_ALPHA."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    wrapper = ExportWrapper(net).eval()
    out = {}
    for alpha in (0.0, TTA_ALPHA):
        a = np.array([alpha], np.float32)
        with torch.no_grad():
            ref = [t.numpy() for t in wrapper(torch.from_numpy(x), torch.from_numpy(a))]
        got = sess.run(None, {"image": x, "tta_alpha": a})
        for name, r, g in zip(("class_logits", "lesion_prob", "grade_probs"), ref, got):
            out[f"{name}@alpha={alpha}"] = float(np.abs(r - g).max())
    return out


def _card(ev: EvalResult, lovo: dict, parity: dict, onnx_path: Path, training_data: str,
          train_info: dict, synthetic: bool) -> ModelCard:
    channels = 2 if train_info.get("config", {}).get("bilateral", True) else 1
    return ModelCard(
        name=MODEL_NAME,
        version=MODEL_VERSION,
        task="Per-image mammography classification (normal / benign / in situ / invasive), lesion "
             "localization (mask, boxes from connected components) and ordinal grading (0-3).",
        intended_use="Research and integration testing of the breast-cancer decision-support "
                     "plugin; not a medical device." + (" " + NOT_FOR_CLINICAL_USE if synthetic else ""),
        training_data=training_data,
        synthetic_trained=synthetic,
        notice=NOT_FOR_CLINICAL_USE if synthetic else "Trained on user-supplied data; validate locally before any use.",
        architecture=("Bilateral input (the image and the contralateral image of the same view, "
                      "2 channels; a missing other side is replaced by the image itself, as for "
                      f"{train_info.get('config', {}).get('self_pair_p', 0.0):.0%} of training pairs). "
                      if channels == 2 else "Single-image input. ") +
                     "Residual CNN (patch stem, 3 stages, MixStyle in training), heads: 4-class "
                     f"linear, FPN segmentation decoder ({train_info.get('config', {}).get('dec_convs', 1)} "
                     f"3x3 convolutions of width {train_info.get('config', {}).get('dec_width', 16)} at "
                     f"stride {train_info.get('config', {}).get('seg_stride', 4)}, logits upsampled "
                     "bilinearly; loss BCE + per-image Dice "
                     "at input resolution), cumulative-link ordinal (K-1=3 thresholds); "
                     "uncertainty-weighted multitask loss. Normalization blends running and exam "
                     "statistics by input tta_alpha.",
        inputs={"image": {"shape": ["n", channels, *INPUT_SHAPE],
                          "dtype": "float32",
                          "channels": ["image", "contralateral image of the same view (the image "
                                       "itself when the study has none)"][
                              : channels],
                          "preprocessing": "models.mammography.preprocess.prepare_image: R images "
                          "mirrored to chest-wall-left, area downsampling to 256x208, (x-p1)/(p99.5-p1) "
                          "clipped to [-0.5, 1.5]; For Processing (sign -1) inverted; channels "
                          "stacked by models.mammography.training.data.bilateral_input"},
                "tta_alpha": {"shape": [1], "dtype": "float32", "default": 0.0,
                              "with_settings_tta": TTA_ALPHA}},
        outputs={"class_logits": {"classes": list(MAMMO_CLASSES)},
                 "lesion_prob": {"shape": ["n", 1, *INPUT_SHAPE], "threshold": ev.seg_threshold,
                                 "min_component_pixels": MIN_LESION_PIXELS,
                                 "report_when_p_normal_at_most": ev.lesion_gate},
                 "grade_probs": {"grades": list(range(N_GRADES))}},
        metrics=finite({**ev.metrics, "lovo": lovo}),
        calibration=finite({"method": "temperature", "temperature": ev.temperature,
                     "fitted_on": "calibration split (held out from training)",
                     "ece_top_label_before": ev.metrics["ece_top_label_before"],
                     "ece_top_label_after": ev.metrics["ece_top_label_after"],
                     "ece_malignancy_before": ev.metrics["ece_malignancy_before"],
                     "ece_malignancy_after": ev.metrics["ece_malignancy_after"]}),
        thresholds=ev.thresholds,
        extra={"onnx_parity_max_abs_diff": parity, "tta_alpha": TTA_ALPHA, "training": train_info,
               "onnx_file": onnx_path.name},
        weights_sha256={onnx_path.name: _sha256(onnx_path)},
    )
