"""The mammography runtime with the cross-modal model: off, on (fixture artifacts), missing.

The shipped mammography weights are used as they are (linked into a models_dir beside a fixture
``crossmodal`` folder), so these tests exercise the real network input the alignment model crops.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cds.contracts.domain import PatientRef, StudyInput
from cds.contracts.errors import ModelUnavailable
from cds.contracts.settings import Settings
from models.weights import shipped_dir
from synthetic.fixture_crossmodal import write_crossmodal_fixture
from synthetic.phantoms.mammography import generate_exam
from tests.unit.models.mammography.study_input import study_input

PATIENT = PatientRef(patient_id="CM-1", name="Crossmodal^Test", sex="F")


def _study(truth) -> StudyInput:
    return study_input(truth, PATIENT)


@pytest.fixture(scope="module")
def exam(tmp_path_factory):
    root = tmp_path_factory.mktemp("cm-exam")
    return _study(generate_exam(root / "exam", seed=21, patient=PATIENT, force_lesion="spiculated_mass"))


def _models_dir(root: Path, with_crossmodal: bool) -> Path:
    """A models_dir holding the shipped mammography weights and, if asked, a fixture crossmodal."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "mammography").symlink_to(shipped_dir("mammography"), target_is_directory=True)
    if with_crossmodal:
        write_crossmodal_fixture(root / "crossmodal", extra=7)
    return root


def test_mammography_analyses_with_crossmodal_disabled(exam, tmp_path):
    from models.mammography.runtime import load

    for settings in ({"disabled_models": ["crossmodal"]}, {"similar_pathology_k": 0}):
        model = load(Settings(models_dir=_models_dir(tmp_path / str(len(settings)) / next(iter(settings)), False),
                              **settings))
        assert model.evidence is None
        result = model.analyze(exam, tmp_path / "work")
        mg = result.mammography
        assert len(mg.images) == 4 and sum(len(f.lesions) for f in mg.images) >= 1
        assert mg.similar_pathology == []


def test_enabled_but_missing_crossmodal_stops_mammography_naming_the_file(tmp_path):
    from models.mammography.runtime import load

    with pytest.raises(ModelUnavailable, match="crossmodal weights not found.*mammo_encoder.onnx"):
        load(Settings(models_dir=_models_dir(tmp_path, False)))


def test_registry_shows_the_missing_crossmodal_file(tmp_path):
    from cds.pipeline.registry import build_registry

    reg = build_registry(Settings(models_dir=_models_dir(tmp_path, False)), ("models.mammography.runtime",))
    assert "mammo_encoder.onnx" in reg.failed["models.mammography.runtime"]
    reg = build_registry(Settings(models_dir=tmp_path, disabled_models=["crossmodal"]),
                         ("models.mammography.runtime",))
    assert not reg.failed and len(reg.study_models) == 1


def test_every_lesion_of_every_in_domain_image_gets_its_examples(exam, tmp_path):
    from models.mammography.runtime import load

    model = load(Settings(models_dir=_models_dir(tmp_path / "m", True), similar_pathology_k=2))
    work = tmp_path / "work"
    mg = model.analyze(exam, work).mammography
    expected = [(f.sop_instance_uid, les.tracking_uid) for f in mg.images
                if f.domain is None or f.domain.in_domain for les in f.lesions]
    assert expected, "the phantom's spiculated mass should be found"
    got = [(s.sop_instance_uid, s.lesion_tracking_uid) for s in mg.similar_pathology]
    assert got == expected
    for s in mg.similar_pathology:
        assert s.model.name == "crossmodal-alignment" and s.bank == "7 fixture patches, seed 0"
        assert len(s.examples) == 2 and s.examples[0].similarity >= s.examples[1].similarity
        n = next(i for i, f in enumerate(mg.images) if f.sop_instance_uid == s.sop_instance_uid)
        lesion_n = [les.tracking_uid for les in mg.images[n].lesions].index(s.lesion_tracking_uid) + 1
        for rank, e in enumerate(s.examples, start=1):
            assert e.image.path == f"mammography/{s.sop_instance_uid}/similar/{lesion_n}_{rank}.npy"
            assert e.image.load(work).dtype == np.uint8


def test_out_of_domain_images_get_no_examples_and_a_log_line(exam, tmp_path, monkeypatch, caplog):
    import models.mammography.runtime as rt
    from cds.contracts.domain import DomainCheck

    monkeypatch.setattr(rt, "image_check", lambda *a: DomainCheck(in_domain=False, reasons=["test"]))
    model = rt.load(Settings(models_dir=_models_dir(tmp_path / "m", True)))
    with caplog.at_level("INFO", logger=rt.__name__):
        mg = model.analyze(exam, tmp_path / "work").mammography
    with_lesions = [f for f in mg.images if f.lesions]
    assert with_lesions and mg.similar_pathology == []
    skipped = [r.getMessage() for r in caplog.records if "outside the training domain" in r.getMessage()]
    assert len(skipped) == len(with_lesions)
    assert PATIENT.patient_id not in " ".join(skipped) and PATIENT.name not in " ".join(skipped)
