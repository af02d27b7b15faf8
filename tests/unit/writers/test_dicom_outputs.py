"""DICOM results: dciodvfy-clean, and SEG/SR read back with highdicom give what went in."""

from __future__ import annotations

import shutil
import subprocess

import highdicom as hd
import numpy as np
import pydicom
import pytest
from skimage.transform import resize

from cds.contracts.domain import NOT_FOR_CLINICAL_USE

needs_dicom3tools = pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools not installed")


def _dicom(outputs, rtype=None):
    return [a for a in outputs.all if a.kind == "dicom" and (rtype is None or a.resource_type == rtype)]


@needs_dicom3tools
def test_every_dicom_output_passes_dciodvfy(outputs):
    arts = _dicom(outputs)
    assert {a.resource_type for a in arts} == {"SEG", "SR", "DOC"}
    for a in arts:
        res = subprocess.run(["dciodvfy", str(a.path)], capture_output=True, text=True)
        errors = [line for line in (res.stdout + res.stderr).splitlines() if line.startswith("Error")]
        assert not errors, f"{a.path.name} ({a.resource_type}): {errors}"


@needs_dicom3tools
def test_sr_dcsrdump_reads_and_shows_notice(outputs):
    for a in _dicom(outputs, "SR"):
        res = subprocess.run(["dcsrdump", str(a.path)], capture_output=True, text=True)
        text = res.stdout + res.stderr
        assert "Imaging Measurement Report" in text
        assert "synthetic-trained, not for clinical use" in text
        assert "Error" not in text


def test_results_are_new_series_in_source_study_with_algorithm_equipment(outputs):
    src_series = {i.series_instance_uid for i in outputs.mammo.mammography.images}
    src_series.add(outputs.slide.slide.series_instance_uid)
    for a in _dicom(outputs):
        ds = pydicom.dcmread(a.path, stop_before_pixels=True)
        assert ds.StudyInstanceUID in ("2.25.1001", "2.25.1002")
        assert ds.SeriesInstanceUID not in src_series
        items = ds.ContributingEquipmentSequence
        algo = [i for i in items if "DeviceUID" in i]
        assert algo, a.path
        for i in algo:
            assert i.PurposeOfReferenceCodeSequence[0].CodeValue == "109103"
            assert i.ManufacturerModelName.startswith("fixture-")
            assert i.SoftwareVersions == "0.1.0-fixture"
            assert "Processing Algorithm" in i.ContributionDescription


def test_mammography_seg_round_trip(outputs):
    segs = [hd.seg.segread(a.path) for a in _dicom(outputs, "SEG")
            if pydicom.dcmread(a.path, stop_before_pixels=True).SegmentationType == "BINARY"]
    lesions = {les.tracking_uid: (img, les) for img in outputs.mammo.mammography.images for les in img.lesions}
    assert len(lesions) >= 2, "the fixture should find lesions in the phantom"
    seen = set()
    for seg in segs:
        ref_uid = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID
        for item in seg.SegmentSequence:
            img, les = lesions[item.TrackingUID]
            assert img.sop_instance_uid == ref_uid
            assert item.TrackingID == les.tracking_id
            assert item.SegmentAlgorithmName == outputs.mammo.model.name
            mask = seg.get_pixels_by_source_instance([ref_uid], segment_numbers=[item.SegmentNumber])[0, ..., 0]
            np.testing.assert_array_equal(mask.astype(bool), les.mask.load(outputs.mammo.work_dir).astype(bool))
            seen.add(item.TrackingUID)
    assert seen == set(lesions)


