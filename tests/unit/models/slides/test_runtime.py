"""The runtime (onnxruntime only) analyses a generated slide sparsely and returns a full SlideResult."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

from cds.contracts.domain import InstanceRecord, PatientRef, StudyInput
from cds.contracts.settings import Settings
from cds.pipeline.registry import build_registry
from models.pathomics.features import MORPHOLOGY_KEYS, TOPOLOGY_KEYS
from models.slides import runtime
from models.slides.reader import SlideReadError


@pytest.fixture(scope="module")
def model():
    return runtime.load(Settings())


def _study(truth) -> StudyInput:
    recs = []
    for p in truth.level_paths:
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        recs.append(
            InstanceRecord(
                sop_instance_uid=ds.SOPInstanceUID, sop_class_uid=ds.SOPClassUID, study_instance_uid=ds.StudyInstanceUID,
                series_instance_uid=ds.SeriesInstanceUID, modality="SM", path=p,
            )
        )
    return StudyInput(study_instance_uid=truth.study_instance_uid, modality="SM", patient=PatientRef(patient_id="X"), instances=recs)


def test_analyze_demo_slide(model, demo_slide, tmp_path):
    analysis = model.analyze(_study(demo_slide), tmp_path)
    s = analysis.slide
    assert s is not None and analysis.modality == "SM" and analysis.model.name == model.identity.name
    assert (s.base_rows, s.base_columns, s.tile_rows, s.tile_columns) == (4096, 4096, 256, 256)
    base = pydicom.dcmread(demo_slide.level_paths[0], stop_before_pixels=True)
    assert s.base_sop_instance_uid == base.SOPInstanceUID and s.series_instance_uid == demo_slide.series_instance_uid
    assert s.pixel_spacing_mm == pytest.approx((0.0005, 0.0005))
    assert 0.0 <= s.metastasis.probability <= 1.0
    att = s.attention_map.load(tmp_path)
    tum = s.tumour_probability_map.load(tmp_path)
    assert att.shape == tum.shape == (16, 16) and att.dtype == np.float32
    assert float(att.max()) == pytest.approx(1.0) and float(att.min()) >= 0.0
    assert 0 < s.tiles_stage2 <= s.tiles_stage1 <= 256
    assert len(s.top_tiles) == 5
    for t in s.top_tiles:
        assert t.x % 256 == 0 and t.y % 256 == 0 and t.width == 256
        thumb = t.image.load(tmp_path)
        assert thumb.dtype == np.uint8 and thumb.shape == (128, 128, 3)
    assert s.pathomics is not None and s.pathomics.n_nuclei > 50
    assert set(s.pathomics.morphology) == set(MORPHOLOGY_KEYS) and set(s.pathomics.topology) == set(TOPOLOGY_KEYS)
    assert len(s.embedding) == 64 and all(np.isfinite(s.embedding))
    # the shipped model finds this slide's metastasis and attends to it
    assert s.metastasis.positive
    mask = np.load(demo_slide.tumour_mask_path)
    k = 256 // demo_slide.mask_downsample
    top = s.top_tiles[0]
    assert mask[top.y // 8 : top.y // 8 + k, top.x // 8 : top.x // 8 + k].any()


def test_base_level_is_read_sparsely(model, demo_slide, tmp_path):
    result, stats = model.analyze_series(list(demo_slide.level_paths), tmp_path)
    assert stats.base_tiles_total == 256
    assert stats.base_tiles_read == result.tiles_stage2
    assert stats.base_tiles_read <= model.params.max_stage2
    assert stats.base_tiles_read < 0.2 * stats.base_tiles_total


def test_full_resolution_level_is_never_held_in_memory(model, demo_slide, tmp_path):
    """Only the lowest level is read as a region, and numpy's peak allocation (stage-2 tiles,
    network inputs and wsidicom's decoded-tile cache included: about 24 MiB) stays well below the
    size of the base level (4096 x 4096 RGB = 48 MiB): the slide is never loaded whole."""
    import tracemalloc

    from models.slides import analysis, reader

    regions: list[int] = []
    real_open = reader.open_slide

    def spying_open(paths):
        rd = real_open(paths)
        real_read_region = rd.wsi.read_region

        def read_region(location, level, size, *a, **k):
            regions.append(level)
            return real_read_region(location, level, size, *a, **k)

        rd.wsi.read_region = read_region
        return rd

    base_bytes = 4096 * 4096 * 3
    with reader.open_slide(list(demo_slide.level_paths)) as rd:  # first-use imports are not the slide
        reader.tissue_tiles(rd)
    tracemalloc.start()
    try:
        with spying_open(list(demo_slide.level_paths)) as rd:
            raw = analysis.analyze_slide(rd, model.nets, model.params)
            lowest = rd.lowest.index
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert raw.base_tiles_read <= model.params.max_stage2
    assert regions and set(regions) == {lowest}
    assert peak < 0.6 * base_bytes, f"peak numpy allocation {peak / 2**20:.1f} MiB"


def test_negative_slide_scores_low(model, small_negative, tmp_path):
    result, _ = model.analyze_series(list(small_negative.level_paths), tmp_path)
    assert not result.metastasis.positive


def test_registry_picks_the_slide_model():
    reg = build_registry(Settings(), factories=("models.slides.runtime",))
    assert [m.identity.name for m in reg.for_modality("SM")] == [runtime.load(Settings()).identity.name]


def test_runtime_does_not_import_torch():
    code = "import sys, models.slides.runtime, models.pathomics.features; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[4]).returncode == 0


def test_bad_inputs_are_named(model, tmp_path):
    not_dicom = tmp_path / "x.dcm"
    not_dicom.write_bytes(b"nope")
    with pytest.raises(SlideReadError, match="x.dcm"):
        model.analyze_series([not_dicom], tmp_path)
    ds = pydicom.Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = "1.2.3"
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ct = tmp_path / "ct.dcm"
    ds.save_as(ct, enforce_file_format=True)
    with pytest.raises(SlideReadError, match="expected VL Whole Slide Microscopy"):
        model.analyze_series([ct], tmp_path)
    with pytest.raises(runtime.ModelUnavailable, match="weights not found"):
        runtime.load(Settings(models_dir=tmp_path))
