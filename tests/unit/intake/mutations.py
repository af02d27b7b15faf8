"""A corpus of malformed MG/US instances: each one a file as pynetdicom spools a received C-STORE
(preamble, file meta, the data set bytes as sent), with the refusal it must get.

Used by the unit tests, the loopback security tests and ``scripts/fuzz_intake.py``.
"""

from __future__ import annotations

import io
import random
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid

MG = "1.2.840.10008.5.1.4.1.1.1.2"
US = "1.2.840.10008.5.1.4.1.1.6.1"
BAD_UIDS = ["../../x", "./1.2.3", "1.2.abc", "1.2;rm -rf /", "1." + "2" * 99, "1.02.3",
            "1..2", "1.2.", "1.2\\1.3", "$(id)", "1.2.3 4"]


@dataclass
class Mutant:
    name: str
    sop_class: str
    sop_uid: str  # what the C-STORE request says (the file meta carries it)
    ts: str
    body: bytes  # the data set as sent


def base_dataset(kind: str, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    ds = Dataset()
    ds.SOPClassUID = MG if kind == "MG" else US
    ds.SOPInstanceUID = generate_uid()
    ds.StudyDate = "20240102"
    ds.AccessionNumber = "ACC1"
    ds.Modality = kind
    ds.PatientName = "Fuzz^Patient"
    ds.PatientID = "FUZZ-1"
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Rows, ds.Columns = 16, 12
    if kind == "MG":
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = rng.integers(0, 4095, (16, 12), dtype=np.uint16).tobytes()
    else:
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = rng.integers(0, 255, (16, 12, 3), dtype=np.uint8).tobytes()
    return ds


def encode(ds: Dataset) -> bytes:
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, False  # explicit VR little endian
    write_dataset(buf, ds)
    return buf.getvalue()


def raw_element(group: int, elem: int, vr: str, value: bytes) -> bytes:
    if vr in ("OB", "OW", "SQ", "UN", "UT", "UC", "UR", "OF", "OD", "OL", "OV"):
        return struct.pack("<HH2sHI", group, elem, vr.encode(), 0, len(value)) + value
    return struct.pack("<HH2sH", group, elem, vr.encode(), len(value)) + value


def with_element(ds: Dataset, keyword: str, raw: bytes) -> bytes:
    """The data set encoded with ``keyword`` replaced by the raw bytes given (in tag order)."""
    tag = ds[keyword].tag
    before, after = Dataset(), Dataset()
    for e in ds:
        (before if e.tag < tag else after).add(e) if e.tag != tag else None
    return encode(before) + raw + encode(after)


def _valid(kind: str, seed: int) -> tuple[Dataset, Mutant]:
    ds = base_dataset(kind, seed)
    return ds, Mutant("valid", ds.SOPClassUID, ds.SOPInstanceUID, ExplicitVRLittleEndian, encode(ds))


def mutants(kind: str, seed: int = 0) -> list[Mutant]:
    """About 60 structurally invalid variants of one valid instance of ``kind`` (MG or US)."""
    ds, valid = _valid(kind, seed)
    body, cls, uid = valid.body, valid.sop_class, valid.sop_uid
    out: list[Mutant] = []

    def add(name: str, data: bytes, *, sop_uid: str = uid, ts: str = ExplicitVRLittleEndian) -> None:
        out.append(Mutant(f"{kind}:{name}", cls, sop_uid, ts, data))

    for frac in (0.05, 0.2, 0.4, 0.6, 0.8, 0.9, 0.97):
        add(f"truncated-{frac}", body[: int(len(body) * frac)])
    add("trailing-2GB-element", body + raw_element(0x7FE1, 0x0010, "OB", b"")[:-4]
        + struct.pack("<I", 0x7FFFFFF0) + b"\0" * 16)
    add("trailing-64k-element", body + raw_element(0x7FE1, 0x0010, "OB", b"")[:-4]
        + struct.pack("<I", 65536) + b"\0" * 16)
    add("pixel-length-bogus", body[:-len(ds.PixelData) - 4] + struct.pack("<I", len(ds.PixelData) * 4)
        + ds.PixelData)
    add("name-as-sequence", with_element(ds, "PatientName", raw_element(0x0010, 0x0010, "SQ", b"")))
    add("name-as-US", with_element(ds, "PatientName", raw_element(0x0010, 0x0010, "US", b"\x01\x00")))
    add("rows-as-LO", with_element(ds, "Rows", raw_element(0x0028, 0x0010, "LO", b"16")))
    add("study-uid-as-LO", with_element(ds, "StudyInstanceUID",
                                        raw_element(0x0020, 0x000D, "LO", b"1.2.3.4\0")))
    add("patient-id-two-values", with_element(ds, "PatientID", raw_element(0x0010, 0x0020, "LO", b"A\\B ")))
    for i, bad in enumerate(BAD_UIDS):
        raw = bad.encode() + (b"\0" if len(bad) % 2 else b"")
        for keyword, tag in (("StudyInstanceUID", 0x000D), ("SeriesInstanceUID", 0x000E)):
            add(f"{keyword}-bad-{i}", with_element(ds, keyword, raw_element(0x0020, tag, "UI", raw)))
        add(f"sop-uid-bad-{i}", with_element(ds, "SOPInstanceUID", raw_element(0x0008, 0x0018, "UI", raw)),
            sop_uid=bad if len(bad) <= 64 and "\\" not in bad else uid)  # SCUs cannot send these
    add("native-under-jpeg", body, ts=JPEGBaseline8Bit)
    encaps = raw_element(0x7FE0, 0x0010, "OB", b"")[:-4] + b"\xff\xff\xff\xff" + \
        b"\xfe\xff\x00\xe0\0\0\0\0" + b"\xfe\xff\x00\xe0\x04\0\0\0abcd" + b"\xfe\xff\xdd\xe0\0\0\0\0"
    add("encapsulated-under-native", with_element(ds, "PixelData", encaps))
    for keyword, tag in (("Rows", 0x0010), ("Columns", 0x0011)):
        add(f"{keyword}-zero", with_element(ds, keyword, raw_element(0x0028, tag, "US", b"\0\0")))
    add("bits-allocated-7", with_element(ds, "BitsAllocated", raw_element(0x0028, 0x0100, "US", b"\x07\0")))
    rng = random.Random(seed)
    for i in range(4):
        add(f"random-bytes-{i}", bytes(rng.getrandbits(8) for _ in range(rng.choice([7, 64, 600, 3000]))))
    add("empty", b"")
    add("no-sop-uid", encode(_without(ds, "SOPInstanceUID")))
    return out


def _without(ds: Dataset, keyword: str) -> Dataset:
    copy = Dataset(ds)
    del copy[keyword]
    return copy


def corpus(n_seeds: int = 1) -> list[Mutant]:
    """Mutants of MG and US instances (about 120 for one seed)."""
    return [m for seed in range(n_seeds) for kind in ("MG", "US") for m in mutants(kind, seed)]


def write_mutant(m: Mutant, path: Path) -> Path:
    """The file pynetdicom would spool for this C-STORE (also what an SCU can send by path)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = m.sop_class
    meta.MediaStorageSOPInstanceUID = m.sop_uid
    meta.TransferSyntaxUID = m.ts
    buf = io.BytesIO()
    buf.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(buf, meta, enforce_standard=False)
    path.write_bytes(buf.getvalue() + m.body)
    return path


def valid_file(kind: str, path: Path, seed: int = 0) -> tuple[Mutant, Path]:
    _, m = _valid(kind, seed)
    return m, write_mutant(m, path)
