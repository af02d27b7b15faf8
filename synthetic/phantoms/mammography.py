"""Seeded synthetic 4-view mammography exams written as Digital Mammography X-Ray DICOM.

No real mammograms can be obtained here, so the mammography model trains and is tested on these
phantoms. Everything is drawn from one ``numpy.random.Generator`` seeded by the caller, so the same
seed gives the same pixels, masks, labels and UIDs.

Anatomy (canonical orientation: chest wall at column 0, nipple to the right; right-breast images
are mirrored so that, as in clinical hanging, the chest wall of an R image is on the right):

* breast outline: a lobulated half-ellipse from the chest wall; intensity falls off towards the
  skin line (compressed thickness);
* MLO views add the pectoral muscle, a bright triangle in the upper chest-wall corner, and an
  outline that reaches the top edge (axillary tail);
* fibroglandular tissue: a Gaussian random field with a power-law spectrum ``1/f^beta``
  (``beta`` ~ 3, as measured on real mammograms), thresholded softly at the quantile that gives the
  BI-RADS density category (A: ~8 %, B: ~30 %, C: ~55 %, D: ~80 % of the breast area).

Vendors act as acquisition domains (leave-one-vendor-out evaluation): each has its own bit depth
(12 or 14), quantum-noise level, display gamma, detector blur (resolution), contrast and a
heel-effect gradient. See :data:`VENDORS`.

Lesions and the labelling rule (one lesion, in one breast, visible in both of its views; the
contralateral breast is normal)::

    lesion type                    label      grade (ordinal 0..3)
    -----------------------------  ---------  --------------------------------------------------
    none                           normal     0
    circumscribed mass             benign     0   (oval, sharp margin, no spicules)
    focal asymmetry                benign     0   (broad, low-contrast density, no mass margin)
    microcalcification cluster     in_situ    1 + min(2, floor(3 * a)), a = aggressiveness
                                              (a sets the number of calcifications: 6..32,
                                              and their pleomorphism)
    spiculated mass                invasive   1 + min(2, floor(3 * a)); a sets core size and
                                              spicule count/length
    architectural distortion       invasive   1 + min(2, floor(3 * a)); a sets the number and
                                              length of the radiating lines

The grade encodes visible aggressiveness, so it is learnable from the image; normal and benign
images have grade 0. Ground-truth masks: the mass outline (core, without spicules), the convex hull
of the calcifications dilated by ~1 mm, the convex hull of the distortion's lines (where they are
drawn at half their peak strength or more), and the
half-maximum region of the asymmetry.

Generator history (versions 1-3, with the measurements that motivated each) is in
``synthetic/CHANGELOG.md``; :data:`GENERATOR_VERSION` is bumped whenever rendering changes. The two
images of a view share the breast shape (each jittered by about 3 %) and their glandular fields
correlate at :data:`BILATERAL_RHO`, so a focal asymmetry is density seen in one breast only.

The generator is split by what each part does: :mod:`~synthetic.phantoms.mammo_spec` (constants,
vendors, truth records), :mod:`~synthetic.phantoms.mammo_anatomy` (outline, texture),
:mod:`~synthetic.phantoms.mammo_lesions` (lesions and their masks),
:mod:`~synthetic.phantoms.mammo_render` (views and exams in memory) and
:mod:`~synthetic.phantoms.mammo_dicom` (the MG dataset). This module writes exams as DICOM and
re-exports the public names, so ``synthetic.phantoms.mammography`` stays the one import.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from cds.contracts.domain import PatientRef
from synthetic.phantoms.dicom_common import new_uid, save_dataset
from synthetic.phantoms.mammo_anatomy import power_law_field
from synthetic.phantoms.mammo_dicom import _for_processing_pixels, mg_dataset, pixel_spacing_for
from synthetic.phantoms.mammo_lesions import _add_lesion
from synthetic.phantoms.mammo_render import render_view, synthesize_exam
from synthetic.phantoms.mammo_spec import (
    BILATERAL_RHO,
    DENSITY_FRACTION,
    LABEL_FOR_LESION,
    LESION_TYPES,
    LESIONS_FOR_LABEL,
    MG_FOR_PRESENTATION,
    MG_FOR_PROCESSING,
    N_GRADES,
    PATIENT_ORIENTATION,
    VENDORS,
    VIEW_CODES,
    VIEWS,
    ExamTruth,
    ImageTruth,
    LesionSpec,
    RenderedExam,
    RenderedView,
    Vendor,
)

__all__ = [
    "BILATERAL_RHO", "DENSITY_FRACTION", "GENERATOR_VERSION", "LABEL_FOR_LESION", "LESION_TYPES",
    "LESIONS_FOR_LABEL", "MG_FOR_PRESENTATION", "MG_FOR_PROCESSING", "N_GRADES",
    "PATIENT_ORIENTATION", "VENDORS", "VIEW_CODES", "VIEWS", "ExamTruth", "ImageTruth",
    "LesionSpec", "RenderedExam", "RenderedView", "Vendor", "_add_lesion", "generate_exam",
    "generate_fast_image", "mg_dataset", "pixel_spacing_for", "power_law_field", "render_view",
    "synthesize_exam",
]

log = logging.getLogger(__name__)

GENERATOR_VERSION = 3  # bump when rendering changes, so cached training sets are re-rendered



def generate_exam(out_dir: Path, seed: int, patient: PatientRef, *, study_uid: str | None = None,
                  vendor: str | None = None, rows: int = 1024, columns: int = 832,
                  force_label: str | None = None, force_lesion: str | None = None,
                  for_processing: bool = False) -> ExamTruth:
    """Write a seeded 4-view exam (RCC, LCC, RMLO, LMLO) as MG DICOM plus ``.npy`` masks.

    Same seed and patient give the same pixels, masks, labels and UIDs. With ``for_processing``
    a second series holds For Processing instances of the same views.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    exam = synthesize_exam(seed, rows, columns, vendor, force_label, force_lesion)
    tag = f"mg/{seed}/{patient.key}"
    study_uid = study_uid or new_uid(f"{tag}/study")
    series_uid = new_uid(f"{tag}/{study_uid}/series/1")
    proc_series_uid = new_uid(f"{tag}/{study_uid}/series/2")
    spacing = pixel_spacing_for(rows)
    images: list[ImageTruth] = []
    for i, v in enumerate(exam.views, start=1):
        name = f"{v.laterality}{v.view}"
        sop_uid = new_uid(f"{tag}/{study_uid}/{name}")
        ds = mg_dataset(v.pixels, patient=patient, study_uid=study_uid, series_uid=series_uid,
                        sop_uid=sop_uid, series_number=1, instance_number=i,
                        laterality=v.laterality, view=v.view, vendor=v.vendor,
                        pixel_spacing_mm=spacing)
        path = save_dataset(ds, out_dir / f"{name}.dcm")
        mask_path = None
        if v.lesion_type is not None:
            mask_path = out_dir / f"{name}_mask.npy"
            np.save(mask_path, v.mask)
        proc_path = None
        if for_processing:
            pds = mg_dataset(_for_processing_pixels(v), patient=patient, study_uid=study_uid,
                             series_uid=proc_series_uid, sop_uid=new_uid(f"{tag}/{study_uid}/{name}/p"),
                             series_number=2, instance_number=i, laterality=v.laterality,
                             view=v.view, vendor=v.vendor, pixel_spacing_mm=spacing,
                             for_processing=True)
            proc_path = save_dataset(pds, out_dir / f"{name}_for_processing.dcm")
        images.append(ImageTruth(path=path, sop_instance_uid=sop_uid, laterality=v.laterality,
                                 view=v.view, rows=rows, columns=columns, label=v.label,
                                 grade=v.grade, lesion_type=v.lesion_type, mask_path=mask_path,
                                 for_processing_path=proc_path))
    log.info("phantom MG exam written: study %s vendor %s label %s", study_uid, exam.vendor.name,
             exam.exam_label)
    return ExamTruth(seed=seed, study_instance_uid=study_uid, vendor=exam.vendor.name,
                     density=exam.density, exam_label=exam.exam_label,
                     lesion_laterality=exam.lesion_laterality, images=images)


