"""Mammograms shaped as archives hold them, built from phantom pixels (for the archive tests).

Secondary Capture with Modality MG, RLE Lossless, 16-bit, no laterality or view attributes, the
laterality and view only in free text, and a burned-in film label (a bright rectangle with dark
text-like strokes) in the corner away from the chest wall.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import RLELossless, generate_uid

SC = "1.2.840.10008.5.1.4.1.1.7"


def label_box(shape: tuple[int, int], chest_wall_right: bool) -> tuple[slice, slice]:
    """Rows and columns of the burned-in label: top corner on the side away from the chest wall."""
    rows, cols = shape
    r = slice(int(rows * 0.04), int(rows * 0.12))
    c = slice(int(cols * 0.05), int(cols * 0.25)) if chest_wall_right else slice(int(cols * 0.75), int(cols * 0.95))
    return r, c


def burn_label(pixels: np.ndarray, chest_wall_right: bool) -> np.ndarray:
    out = pixels.copy()
    r, c = label_box(out.shape, chest_wall_right)
    full = int(out.max())
    out[r, c] = full
    for k in range(c.start + 4, c.stop - 4, 9):  # dark strokes like letters
        out[r.start + 3:r.stop - 3, k:k + 3] = full // 6
    return out


def sc_mammogram(path: Path, pixels: np.ndarray, *, patient_id: str = "Calc-Test_P_00038_LEFT_CC",
                 description: str = "full mammogram images", sop_class: str = SC, rle: bool = True,
                 **attrs: object) -> Path:
    """Write ``pixels`` (uint16) as a Secondary Capture MG file (RLE Lossless by default)."""
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.ConversionType = "MG", "DF"
    ds.PatientID, ds.PatientName = patient_id, patient_id
    ds.SeriesDescription = description
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = (int(s) for s in pixels.shape)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    for k, v in attrs.items():
        setattr(ds, k, v)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    arr = np.ascontiguousarray(pixels, dtype=np.uint16)
    ds.PixelData = arr.tobytes()
    if rle:
        ds.compress(RLELossless, arr)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
