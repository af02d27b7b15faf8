"""A synthetic exam's files as the StudyInput the pipeline hands a model."""

from __future__ import annotations

import pydicom

from cds.contracts.domain import InstanceRecord, PatientRef, StudyInput


def study_input(truth, patient: PatientRef) -> StudyInput:
    insts = []
    for im in truth.images:
        ds = pydicom.dcmread(im.path, stop_before_pixels=True)
        insts.append(InstanceRecord(sop_instance_uid=ds.SOPInstanceUID, sop_class_uid=ds.SOPClassUID,
                                    study_instance_uid=ds.StudyInstanceUID,
                                    series_instance_uid=ds.SeriesInstanceUID, modality="MG", path=im.path))
    return StudyInput(study_instance_uid=truth.study_instance_uid, modality="MG", patient=patient,
                      instances=insts)