def test_slide_seg_is_fractional_and_tiled_like_the_source(outputs):
    sl = outputs.slide.slide
    arts = [a for a in _dicom(outputs, "SEG") if a.key.startswith("2.25.1002/")]
    assert len(arts) == 1
    seg = hd.seg.segread(arts[0].path)
    assert seg.SegmentationType == "FRACTIONAL"
    assert (seg.Rows, seg.Columns) == (sl.tile_rows, sl.tile_columns)
    assert (seg.TotalPixelMatrixRows, seg.TotalPixelMatrixColumns) == (sl.base_rows, sl.base_columns)
    n_tiles = (sl.base_rows // sl.tile_rows) * (sl.base_columns // sl.tile_columns)
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["Attention", "Tumour probability"]
    assert seg.NumberOfFrames == 2 * n_tiles
    for number, af in ((1, sl.attention_map), (2, sl.tumour_probability_map)):
        total = seg.get_total_pixel_matrix(segment_numbers=[number])[..., 0]
        expected = resize(af.load(outputs.slide.work_dir), (sl.base_rows, sl.base_columns),
                          order=1, preserve_range=True)
        assert np.abs(total - expected).max() <= 1.0 / 255 + 1e-6


def _groups(path):
    sr = hd.sr.srread(path)
    return sr, hd.sr.MeasurementReport.from_sequence([sr], is_root=True)


def _num(group, meaning):
    return [m.value for m in group.get_measurements() if m.name.meaning == meaning]


def test_mammography_sr_round_trip(outputs):
    art = next(a for a in _dicom(outputs, "SR") if a.key == "2.25.1001/fixture-mammo/0.1.0-fixture/sr")
    sr, report = _groups(art.path)
    for img in outputs.mammo.mammography.images:
        for les in img.lesions:
            groups = report.get_planar_roi_measurement_groups(tracking_uid=les.tracking_uid)
            region = [g for g in groups if g.roi is not None]
            segref = [g for g in groups if g.referenced_segmentation_frame is not None]
            assert len(region) == 1 and len(segref) == 1
            g = region[0]
            np.testing.assert_allclose(g.roi.value, np.asarray(les.polygon), atol=1e-3)
            assert g.roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == img.sop_instance_uid
            assert _num(g, "Lesion score") == [pytest.approx(les.score)]
            assert _num(g, "Malignancy probability") == [pytest.approx(img.malignancy.probability)]
            qual = {q.name.meaning: q.value.meaning for q in g.get_qualitative_evaluations()}
            assert qual["Predicted class"] == img.predicted_class.replace("_", " ").capitalize()
            assert qual["Decision at calibrated threshold"] == ("Positive" if img.malignancy.positive else "Negative")
            seg_uid = segref[0].referenced_segmentation_frame[0].referenced_sop_instance_uid
            seg = next(a for a in _dicom(outputs, "SEG")
                       if pydicom.dcmread(a.path, stop_before_pixels=True).SOPInstanceUID == seg_uid)
            assert seg is not None
    # image-level results: one group per image whose region is the whole image (see sr.py)
    image_groups = [g for g in report.get_planar_roi_measurement_groups()
                    if str(g.tracking_identifier).startswith("image-")]
    assert len(image_groups) == len(outputs.mammo.mammography.images)
    for img in outputs.mammo.mammography.images:
        g = next(g for g in image_groups
                 if g.roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
                 == img.sop_instance_uid)
        np.testing.assert_allclose(g.roi.value, [[0, 0], [img.columns, 0], [img.columns, img.rows],
                                                 [0, img.rows], [0, 0]])
        for cls, p in img.class_probabilities.items():
            assert _num(g, f"Probability {cls.replace('_', ' ')}") == [pytest.approx(p)]
    assert NOT_FOR_CLINICAL_USE in str(sr)


def test_slide_and_recurrence_sr_content(outputs):
    art = next(a for a in _dicom(outputs, "SR") if a.key == "2.25.1002/fixture-slide/0.1.0-fixture/sr")
    _, report = _groups(art.path)
    img = next(g for g in report.get_planar_roi_measurement_groups() if g.tracking_identifier == "slide")
    assert _num(img, "Lymph node metastasis probability") == [
        pytest.approx(outputs.slide.slide.metastasis.probability)]
    tiles = [g for g in report.get_planar_roi_measurement_groups()
             if g.roi is not None and str(g.tracking_identifier).startswith("top-tile")]
    assert len(tiles) == len(outputs.slide.slide.top_tiles)
    t0 = outputs.slide.slide.top_tiles[0]
    g0 = next(g for g in tiles if g.tracking_identifier == "top-tile-1")
    assert g0.roi.value[0].tolist() == [t0.x, t0.y]
    rec = next(a for a in _dicom(outputs, "SR") if a.key.endswith("/case-sr"))
    _, report = _groups(rec.path)
    g = report.get_image_measurement_groups()[0]
    for years, p in outputs.recurrence.absolute_risk.items():
        assert _num(g, f"Risk of recurrence by {years} years") == [pytest.approx(p)]
    qual = {q.name.meaning: q.value.meaning for q in g.get_qualitative_evaluations()}
    assert qual["Recurrence risk group"].lower().startswith(outputs.recurrence.risk_group)


def test_rerun_gives_same_keys_and_uids(outputs, tmp_path):
    """Deterministic UIDs: a re-run of the same analysis is the same object for the PACS."""
    from cds.writers.outputs import study_outputs

    again = study_outputs(outputs.settings, outputs.mammo, tmp_path, sources=outputs.sources)
    first = [a for a in outputs.study_arts if a.key.startswith("2.25.1001/")]
    assert [a.key for a in again] == [a.key for a in first]
    for a, b in zip(first, again):
        if a.kind == "dicom":
            da, db = (pydicom.dcmread(x.path, stop_before_pixels=True) for x in (a, b))
            assert (da.SOPInstanceUID, da.SeriesInstanceUID) == (db.SOPInstanceUID, db.SeriesInstanceUID)


def test_missing_source_is_a_clear_error(outputs, tmp_path):
    from cds.contracts.errors import PermanentError
    from cds.writers.outputs import study_outputs

    with pytest.raises(PermanentError, match="source instance .* of study 2.25.1001"):
        study_outputs(outputs.settings, outputs.mammo, tmp_path, sources={})
