"""Training domain and operating points of the shipped mammography model (no retraining).

Re-renders phantom exams of the SAME splits as :func:`models.mammography.training.data.synthetic_arrays`
(exam ``i``: vendor ``i % 4``, label ``(i // 4) % 4``, split ``i % 5``: 0-2 train, 3 calibration,
4 test; seed ``seed * 1_000_003 + i``), runs the shipped ONNX (with the pooled-feature output added
by :mod:`.features_output`) through the runtime's own preprocessing, and writes into the card:

* the embedding density fitted on train-split images, its threshold from the calibration split,
  the false-flag rate on the test split (:mod:`models.training.domain`);
* acquisition ranges (pixel spacing, bits stored, field of view, aspect ratio, intensity);
* operating points with expected per-image sensitivity/specificity on the test split.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from cds.contracts.domain import MAMMO_CLASSES
from models import calibration as rcal
from models.mammography.domain import acquisition_values
from models.mammography.pairing import bilateral_input
from models.mammography.preprocess import prepare_image
from models.mammography.training.config import CARD_NAME, N_EXAMS, ONNX_NAME
from models.mammography.training.features_output import (
    FEATURES_OUTPUT,
    add_features_output,
    outputs_identical,
)
from models.training import domain as fitdom

log = logging.getLogger(__name__)

UNITS = {"pixel_spacing_mm": "mm", "bits_stored": "", "field_of_view_rows_mm": "mm",
         "field_of_view_columns_mm": "mm", "aspect_ratio": "", "intensity_mean": "", "intensity_std": ""}
LABELS = {"pixel_spacing_mm": "pixel spacing", "bits_stored": "bits stored",
          "field_of_view_rows_mm": "field of view (rows)", "field_of_view_columns_mm": "field of view (columns)",
          "aspect_ratio": "aspect ratio (rows/columns)", "intensity_mean": "mean intensity (fraction of full scale)",
          "intensity_std": "intensity standard deviation (fraction of full scale)"}
# The runtime area-downsamples every image to 256x208, so a finer detector with the same field of
# view shows the network the same input; bit depth only scales values the percentile
# normalisation removes. Coarser pixels or 8-bit images (screenshots, secondary captures) are out.
FIXED = {"pixel_spacing_mm": (0.04, 0.62, "training 0.56 mm at 512x416; finer pixels over the same field of "
                              "view are area-downsampled to the same network input"),
         "bits_stored": (10.0, 16.0, "training 12 and 14; percentile normalisation removes the scale")}


def render_exam(i: int, seed: int, rows: int, columns: int) -> tuple[str, list[tuple]]:
    """Exam ``i`` of the training data set: its split and, per view, (image, contralateral row,
    class index, acquisition values) as :func:`data._render_exam` renders it."""
    from models.mammography.training.data import synthetic_exam
    from synthetic.phantoms.mammography import pixel_spacing_for

    _vendor, split, exam, contra = synthetic_exam(i, seed, rows, columns)
    spacing = pixel_spacing_for(rows)
    return split, [(prepare_image(v.pixels, v.laterality), int(c), MAMMO_CLASSES.index(v.label),
                    acquisition_values(v.pixels, v.vendor.bits_stored, (spacing, spacing)))
                   for v, c in zip(exam.views, contra)]


def _render(args: tuple[int, int, int, int]) -> tuple[str, list[tuple]]:
    return render_exam(*args)


def run_split(session, exams: list[int], seed: int, rows: int, columns: int, workers: int = 2) -> dict:
    """Render ``exams``, run the ONNX per exam (alpha 0) and return features, P(malignant), labels."""
    jobs = [(i, seed, rows, columns) for i in exams]
    if workers > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
            rendered = list(pool.map(_render, jobs, chunksize=4))
    else:
        rendered = [_render(j) for j in jobs]
    feats, logits, ys, acq, xs = [], [], [], [], []
    for _, views in rendered:
        imgs = np.stack([v[0] for v in views])
        x = bilateral_input(imgs, imgs[[v[1] for v in views]])
        lg, ft = session.run(["class_logits", FEATURES_OUTPUT],
                             {"image": np.ascontiguousarray(x, np.float32), "tta_alpha": np.zeros(1, np.float32)})
        feats.append(ft)
        if len(xs) < 8:  # the first 8 exams' inputs: the bit-identity check after adding the output
            xs.append(x)
        logits.append(lg)
        ys += [v[2] for v in views]
        acq += [v[3] for v in views]
    return {"features": np.concatenate(feats), "logits": np.concatenate(logits), "y": np.asarray(ys),
            "acquisition": acq, "x_check": np.concatenate(xs)}


def fit_mammography_domain(folder: Path, seed: int = 0, n_fit_exams: int | None = None, n_exams: int = N_EXAMS,
                           rows: int = 512, columns: int = 416, workers: int = 2) -> dict:
    """Add the feature output to ``folder``'s ONNX, fit the domain and operating points, update the card."""
    import onnxruntime as ort

    from cds.contracts.cards import ModelCard

    folder = Path(folder)
    onnx_path = folder / ONNX_NAME
    before = folder / "mammography.before-features.onnx"
    before.write_bytes(onnx_path.read_bytes())
    add_features_output(onnx_path)
    card = ModelCard.read(folder / CARD_NAME)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    train = [i for i in range(n_exams) if i % 5 < 3][:n_fit_exams]
    splits = {"fit": run_split(session, train, seed, rows, columns, workers),
              "calibration": run_split(session, [i for i in range(n_exams) if i % 5 == 3], seed, rows, columns, workers),
              "test": run_split(session, [i for i in range(n_exams) if i % 5 == 4], seed, rows, columns, workers)}
    same = outputs_identical(before, onnx_path, splits["test"]["x_check"])
    before.unlink()
    if not all(same.values()):
        raise RuntimeError(f"adding the feature output changed the ONNX outputs: {same}")
    density = fitdom.fit_density(splits["fit"]["features"], k=64)
    dist = {k: density.distance(v["features"]) for k, v in splits.items()}
    threshold = fitdom.flag_threshold(dist["calibration"])
    acquisition = fitdom.fit_ranges(splits["fit"]["acquisition"], UNITS, margin=0.15, fixed=FIXED, labels=LABELS)
    summary = fitdom.split_summary(density, dist["fit"], dist["calibration"], dist["test"], threshold,
                                   acquisition, "image",
                                   f"{len(splits['fit']['y'])} train-split images ({len(train)} exams)")
    summary["embedding_output"] = FEATURES_OUTPUT
    summary["onnx_outputs_bit_identical_after_adding_features"] = {"n_images": int(len(splits["test"]["x_check"])), **same}
    temperature = float(card.calibration["temperature"])
    prob = {k: v["logits"] for k, v in splits.items()}
    mal = {k: rcal.apply_temperature(v, temperature)[:, 2:].sum(axis=1) for k, v in prob.items()}
    ym = {k: (v["y"] >= MAMMO_CLASSES.index("in_situ")).astype(int) for k, v in splits.items()}
    points = fitdom.operating_points(mal["calibration"], ym["calibration"], mal["test"], ym["test"],
                                     card.thresholds, "image")
    fitdom.write_domain(folder, CARD_NAME, density, summary, points, extra_files=(ONNX_NAME,))
    log.info("mammography domain: threshold %.2f, flag rates %s", threshold, summary["flag_rate"])
    return {"summary": summary, "points": points, "distances": dist}
