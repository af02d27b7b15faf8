"""The clinician PDF: jinja2 HTML rendered by WeasyPrint.

Built to be read in one minute: identifiers, a summary table of every decision, each mammogram
with its heatmap overlay and lesion outlines, the slide's attention map and top tiles, the
recurrence risk at 3/5/7 years and its group, the inputs used and missing, and the models with
their versions and calibration. Images are embedded as JPEG data URIs so the PDF is self-contained.
"""

from __future__ import annotations

import base64
import io
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import Environment, FileSystemLoader, select_autoescape
from PIL import Image
from skimage.draw import line
from skimage.transform import resize

from cds.contracts.domain import (
    Calibrated,
    ClinicalContext,
    DomainCheck,
    MammoImageFinding,
    ModelIdentity,
    PatientRef,
    RecurrenceResult,
    SimilarPathology,
    StudyAnalysis,
)
from reports import quality as q
from reports.archive_view import geometry_text, not_analysed_rows, outline_breast
from reports.similar_view import similar_rows

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
MAX_SIDE = 420


# The report is written when the models finish, before any clinician has seen the results; a
# review later changes the FHIR status and adds an assessment SR, never this PDF.
PRELIMINARY = "Preliminary \u2014 AI result not yet reviewed by a clinician"


def _image_uri(rgb: np.ndarray) -> str:
    buf = io.BytesIO()
    # JPEG, not PNG: phantom and real images are noisy, and PNG made the PDF exceed the 1 MB
    # FHIR string limit some servers enforce on DiagnosticReport.presentedForm.data.
    Image.fromarray(rgb.astype(np.uint8)).convert("RGB").save(buf, format="JPEG", quality=82, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _fit(shape: tuple[int, int], max_side: int = MAX_SIDE) -> tuple[int, int]:
    scale = min(1.0, max_side / max(shape))
    return max(1, int(round(shape[0] * scale))), max(1, int(round(shape[1] * scale)))


def gray_to_rgb(image: np.ndarray) -> np.ndarray:
    """Window a grey image to its 1st-99th percentile and return uint8 RGB."""
    img = image.astype(np.float32)
    lo, hi = np.percentile(img, (1, 99))
    g = np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1)
    return np.repeat((g * 255)[..., None], 3, axis=2)


