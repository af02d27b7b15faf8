"""Which instances of an MG study are read, and why the others are not.

Every instance whose SOP class is a 2-D mammography class (Digital Mammography X-Ray, Digital
X-Ray, Secondary Capture with Modality MG) or a tomosynthesis class is looked at. Tomosynthesis,
magnification, spot compression and implant-displaced views, derived crops and ROI masks
(:func:`archive.not_analysed_reason`) and images that cannot be read as mammograms are listed as
:class:`NotAnalysed` with their reason. For Processing images are read only when the study has
no For Presentation image (the same acquisition is usually sent as both).

A study in which nothing can be analysed raises :class:`NothingToAnalyse` naming every instance
and why; the pipeline records that as a ``not_analysed`` result (the job ends, nothing is
dead-lettered, no SR or RiskAssessment is written for a study the model has not read).
"""

from __future__ import annotations

import logging

from cds.contracts.domain import NotAnalysed, StudyInput
from cds.contracts.errors import NothingToAnalyse
from models.mammography.archive import (
    READABLE_SOP_CLASSES,
    TOMOSYNTHESIS_SOP_CLASSES,
    MammoInputError,
    not_analysed_reason,
)
from models.mammography.preprocess import MgImage, read_dataset, read_mg

log = logging.getLogger(__name__)


def _without_path(exc: Exception, path: object) -> str:
    return str(exc).replace(f"{path}: ", "").replace(str(path), "the file")


def study_images(study: StudyInput) -> tuple[list[MgImage], list[NotAnalysed]]:
    """The study's readable mammograms and the instances recognised but not analysed."""
    candidates = [i for i in study.instances
                  if i.sop_class_uid in READABLE_SOP_CLASSES or i.sop_class_uid in TOMOSYNTHESIS_SOP_CLASSES]
    ignored = len(study.instances) - len(candidates)
    if ignored:
        log.info("study %s: %d non-image instances ignored", study.study_instance_uid, ignored)
    readable, skipped = [], []
    for inst in candidates:
        try:
            ds = read_dataset(inst.path, stop_before_pixels=True)
        except MammoInputError as exc:  # one unreadable header: that instance, not the study
            skipped.append(NotAnalysed(sop_instance_uid=inst.sop_instance_uid, reason="unreadable",
                                       detail=_without_path(exc, inst.path)))
            continue
        reason = not_analysed_reason(ds)
        if reason is not None:
            skipped.append(NotAnalysed(sop_instance_uid=inst.sop_instance_uid, reason=reason[0], detail=reason[1]))
        else:
            readable.append(inst)
    presentation = [i for i in readable if READABLE_SOP_CLASSES[i.sop_class_uid] == "for_presentation"]
    images: list[MgImage] = []
    for inst in presentation or readable:
        try:
            images.append(read_mg(inst.path))
        except MammoInputError as exc:
            skipped.append(NotAnalysed(sop_instance_uid=inst.sop_instance_uid, reason="unreadable",
                                       detail=_without_path(exc, inst.path)))
    if skipped:
        log.info("study %s: %d instance(s) not analysed (%s)", study.study_instance_uid, len(skipped),
                 ", ".join(sorted({s.reason for s in skipped})))
    if not images:
        listed = "; ".join(f"{s.sop_instance_uid}: {s.reason} ({s.detail})" for s in skipped)
        # nothing recognised as deliberately unread: bad input, as any unreadable study
        error = NothingToAnalyse if any(s.reason != "unreadable" for s in skipped) else MammoInputError
        raise error(
            f"study {study.study_instance_uid}: no 2-D mammogram could be analysed among "
            f"{len(study.instances)} instances (Digital Mammography X-Ray, Digital X-Ray or Secondary "
            f"Capture with Modality MG expected)" + (f"; not analysed: {listed}" if listed else ""))
    return images, skipped