def generate_fast_image(path: Path, seed: int, rows: int = 4096, columns: int = 3328,
                        patient: PatientRef | None = None, study_uid: str | None = None) -> Path:
    """A cheap but valid 16-bit MG For Presentation instance of full-field size (for ingest benches).

    The anatomy is rendered at 1/8 size and upscaled by pixel replication; noise comes from one
    small random tile repeated over the image, so 20 instances take seconds, not minutes.
    """
    if rows % 8 or columns % 8:
        raise ValueError(f"rows and columns must be multiples of 8 (got {rows}x{columns})")
    patient = patient or PatientRef(patient_id=f"PHANTOM{seed}", name="Phantom^Fast", sex="F")
    rng = np.random.default_rng(seed)
    vend = VENDORS["alpha"]
    full = (1 << vend.bits_stored) - 1
    small = render_view(rng, rows // 8, columns // 8, "L", "CC", "B", vend, None).pixels
    small = np.clip(small, 20, full - 20).astype(np.uint16)  # head-room for the noise below
    pixels = np.repeat(np.repeat(small, 8, axis=0), 8, axis=1)
    tile = rng.integers(0, 41, size=(256, 256), dtype=np.uint16)
    reps = (-(-rows // 256), -(-columns // 256))
    pixels += np.tile(tile, reps)[:rows, :columns]  # in place, uint16: no temporaries, no clip
    pixels -= 20
    tag = f"mgfast/{seed}/{patient.key}"
    study_uid = study_uid or new_uid(f"{tag}/study")
    ds = mg_dataset(pixels, patient=patient, study_uid=study_uid,
                    series_uid=new_uid(f"{tag}/{study_uid}/series"),
                    sop_uid=new_uid(f"{tag}/{study_uid}/sop"), series_number=1,
                    instance_number=1, laterality="L", view="CC", vendor=vend,
                    pixel_spacing_mm=pixel_spacing_for(rows))
    return save_dataset(ds, Path(path))