def perimeter(ys: np.ndarray, xs: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of a closed polygon's outline inside ``shape`` (rows, cols).

    Drawn edge by edge with ``skimage.draw.line``: ``polygon_perimeter(clip=True)`` would need
    matplotlib, which the runtime does not install.
    """
    r = np.round(np.append(ys, ys[0])).astype(int)
    c = np.round(np.append(xs, xs[0])).astype(int)
    parts = [line(r[i], c[i], r[i + 1], c[i + 1]) for i in range(len(r) - 1)]
    rr = np.concatenate([p[0] for p in parts])
    cc = np.concatenate([p[1] for p in parts])
    inside = (rr >= 0) & (rr < shape[0]) & (cc >= 0) & (cc < shape[1])
    return rr[inside], cc[inside]


def overlay(rgb: np.ndarray, heat: np.ndarray | None, polygons: list[list[tuple[float, float]]]) -> np.ndarray:
    """Blend a [0,1] heatmap (red, alpha by value) over ``rgb`` and outline polygons in yellow."""
    out = rgb.astype(np.float32).copy()
    if heat is not None:
        h = resize(heat.astype(np.float32), out.shape[:2], order=1, preserve_range=True)
        h = np.clip(h, 0, 1)[..., None]
        red = np.zeros_like(out)
        red[..., 0] = 255
        red[..., 1] = 80 * (1 - h[..., 0])
        out = out * (1 - 0.55 * h) + red * 0.55 * h
    for poly in polygons:
        if len(poly) < 2:
            continue
        xs = np.array([p[0] for p in poly])
        ys = np.array([p[1] for p in poly])
        rr, cc = perimeter(ys, xs, out.shape[:2])
        for d in (0, 1):
            out[np.clip(rr + d, 0, out.shape[0] - 1), cc] = (255, 230, 0)
    return out


def _fmt(p: float) -> str:
    return f"{100 * p:.1f}%"


def _show(value: float | str) -> str:
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:g}"
    return str(value)


def _threshold_text(cal: Calibrated) -> str:
    return q.operating_point_text(cal)


def _summary_row(label: str, cal: Calibrated, model: ModelIdentity, positive: str, negative: str,
                 domain: DomainCheck | None = None) -> dict:
    """One line of the report's summary table: a calibrated probability and its decision."""
    return {"label": label, "value": _fmt(cal.probability), "positive": cal.positive,
            "decision": q.decision_text(cal, domain, positive, negative), "model": f"{model.name} {model.version}",
            "ood": q.out_of_domain(domain), "domain": q.domain_text(domain) if q.out_of_domain(domain) else ""}


CLINICAL_INPUTS = ("age_years", "tumour_size_mm", "positive_nodes", "grade", "er", "pr", "her2", "ki67",
                   "menopausal_status")


def thumbnail(image: np.ndarray, max_side: int = MAX_SIDE) -> np.ndarray:
    """``image`` (grey) at report size (:func:`_fit`): averaged over f x f blocks (f the largest
    integer that keeps it at least ``max_side``), then resampled bilinearly by the factor < 2 left.
    Shrinks before windowing: a full-field mammogram is windowed and coloured at thumbnail size,
    not at 4096 x 3328 (ten times less work than an anti-aliased resize of the whole image)."""
    target = _fit(image.shape[:2], max_side)
    f = max(1, max(image.shape[:2]) // max_side)
    rows, cols = (image.shape[0] // f) * f, (image.shape[1] // f) * f
    a = image[:rows, :cols].astype(np.float32)
    if f > 1:
        a = a.reshape(rows // f, f, cols // f, f).mean(axis=(1, 3))
    return a if a.shape == target else resize(a, target, order=1, preserve_range=True, anti_aliasing=False)


def _source_small(img: MammoImageFinding, source_paths: dict[str, Path]) -> tuple[np.ndarray, float]:
    """The image as a small RGB thumbnail and its scale from source pixels, or a grey placeholder
    of its proportions when the file is not on disk."""
    import pydicom

    path = source_paths.get(img.sop_instance_uid)
    if path is None or not Path(path).exists():
        # The report must still go out (the numbers matter more than the picture).
        log.warning("report: source image %s not on disk; shown without image", img.sop_instance_uid)
        shape = _fit((img.rows, img.columns))
        return np.full((*shape, 3), 128.0), shape[0] / img.rows
    ds = pydicom.dcmread(path)
    pixels = ds.pixel_array
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":  # shown as a radiologist sees it
        pixels = pixels.max() - pixels
    small = thumbnail(pixels)
    return gray_to_rgb(small), small.shape[0] / pixels.shape[0]


def _quality(cal: Calibrated, domain: DomainCheck | None) -> dict:
    """Operating point, training-domain status and the out-of-domain banner of one finding."""
    return {"operating_point": q.operating_point_text(cal), "ood": q.out_of_domain(domain),
            "domain": q.domain_text(domain)}


def _grade_text(img: MammoImageFinding, labels: list[str]) -> str:
    """The grade probabilities (cumulative-link head), most likely first."""
    p = img.grade_probabilities
    names = labels if len(labels) == len(p) else [f"grade {k}" for k in range(len(p))]
    return ", ".join(f"{n} {_fmt(v)}" for n, v in sorted(zip(names, p), key=lambda t: -t[1]))


def _mammo_image_context(img: MammoImageFinding, work_dir: Path, source_paths: dict[str, Path],
                         grade_labels: list[str] | None = None,
                         similar: list[SimilarPathology] | None = None) -> dict:
    """One mammogram's card: its numbers, the image and the image with heatmap and lesion
    outlines, and per lesion the similar reference pathology patches (``similar``), if any."""
    grade_labels = grade_labels or []
    small, scale = _source_small(img, source_paths)
    heat = img.heatmap.load(work_dir) if img.heatmap else None
    polys = [[(x * scale, y * scale) for x, y in les.polygon] for les in img.lesions]
    return {
        "label": f"{img.laterality} {img.view}".strip() or img.sop_instance_uid,
        "predicted": img.predicted_class.replace("_", " "),
        "malignancy": _fmt(img.malignancy.probability), "positive": img.malignancy.positive,
        "threshold": _fmt(img.malignancy.threshold), "n_lesions": len(img.lesions),
        **_quality(img.malignancy, img.domain), "grade": _grade_text(img, grade_labels),
        "image": _image_uri(small),
        "overlay": _image_uri(outline_breast(overlay(small, heat, polys), img, work_dir)),
        "geometry": geometry_text(img),
        "lesions": [{"id": les.tracking_id, "score": f"{les.score:.2f}",
                     "box": ", ".join(f"{v:.0f}" for v in les.box),
                     "area": f"{les.area_mm2:.1f}" if les.area_mm2 is not None else "-"}
                    for les in img.lesions],
        "similar": similar_rows(img, similar or [], work_dir, _image_uri),
    }


def _slide_context(a: StudyAnalysis) -> dict:
    """The slide's card: metastasis probability, attention map and the top tiles that have an image."""
    s = a.slide
    att = s.attention_map.load(a.work_dir)
    shape = _fit((s.base_rows, s.base_columns))
    att_big = resize(att, shape, order=1, preserve_range=True)
    base = np.full((*shape, 3), 235.0)
    tiles = []
    for t in s.top_tiles:
        tiles.append({"image": _image_uri(t.image.load(a.work_dir)) if t.image else "",
                      "pos": f"{t.x}, {t.y}", "attention": f"{t.attention:.3f}",
                      "probability": _fmt(t.probability) if t.probability is not None else "-"})
    return {"study_uid": a.study_instance_uid, "probability": _fmt(s.metastasis.probability),
            "positive": s.metastasis.positive, "threshold": _fmt(s.metastasis.threshold),
            **_quality(s.metastasis, s.domain),
            "stage1": s.tiles_stage1, "stage2": s.tiles_stage2,
            "attention": _image_uri(overlay(base, att_big, [])),
            "tiles": [t for t in tiles if t["image"]]}


def _recurrence_context(recurrence: RecurrenceResult) -> tuple[dict, dict]:
    """The recurrence section and its summary-table row."""
    rec = {"group": recurrence.risk_group, "score": f"{recurrence.risk_score:.3f}",
           "cutoff": f"{recurrence.cutoff:.3f}",
           "risks": [(y, _fmt(p)) for y, p in sorted(recurrence.absolute_risk.items())],
           "present": ", ".join(recurrence.modalities_present) or "none",
           "missing": ", ".join(recurrence.modalities_missing) or "none"}
    row = {"label": "Recurrence risk group", "value": recurrence.risk_group.upper(),
           "positive": recurrence.risk_group == "high",
           "decision": f"5-year risk {_fmt(recurrence.absolute_risk[5])}"
           if 5 in recurrence.absolute_risk else "", "model": f"{recurrence.model.name} {recurrence.model.version}"}
    return rec, row


def _clinical_inputs(clinical: ClinicalContext) -> tuple[list[dict], list[str]]:
    """The clinical inputs present (name, shown value, source) and the names of those missing."""
    inputs = [{"name": k, "value": _show(clinical.values[k]),
               "source": (clinical.sources[k].display or clinical.sources[k].reference) if k in clinical.sources else "-"}
              for k in CLINICAL_INPUTS if k in clinical.values]
    for i in inputs + [{"name": k} for k in clinical.measured if k not in CLINICAL_INPUTS]:
        cv = clinical.measured.get(i["name"])  # with unit, original text and source (cds.fhir.reader)
        if cv is not None:
            i.update(value=cv.original + (f" ({cv.note})" if cv.note else ""),
                     source=cv.source.reference if cv.source else "-")
            if i not in inputs:
                inputs.append(i)
    missing = [k for k in CLINICAL_INPUTS if k not in clinical.values]
    return inputs, missing


def report_context(patient: PatientRef, analyses: list[StudyAnalysis], clinical: ClinicalContext,
                   recurrence: RecurrenceResult | None, source_paths: dict[str, Path]) -> dict[str, Any]:
    """Everything the template shows, as plain values and PNG data URIs."""
    models: dict[str, ModelIdentity] = {}
    calib: dict[str, str] = {}
    summary, mammo, slides = [], [], []
    for a in analyses:
        models[a.model.device_uid] = a.model
        if a.mammography:
            m = a.mammography
            calib[a.model.device_uid] = _threshold_text(m.exam_malignancy)
            for sp in m.similar_pathology:  # the alignment model that chose the reference patches
                models.setdefault(sp.model.device_uid, sp.model)
            summary.append(_summary_row("Mammography malignancy (exam)", m.exam_malignancy, a.model,
                                        "suspicious", "not suspicious", q.analysis_domain(a)))
            mammo.append({"study_uid": a.study_instance_uid,
                          "images": [_mammo_image_context(img, a.work_dir, source_paths, m.grade_labels,
                                                          m.similar_pathology) for img in m.images],
                          "not_analysed": not_analysed_rows(m)})
        if a.slide:
            calib[a.model.device_uid] = _threshold_text(a.slide.metastasis)
            summary.append(_summary_row("Lymph-node metastasis", a.slide.metastasis, a.model,
                                        "metastasis suspected", "not suspected", a.slide.domain))
            slides.append(_slide_context(a))
    rec = None
    if recurrence is not None:
        models[recurrence.model.device_uid] = recurrence.model
        calib[recurrence.model.device_uid] = f"risk groups at cut-off {recurrence.cutoff:.3f}"
        rec, row = _recurrence_context(recurrence)
        summary.append(row)
    inputs, missing = _clinical_inputs(clinical)
    notice = next((m.notice for m in models.values() if m.notice), "")
    return {
        "review_status": PRELIMINARY,
        "patient": patient, "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "notice": notice, "summary": summary, "mammo": mammo, "slides": slides, "recurrence": rec,
        "inputs": inputs, "missing_inputs": ", ".join(missing), "us_text": clinical.ultrasound_report_text[:400],
        "not_used": [{"name": n.variable, "reason": n.reason} for n in clinical.not_used],
        "encoding": list(recurrence.input_encoding) if recurrence is not None else [],
        "models": [{"name": m.name, "version": m.version, "device_uid": m.device_uid,
                    "calibration": calib.get(uid, "-"), "notice": m.notice or "-"} for uid, m in models.items()],
    }


def render_html(context: dict[str, Any]) -> str:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"]))
    return env.get_template("report.html.j2").render(**context)


def warm_up() -> None:
    """Load WeasyPrint and its fonts once, off the critical path: the first PDF of a process
    otherwise pays about a second for them, on the first patient's report."""
    from weasyprint import HTML

    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    HTML(string="<p>warm-up</p>", base_url=str(TEMPLATES)).write_pdf()


def render_pdf(context: dict[str, Any]) -> bytes:
    """HTML -> PDF bytes (WeasyPrint)."""
    from weasyprint import HTML

    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    return HTML(string=render_html(context), base_url=str(TEMPLATES)).write_pdf()
