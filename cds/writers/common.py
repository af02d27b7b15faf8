"""Pieces every DICOM result writer shares: deterministic UIDs, algorithm identification,
Contributing Equipment, and reading the source images' headers.

UIDs of outputs are derived (UUID-5, "2.25." form) from the source study, the model name and
version and the output type, so that re-running the same job produces the same SOP Instance
UIDs: the PACS then treats a re-send as the same object instead of storing a duplicate.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path

import pydicom
from highdicom import AlgorithmIdentificationSequence
from highdicom.sr import CodedConcept
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from cds.contracts.domain import ModelIdentity
from cds.contracts.errors import PermanentError

_OUTPUT_NAMESPACE = uuid.UUID("3c0f5e0e-4a53-4f5e-8f0a-5d9b8f1f6c21")

# Series numbers of our results, kept apart from the modality's own series.
SERIES_NUMBER = {"seg": 9101, "sm-seg": 9102, "sr": 9201, "case-sr": 9202, "pdf": 9301}

# IHE AIR asks for "Processing Algorithm" as the purpose of the algorithm's Contributing
# Equipment item. The coded value is DCM 109103 (CID 7005); its standard meaning in the
# current code dictionary is "Modifying Equipment", which is what we write so that validators
# that check code meanings stay quiet; the contribution description carries the AIR wording.
PURPOSE_PROCESSING_ALGORITHM = CodedConcept.from_code(codes.DCM.ModifyingEquipment)


SCHEME = "99BCDS"  # the project's private coding scheme for concepts no standard names
TRACKING_ID = CodedConcept("112039", "DCM", "Tracking Identifier")
TRACKING_UID = CodedConcept("112040", "DCM", "Tracking Unique Identifier")


def project_code(value: str, meaning: str) -> CodedConcept:
    return CodedConcept(value, SCHEME, meaning)


def output_key(study_uid: str, model: ModelIdentity, output_type: str) -> str:
    """Idempotency key of one output: same study, model, version and type -> same key."""
    return f"{study_uid}/{model.name}/{model.version}/{output_type}"


def derived_uid(*parts: str) -> str:
    """A stable DICOM UID from the given parts (the same inputs always give the same UID)."""
    return "2.25." + str(uuid.uuid5(_OUTPUT_NAMESPACE, "\x00".join(parts)).int)


def algorithm_identification(model: ModelIdentity) -> AlgorithmIdentificationSequence:
    """Algorithm Identification (SEG segment descriptions) naming the model and its version."""
    return AlgorithmIdentificationSequence(
        name=model.name[:64],
        family=codes.cid7162.ArtificialIntelligence,
        version=model.version[:64],
        source=model.manufacturer[:64],
    )


def contributing_equipment_item(model: ModelIdentity, when: datetime | None = None) -> Dataset:
    """One Contributing Equipment Sequence item naming the algorithm (IHE AIR).

    Built with pydicom rather than highdicom.ContributingEquipment because the latter has no
    Device UID argument and AIR asks for it.
    """
    item = Dataset()
    item.PurposeOfReferenceCodeSequence = [PURPOSE_PROCESSING_ALGORITHM]
    item.Manufacturer = model.manufacturer[:64]
    item.ManufacturerModelName = model.name[:64]
    item.SoftwareVersions = model.version[:64]
    item.DeviceUID = model.device_uid
    item.ContributionDescription = (
        f"Processing Algorithm: {model.name} {model.version}"
        + (f". {model.notice}" if model.notice else "")
    )[:1024]
    if when is not None:
        item.ContributionDateTime = when.strftime("%Y%m%d%H%M%S")
    return item


def add_contributing_equipment(ds: Dataset, models: list[ModelIdentity],
                               when: datetime | None = None) -> None:
    """Append one Contributing Equipment item per algorithm to ``ds`` (keeps existing items)."""
    seq = list(getattr(ds, "ContributingEquipmentSequence", []))
    seen = {getattr(i, "DeviceUID", None) for i in seq}
    for m in models:
        if m.device_uid not in seen:
            seq.append(contributing_equipment_item(m, when))
            seen.add(m.device_uid)
    ds.ContributingEquipmentSequence = seq


# Type 2 attributes of the Patient and General Study modules that the outputs copy from their
# source. Archive conversions (digitized film, public data sets as Secondary Capture) often leave
# them out entirely; an output must still carry them, empty, as the IODs require.
_COPIED_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
                 "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber")


def read_headers(paths: list[Path]) -> list[Dataset]:
    """Read source instances without pixel data, with a clear error naming a bad file; absent
    Type 2 patient/study attributes are added empty (in memory only) for the writers to copy."""
    out = []
    for p in paths:
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True)
        except Exception as exc:  # pydicom raises several types for bad files
            raise PermanentError(f"cannot read source DICOM {p}: {exc}") from exc
        for keyword in _COPIED_TYPE2:
            if keyword not in ds:
                setattr(ds, keyword, "")
        out.append(ds)
    return out
