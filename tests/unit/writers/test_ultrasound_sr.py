"""Ultrasound study -> TID 1500 SR of the lesion region the recurrence features came from."""

from __future__ import annotations

import shutil
import subprocess

import pydicom
import pytest

from cds.contracts.domain import InstanceRecord, PatientRef, StudyInput
from cds.contracts.settings import Settings
from cds.writers.outputs import study_outputs
from models.ultrasound.runtime import load
from synthetic.phantoms.ultrasound import generate_ultrasound


def _scoords(item, found):
    for child in item.get("ContentSequence", []):
        if child.ValueType == "SCOORD":
            found.append(child)
        _scoords(child, found)
    return found


def test_ultrasound_region_sr_is_valid_and_points_at_the_box(tmp_path):
    patient = PatientRef(patient_id="US-SR-1", name="Test^Ultrasound")
    truth = generate_ultrasound(tmp_path / "in", 11, patient, latent_risk=0.5)
    ds = pydicom.dcmread(truth.path, stop_before_pixels=True)
    record = InstanceRecord(sop_instance_uid=truth.sop_instance_uid, sop_class_uid=str(ds.SOPClassUID),
                            study_instance_uid=truth.study_uid, series_instance_uid=truth.series_uid,
                            modality="US", path=truth.path)
    settings = Settings(data_dir=tmp_path / "data")
    study = StudyInput(study_instance_uid=truth.study_uid, modality="US", patient=patient, instances=[record])
    analysis = load(settings).analyze(study, tmp_path / "work")
    arts = study_outputs(settings, analysis, tmp_path / "out", sources={truth.sop_instance_uid: truth.path})
    assert [a.resource_type for a in arts] == ["SR"]  # no diagnosis from ultrasound, so no RiskAssessment
    sr = pydicom.dcmread(arts[0].path)
    assert sr.StudyInstanceUID == truth.study_uid
    (scoord,) = _scoords(sr, [])
    xs, ys = scoord.GraphicData[0::2], scoord.GraphicData[1::2]
    assert (min(xs), min(ys), max(xs), max(ys)) == pytest.approx(analysis.ultrasound.lesion_box, abs=1e-3)
    ref = scoord.ContentSequence[0].ReferencedSOPSequence[0]
    assert ref.ReferencedSOPInstanceUID == truth.sop_instance_uid
    text = str(sr)
    assert "Long axis" in text and "Region found automatically" in text and "not for clinical use" in text
    if shutil.which("dciodvfy"):
        res = subprocess.run(["dciodvfy", str(arts[0].path)], capture_output=True, text=True)
        assert not [x for x in (res.stdout + res.stderr).splitlines() if x.startswith("Error")]
