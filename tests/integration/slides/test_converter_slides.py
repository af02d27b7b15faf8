"""Slides written by an independent converter, and slide files written by another implementation.

OrthancWSIDicomizer (Debian orthanc-wsi) converts a tiled pyramidal TIFF, as a lab converts
scanner exports, into VL WSI instances that differ from our phantom writer in every way that broke
the pipeline: no Frame of Reference UID, no Dimension Organization Type (per-frame positions),
levels split into concatenations (``--max-size``), YCbCr JPEG or JPEG 2000 frames, anisotropic
pixel spacing unless the imaged size is given. The whole `cds analyze` path must write a SEG, a
TID 1500 SR and a RiskAssessment that dciodvfy accepts. highdicom's own slide test files (RGB,
grayscale, JPEG-LS) must be analysed or refused with a SlideReadError that names the file.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pydicom
import pytest

from tests.integration.slides.support import dciodvfy_errors, need, referenced_instance, run_analyze

HIGHDICOM_FILES = Path(__file__).resolve().parents[4] / "shared" / "data" / "highdicom-test-files"
WIDTH, HEIGHT, TILE = 8192, 6144, 256  # the size of the converter slide that used to fail


@pytest.fixture(scope="module")
def slide_tiff(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("imagecodecs", reason="tifffile needs imagecodecs to write JPEG tiles (test extra)")
    from synthetic.phantoms.large_slide import write_large_tiff

    path = tmp_path_factory.mktemp("tiff") / "slide.tif"
    return write_large_tiff(path, WIDTH, HEIGHT, tile=TILE, tissue_size=2048, seed=1, metastasis=True)


def _dicomize(tiff: Path, out: Path, compression: str) -> list[Path]:
    tool = need("OrthancWSIDicomizer")
    sample = subprocess.run([tool, "--sample-dataset"], capture_output=True, text=True, check=True).stdout
    dataset = out.parent / f"{out.name}-dataset.json"
    dataset.write_text(sample)
    out.mkdir(parents=True)
    # the converter's PixelSpacing is imaged-width / rows and imaged-height / columns (mm): give
    # those so the slide keeps the phantom's 0.5 um/px; --max-size 1 splits the base level into
    # a concatenation of several instances
    subprocess.run([tool, "--dataset", str(dataset), "--folder", str(out), "--compression", compression,
                    "--imaged-width", str(HEIGHT * 0.0005), "--imaged-height", str(WIDTH * 0.0005),
                    "--max-size", "1", str(tiff)], capture_output=True, text=True, check=True, timeout=300)
    return sorted(out.glob("*.dcm"))


@pytest.mark.peers
@pytest.mark.slow
@pytest.mark.parametrize("compression", ["jpeg", "jpeg2000"])
def test_dicomizer_slide_gets_seg_sr_and_risk_assessment(slide_tiff, tmp_path, compression):
    files = _dicomize(slide_tiff, tmp_path / "dicom", compression)
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    assert all("FrameOfReferenceUID" not in h for h in headers), "the converter writes no Frame of Reference"
    assert any(int(h.get("InConcatenationNumber", 0) or 0) == 2 for h in headers), "expected a concatenation"

    run = run_analyze(tmp_path / "dicom", tmp_path / "out")
    seg, ref_uid = referenced_instance(run.seg)
    level = next(h for h in headers if h.SOPInstanceUID == ref_uid)
    # the SEG is on the finest level under 2**22 pixels (2048 x 1536), tiled like it
    assert (level.TotalPixelMatrixColumns, level.TotalPixelMatrixRows) == (WIDTH // 4, HEIGHT // 4)
    assert (seg.TotalPixelMatrixColumns, seg.TotalPixelMatrixRows) == (WIDTH // 4, HEIGHT // 4)
    assert (seg.Rows, seg.Columns) == (level.Rows, level.Columns)
    assert seg.SegmentationType == "FRACTIONAL" and "FrameOfReferenceUID" in seg
    sr = pydicom.dcmread(run.sr)
    evidence = {str(i.ReferencedSOPInstanceUID) for s in sr.CurrentRequestedProcedureEvidenceSequence
                for ser in s.ReferencedSeriesSequence for i in ser.ReferencedSOPSequence}
    assert {seg.SOPInstanceUID, ref_uid} <= evidence
    ra = run.risk_assessment
    assert ra["resourceType"] == "RiskAssessment" and 0.0 <= ra["prediction"][0]["probabilityDecimal"] <= 1.0
    for path in (run.seg, run.sr):
        assert dciodvfy_errors(path) == [], path.name


@pytest.mark.parametrize("name", ["sm_image.dcm", "sm_image_grayscale.dcm", "sm_image_jpegls.dcm"])
def test_highdicom_slide_files_are_analysed_or_refused_by_name(name, tmp_path):
    from cds.contracts.errors import InputError
    from cds.contracts.settings import Settings
    from models.slides.reader import SlideReadError, open_slide
    from models.slides.runtime import load

    path = HIGHDICOM_FILES / name
    if not path.exists():
        pytest.skip(f"{path} not present (highdicom test files are shared data on these machines)")
    if name == "sm_image_grayscale.dcm":  # not a brightfield colour slide: refused, saying why
        with pytest.raises(SlideReadError) as info:
            open_slide([path])
        assert isinstance(info.value, InputError)
        assert str(path) in str(info.value) and "SamplesPerPixel" in str(info.value)
        return
    with open_slide([path]) as rd:  # RGB and JPEG-LS frames decode
        tile = rd.read_frame(rd.base, 0, 0)
        assert tile.shape == (rd.base.tile_rows, rd.base.tile_columns, 3)
    series_uid = str(pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID)
    try:
        result, _ = load(Settings()).analyze_series([path], tmp_path)
    except SlideReadError as exc:  # a 50 x 50 px test image may hold no tissue: a named refusal
        assert str(path) in str(exc) or series_uid in str(exc), exc
        return
    assert 0.0 <= result.metastasis.probability <= 1.0
