"""Mammograms as archives hold them: Secondary Capture MG in RLE with a burned-in label,
MONOCHROME1, For Processing, tomosynthesis and special views, real non-mammography DICOM."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from cds.contracts.domain import InstanceRecord, NotAnalysed, PatientRef, StudyInput
from cds.contracts.errors import NothingToAnalyse
from models.mammography import geometry
from models.mammography.archive import MammoInputError
from models.mammography.preprocess import prepare_image, read_mg
from models.mammography.study_images import study_images
from synthetic.phantoms.mammography import synthesize_exam
from tests.unit.models.mammography.archive_fixtures import burn_label, label_box, sc_mammogram

PATIENT = PatientRef(patient_id="ARCH-1", sex="F")
SHAPE = (512, 416)


@pytest.fixture(scope="module")
def exam():
    return synthesize_exam(5, *SHAPE, force_label="invasive")


def _view(exam, lat: str, view: str):
    return next(v for v in exam.views if (v.laterality, v.view) == (lat, view))


def _record(path: Path) -> InstanceRecord:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return InstanceRecord(sop_instance_uid=ds.SOPInstanceUID, sop_class_uid=ds.SOPClassUID,
                          study_instance_uid="1.2.3", series_instance_uid=ds.SeriesInstanceUID,
                          modality="MG", path=path)


def _study(paths: list[Path]) -> StudyInput:
    return StudyInput(study_instance_uid="1.2.3", modality="MG", patient=PATIENT,
                      instances=[_record(p) for p in paths])


def test_sc_mg_rle_laterality_and_view_from_text(tmp_path: Path, exam) -> None:
    v = _view(exam, "L", "CC")
    path = sc_mammogram(tmp_path / "a.dcm", burn_label(v.pixels, False))
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == pydicom.uid.RLELossless
    im = read_mg(path)
    assert (im.laterality, im.view) == ("L", "CC")
    assert (im.laterality_source, im.view_source) == ("text", "text")
    assert im.side == "L"


def test_laterality_from_pixels_when_nothing_else(tmp_path: Path, exam) -> None:
    v = _view(exam, "R", "MLO")  # stored mirrored: chest wall on the right
    path = sc_mammogram(tmp_path / "r.dcm", burn_label(v.pixels, True), patient_id="ANON", description="")
    im = read_mg(path)
    assert (im.laterality, im.laterality_source, im.view, im.view_source) == ("R", "pixels", "", "")
    assert im.side == "R"


@pytest.mark.parametrize(("orientation", "expected"), [
    (["A", "R"], ("L", "CC", False)), (["P", "L"], ("R", "CC", True)),
    (["A", "FR"], ("L", "MLO", False)), (["P", "FL"], ("R", "MLO", True)),
    (["L", "CC"], ("L", "CC", None)),  # misused: free text in PatientOrientation
])
def test_patient_orientation_mapping(orientation, expected) -> None:
    ds = pydicom.Dataset()
    ds.PatientOrientation = orientation
    assert geometry.from_patient_orientation(ds) == expected
    g = geometry.geometry(ds)
    assert (g.laterality, g.view, g.laterality_source) == (*expected[:2], "patient_orientation")


def test_a_patient_id_letter_is_not_a_side() -> None:
    assert geometry.from_text(["R-004512"], single_letters=False) == ("", "")
    assert geometry.from_text(["Calc-Test_P_00038_LEFT_CC"], single_letters=False) == ("L", "CC")


def test_text_forms() -> None:
    assert geometry.from_text(["Mass-Training_P_00001_RIGHT_MLO"]) == ("R", "MLO")
    assert geometry.from_text(["", "LCC screening"]) == ("L", "CC")
    assert geometry.from_text(["L and R CC"]) == ("", "CC")  # both sides named: no laterality


def test_monochrome1_reads_like_monochrome2(tmp_path: Path, exam) -> None:
    v = _view(exam, "L", "MLO")
    m2 = read_mg(sc_mammogram(tmp_path / "m2.dcm", v.pixels))
    inverted = (int(v.pixels.max()) - v.pixels.astype(np.int32)).astype(np.uint16)
    m1 = read_mg(sc_mammogram(tmp_path / "m1.dcm", inverted, PhotometricInterpretation="MONOCHROME1"))
    assert m1.invert and not m2.invert
    a, b = prepare_image(m2.pixels, m2.side, m2.invert), prepare_image(m1.pixels, m1.side, m1.invert)
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.999


def test_intensity_sign_decides_orientation_not_photometric(tmp_path: Path, exam) -> None:
    """MONOCHROME2 with sign -1 (high values = more attenuation), the usual For Presentation
    pairing, is read as it is; the same pixels inverted with sign +1 read the same."""
    v = _view(exam, "L", "CC")
    plain = read_mg(sc_mammogram(tmp_path / "a.dcm", v.pixels, ImageLaterality="L", ViewPosition="CC"))
    minus = read_mg(sc_mammogram(tmp_path / "b.dcm", v.pixels, ImageLaterality="L", ViewPosition="CC",
                                 PixelIntensityRelationshipSign=-1))
    flipped = (int(v.pixels.max()) - v.pixels.astype(np.int32)).astype(np.uint16)
    plus = read_mg(sc_mammogram(tmp_path / "c.dcm", flipped, ImageLaterality="L", ViewPosition="CC",
                                PixelIntensityRelationshipSign=1))
    assert not minus.invert and plus.invert
    ref = prepare_image(plain.pixels, plain.side, plain.invert)
    for im in (minus, plus):
        got = prepare_image(im.pixels, im.side, im.invert)
        assert np.corrcoef(ref.ravel(), got.ravel())[0, 1] > 0.999


def test_for_processing_gets_monotone_presentation_transform(tmp_path: Path, exam) -> None:
    v = _view(exam, "L", "CC")
    raw = (int(v.pixels.max()) - v.pixels.astype(np.int32)).astype(np.uint16)
    path = sc_mammogram(tmp_path / "p.dcm", raw, sop_class="1.2.840.10008.5.1.4.1.1.1.2.1", rle=False,
                        ImageLaterality="L", ViewPosition="CC", PresentationIntentType="FOR PROCESSING",
                        PixelIntensityRelationship="LIN", PixelIntensityRelationshipSign=1)
    im = read_mg(path)
    assert im.laterality_source == "attribute"
    presented = prepare_image(v.pixels, "L")
    processed = prepare_image(im.pixels, im.side, im.invert)
    rank = np.argsort(np.argsort(presented.ravel())), np.argsort(np.argsort(processed.ravel()))
    assert np.corrcoef(*rank)[0, 1] > 0.99  # monotone: same order of intensities


def test_tomosynthesis_and_special_views_not_analysed(tmp_path: Path, exam) -> None:
    v = _view(exam, "L", "CC")
    normal = sc_mammogram(tmp_path / "n.dcm", v.pixels)
    tomo = sc_mammogram(tmp_path / "t.dcm", v.pixels, sop_class="1.2.840.10008.5.1.4.1.1.13.1.3", rle=False)
    mag_item = pydicom.Dataset()
    mod = pydicom.Dataset()
    mod.CodeValue, mod.CodingSchemeDesignator, mod.CodeMeaning = "399163009", "SCT", "Magnification"
    mag_item.CodeValue, mag_item.CodingSchemeDesignator, mag_item.CodeMeaning = "399162004", "SCT", "cranio-caudal"
    mag_item.ViewModifierCodeSequence = [mod]
    mag = sc_mammogram(tmp_path / "m.dcm", v.pixels, ViewCodeSequence=[mag_item])
    spot = sc_mammogram(tmp_path / "s.dcm", v.pixels, ViewPosition="SCC")
    implant = sc_mammogram(tmp_path / "i.dcm", v.pixels, ViewPosition="CCID")
    multi = sc_mammogram(tmp_path / "f.dcm", v.pixels, ImageType=["ORIGINAL", "PRIMARY", "TOMOSYNTHESIS"])
    images, skipped = study_images(_study([normal, tomo, mag, spot, implant, multi]))
    assert [im.path for im in images] == [normal]
    reasons = sorted(s.reason for s in skipped)
    assert reasons == ["implant-displaced view", "magnification view", "spot compression view",
                       "tomosynthesis", "tomosynthesis"]
    assert all(isinstance(s, NotAnalysed) and s.detail for s in skipped)
    with pytest.raises(NothingToAnalyse, match="tomosynthesis"):
        study_images(_study([tomo, mag]))


@pytest.mark.parametrize(("name", "expected"), [("CT_small.dcm", "CT Image Storage"),
                                                ("US1_J2KR.dcm", "Ultrasound"),
                                                ("MR_small_RLE.dcm", "MR Image Storage")])
def test_real_non_mammography_refused_with_reason(name: str, expected: str) -> None:
    path = Path(get_testdata_file(name))
    with pytest.raises(MammoInputError, match=f"{expected}.*not a mammography image class"):
        read_mg(path)


def test_no_lesion_on_burned_in_label(tmp_path: Path, exam, monkeypatch) -> None:
    """The model is made to 'see' a lesion on the label and one in the breast: only the latter
    is outlined, and the breast mask excludes the label."""
    from cds.contracts.settings import Settings
    from models.mammography.runtime import load

    model = load(Settings())
    paths, boxes = [], {}
    for v in exam.views:
        right = v.laterality == "R"
        p = sc_mammogram(tmp_path / f"{v.laterality}{v.view}.dcm", burn_label(v.pixels, right),
                         patient_id=f"Calc-Test_P_00038_{'RIGHT' if right else 'LEFT'}_{v.view}")
        paths.append(p)
        boxes[pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID] = label_box(v.pixels.shape, right)
    name = "run_outputs" if hasattr(model, "run_outputs") else "run_arrays"  # the batch the study uses
    real_run = getattr(model, name)

    def fake_run(x, *args, **kwargs):
        logits, lesion, grades, *rest = real_run(x, *args, **kwargs)
        logits[:] = np.array([-9.0, -9.0, 0.0, 9.0], np.float32)  # invasive, not normal: lesions reported
        lesion[:] = 0.0
        r, c = label_box(lesion.shape[1:], False)  # canonical geometry: chest wall left
        lesion[:, r, c] = 1.0
        lesion[:, 120:140, 30:50] = 1.0  # inside the breast
        return (logits, lesion, grades, *rest)

    monkeypatch.setattr(model, name, fake_run)
    work = tmp_path / "work"
    result = model.analyze(_study(paths), work).mammography
    assert result is not None and len(result.images) == 4 and not result.not_analysed
    for f in result.images:
        assert f.laterality_source == "text" and f.view_source == "text" and f.paired
        r, c = boxes[f.sop_instance_uid]
        breast = f.breast_mask.load(work)
        assert breast.shape == (f.rows, f.columns) and not breast[r, c].any()
        assert f.lesions, "the lesion inside the breast is outlined"
        for les in f.lesions:
            assert not les.mask.load(work)[r, c].any()


def test_single_image_read_on_its_own(tmp_path: Path, exam) -> None:
    from cds.contracts.settings import Settings
    from models.mammography.runtime import load

    v = _view(exam, "L", "CC")
    path = sc_mammogram(tmp_path / "one.dcm", burn_label(v.pixels, False))
    result = load(Settings()).analyze(_study([path]), tmp_path / "w").mammography
    assert result is not None and [f.paired for f in result.images] == [False]


def test_intake_routes_sc_mg_and_breast_dx_as_mg(tmp_path: Path, exam) -> None:
    from cds.intake.instance_check import inspect_instance

    v = _view(exam, "L", "CC")
    sc = sc_mammogram(tmp_path / "sc.dcm", v.pixels, StudyInstanceUID="1.2.3.4")
    dx = sc_mammogram(tmp_path / "dx.dcm", v.pixels, sop_class="1.2.840.10008.5.1.4.1.1.1.1",
                      Modality="DX", BodyPartExamined="BREAST")
    for path in (sc, dx):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        meta = inspect_instance(path, command_sop_class=ds.SOPClassUID, command_sop_instance=ds.SOPInstanceUID)
        assert meta.modality == "MG"
