"""Comprehensive 3D SR with a TID 1500 Measurement Report root (highdicom), per IHE AIR.

Per mammography lesion: a Planar ROI group (TID 1410) with the SCOORD polygon, the lesion score,
the image's predicted class and the calibrated decision, plus a second group with the same
tracking identifier that points at the lesion's SEG segment. Per image: a TID 1501 group with
the four calibrated class probabilities, the malignancy probability and the decision. Per slide:
a TID 1501 group with the metastasis probability and decision, a Planar ROI per top tile and a
link to the attention map's SEG segment. Per ultrasound study: a Planar ROI with the lesion region
the recurrence features came from, its long/short axis and area, and where the region came from
(an SR, the user, or automatic). Recurrence (case level): a TID 1501 group with the risk
score, the 3/5/7-year risk and the risk group. Per mammography lesion with similar reference
pathology (the cross-modal model), a container labelled as synthetic reference examples, not the
patient's pathology (:mod:`cds.writers.sr_similar`). When the model is synthetic-trained, the notice
is written as a TEXT item in the report's "Qualitative Evaluations" container and in every
algorithm identification.

Concepts without a standard code use the private coding scheme ``99BCDS`` (declared in the
Coding Scheme Identification Sequence).
"""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
from highdicom.sr import CodedConcept
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from cds.contracts.domain import (
    NOT_FOR_CLINICAL_USE,
    Calibrated,
    MammoImageFinding,
    ModelIdentity,
    RecurrenceResult,
    SlideTile,
    StudyAnalysis,
)
from cds.writers import sr_archive as archive
from cds.writers import sr_quality as q
from cds.writers import sr_similar as similar
from cds.writers.common import SCHEME, SERIES_NUMBER, add_contributing_equipment, derived_uid, project_code

# Concept names (private) and values
MALIGNANCY_PROBABILITY = project_code("MALPROB", "Malignancy probability")
METASTASIS_PROBABILITY = project_code("METPROB", "Lymph node metastasis probability")
LESION_SCORE = project_code("LESSCORE", "Lesion score")
ATTENTION = project_code("ATTN", "Attention weight")
CLASS_PROBABILITY = {c: project_code(f"P-{c.upper()}", f"Probability {c.replace('_', ' ')}")
                     for c in ("normal", "benign", "in_situ", "invasive")}
PREDICTED_CLASS = project_code("PREDCLS", "Predicted class")
CLASS_VALUE = {c: project_code(c.upper(), c.replace("_", " ").capitalize())
               for c in ("normal", "benign", "in_situ", "invasive")}
DECISION = project_code("DECISION", "Decision at calibrated threshold")
THRESHOLD = project_code("THRESH", "Decision threshold")
RISK_SCORE = project_code("RISKSCORE", "Recurrence risk score")
RISK_AT = {y: project_code(f"RISK{y}Y", f"Risk of recurrence by {y} years") for y in (3, 5, 7)}
RISK_GROUP = project_code("RISKGROUP", "Recurrence risk group")
RISK_GROUP_VALUE = {"high": project_code("HIGH", "High risk"), "low": project_code("LOW", "Low risk")}
NOTICE = project_code("NOTICE", "Notice")
POSITIVE = CodedConcept("10828004", "SCT", "Positive")
NEGATIVE = CodedConcept("260385009", "SCT", "Negative")
UNITLESS = codes.UCUM.NoUnits
# TID 1500 "Procedure reported" is drawn from CID 100 (Quantitative Diagnostic Imaging
# Procedures), which has no mammography, microscopy or ultrasound code: PixelMed rejects
# 71651007/104157003/16310003 there. "Imaging procedure" is in CID 100; the modality itself is in
# the source images and the report's Series.
IMAGING_PROCEDURE = CodedConcept("363679005", "SCT", "Imaging procedure")
REGION_SOURCE = project_code("REGSRC", "Lesion region source")
REGION_SOURCE_VALUE = {"sr": project_code("REGSR", "Region drawn in a structured report"),
                       "user": project_code("REGUSER", "Region given by the user"),
                       "automatic": project_code("REGAUTO", "Region found automatically")}
US_SIZE = (("original_shape2D_MajorAxisLength", codes.SCT.LongAxis, codes.UCUM.Millimeter),
           ("original_shape2D_MinorAxisLength", codes.SCT.ShortAxis, codes.UCUM.Millimeter),
           ("original_shape2D_PixelSurface", codes.SCT.Area, codes.UCUM.SquareMillimeter))
FINDING_LESION = CodedConcept("4147007", "SCT", "Mass")
FINDING_IMAGE = CodedConcept("121071", "DCM", "Finding")


def _algorithm(model: ModelIdentity) -> hd.sr.AlgorithmIdentification:
    params = [model.notice] if model.notice else None
    return hd.sr.AlgorithmIdentification(name=model.name[:64], version=model.version[:64],
                                         parameters=params, manufacturer=model.manufacturer)


def _prob(name: CodedConcept, value: float, model: ModelIdentity) -> hd.sr.Measurement:
    return hd.sr.Measurement(name=name, value=float(value), unit=UNITLESS)


def _decision(cal: Calibrated) -> hd.sr.QualitativeEvaluation:
    return hd.sr.QualitativeEvaluation(DECISION, POSITIVE if cal.positive else NEGATIVE)


def _observation_context(model: ModelIdentity) -> hd.sr.ObservationContext:
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=model.device_uid, name=model.name[:64], manufacturer_name=model.manufacturer[:64],
        model_name=model.version[:64])
    return hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
        observer_type=codes.DCM.Device, observer_identifying_attributes=device))


def _notice_container(model: ModelIdentity) -> hd.sr.ContainerContentItem | None:
    if not model.synthetic_trained:
        return None
    box = hd.sr.ContainerContentItem(name=CodedConcept("C0034375", "UMLS", "Qualitative Evaluations"),
                                     relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
    box.ContentSequence = [hd.sr.TextContentItem(
        name=NOTICE, value=f"synthetic-trained, not for clinical use. {NOT_FOR_CLINICAL_USE}",
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)]
    return box


def _tracking(uid: str, ident: str) -> hd.sr.TrackingIdentifier:
    return hd.sr.TrackingIdentifier(uid=uid, identifier=ident[:64])


def _report(model: ModelIdentity, procedure: CodedConcept, groups: list, evidence: list[Dataset],
            study_key: str, kind: str, instance_number: int = 1) -> hd.sr.Comprehensive3DSR:
    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(model), procedure_reported=procedure,
        imaging_measurements=groups, title=codes.cid7021.ImagingMeasurementReport)
    notice = _notice_container(model)
    if notice is not None:
        report[0].ContentSequence.append(notice)
    key = f"{study_key}/{model.name}/{model.version}/{kind}"
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence, content=report[0],
        series_instance_uid=derived_uid(key, "series"), series_number=SERIES_NUMBER[kind],
        sop_instance_uid=derived_uid(key, "instance"), instance_number=instance_number,
        manufacturer=model.manufacturer[:64], is_complete=True, is_final=False,
        series_description=(f"AI results {model.name}"
                            + (" - NOT FOR CLINICAL USE" if model.synthetic_trained else ""))[:64],
    )
    sr.ManufacturerModelName = model.name[:64]
    sr.SoftwareVersions = model.version[:64]
    ident = Dataset()
    ident.CodingSchemeDesignator = SCHEME
    ident.CodingSchemeName = "breast-cds private concepts"
    ident.CodingSchemeResponsibleOrganization = "breast-cds open-source project"
    sr.CodingSchemeIdentificationSequence = [ident]
    add_contributing_equipment(sr, [model], None)
    return sr


def _segments_by_tracking(segs: list[Dataset]) -> dict[str, tuple[Dataset, int]]:
    """Tracking UID -> (SEG, segment number) for every segment of ``segs``."""
    seg_by_tracking: dict[str, tuple[Dataset, int]] = {}
    for seg in segs:
        for item in seg.SegmentSequence:
            seg_by_tracking[str(item.TrackingUID)] = (seg, int(item.SegmentNumber))
    return seg_by_tracking


def study_sr(analysis: StudyAnalysis, sources: dict[str, Dataset],
             segs: list[Dataset]) -> hd.sr.Comprehensive3DSR:
    """The TID 1500 report of one study's analysis.

    ``sources`` maps SOP Instance UID -> header of each source image; ``segs`` are the SEG
    objects written for this analysis (their segments are referenced by tracking UID).
    """
    seg_by_tracking = _segments_by_tracking(segs)
    model = analysis.model
    if analysis.mammography is not None:
        groups, evidence = _mammography_groups(analysis, sources, seg_by_tracking)
    elif analysis.slide is not None:
        groups, evidence = _slide_groups(analysis, sources, segs)
    elif analysis.ultrasound is not None:
        groups, evidence = _ultrasound_groups(analysis, sources)
    else:
        raise ValueError(f"study {analysis.study_instance_uid} ({analysis.modality}): the analysis has "
                         "no mammography, slide or ultrasound result; no SR writer for it")
    sr = _report(model, IMAGING_PROCEDURE, groups, evidence + list(segs),
                 analysis.study_instance_uid, "sr")
    q.add_notes(sr, q.study_notes(analysis))
    if analysis.mammography is not None:
        archive.add_not_analysed(sr, analysis.mammography)
        similar.add_similar(sr, analysis, sources)  # reference examples, never this patient's pathology
    add_contributing_equipment(sr, [model], analysis.created_at)
    return sr


def _mammography_groups(analysis: StudyAnalysis, sources: dict[str, Dataset],
                        seg_by_tracking: dict[str, tuple[Dataset, int]]) -> tuple[list, list[Dataset]]:
    """Per image: its class/malignancy group, then each lesion's ROI and SEG-reference groups."""
    model = analysis.model
    groups: list = []
    for img in analysis.mammography.images:
        src = sources.get(img.sop_instance_uid)
        if src is None:
            raise ValueError(f"source image {img.sop_instance_uid} missing for SR of study "
                             f"{analysis.study_instance_uid}")
        groups.append(_mammography_image_group(img, src, model, analysis.mammography.grade_labels))
        groups += _mammography_lesion_groups(img, src, model, seg_by_tracking)
    evidence = [sources[i.sop_instance_uid] for i in analysis.mammography.images]
    return groups, evidence


def _mammography_qualitative(img: MammoImageFinding) -> list[hd.sr.QualitativeEvaluation]:
    """The image's predicted class and its calibrated malignancy decision."""
    return q.decision_or_not(img.domain, [hd.sr.QualitativeEvaluation(PREDICTED_CLASS, CLASS_VALUE[img.predicted_class]),
                                          _decision(img.malignancy)], DECISION)


def whole_image_region(src: Dataset, *, volume: bool = False) -> hd.sr.ImageRegion:
    """The whole image (total pixel matrix for a slide) as a closed polyline.

    Image-level results are written as TID 1410 groups whose region is the whole image rather
    than as TID 1501 groups: in a report that also references SEG frames, PixelMed's TID 1500
    validator takes every measurement group for TID 1410 and flags a 1501 group as missing its
    region. The whole-image region states the same scope explicitly.
    """
    rows = float(src.get("TotalPixelMatrixRows", src.Rows))
    cols = float(src.get("TotalPixelMatrixColumns", src.Columns))
    corners = np.array([[0, 0], [cols, 0], [cols, rows], [0, rows], [0, 0]], dtype=np.float32)
    kw = {"pixel_origin_interpretation": hd.sr.PixelOriginInterpretationValues.VOLUME} if volume else {}
    return hd.sr.ImageRegion(graphic_type=hd.sr.GraphicTypeValues.POLYLINE, graphic_data=corners,
                             source_image=hd.sr.SourceImageForRegion.from_source_image(src), **kw)


def _mammography_image_group(img: MammoImageFinding, src: Dataset, model: ModelIdentity,
                             grade_labels: list[str]) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    """Group of one image (region: the whole image): class probabilities, malignancy probability,
    threshold, decision."""
    measurements = [_prob(CLASS_PROBABILITY[c], p, model) for c, p in img.class_probabilities.items()]
    measurements += [_prob(MALIGNANCY_PROBABILITY, img.malignancy.probability, model),
                     _prob(THRESHOLD, img.malignancy.threshold, model)]
    extra = [q.operating_point_items(img.malignancy), q.domain_items(img.domain), q.grade_items(img, grade_labels)]
    measurements += [m for ms, _ in extra for m in ms]
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(derived_uid(img.sop_instance_uid, model.name, "image"),
                                      f"image-{img.laterality}{img.view}"),
        referenced_region=whole_image_region(src),
        finding_type=FINDING_IMAGE, algorithm_id=_algorithm(model),
        measurements=measurements,
        qualitative_evaluations=_mammography_qualitative(img) + [e for _, es in extra for e in es]
        + archive.image_items(img))


def _mammography_lesion_groups(img: MammoImageFinding, src: Dataset, model: ModelIdentity,
                               seg_by_tracking: dict[str, tuple[Dataset, int]]) -> list:
    """Per lesion: a Planar ROI with its polygon, then (if segmented) one pointing at its SEG segment."""
    groups: list = []
    region_src = hd.sr.SourceImageForRegion.from_source_image(src)
    for lesion in img.lesions:
        tracking = _tracking(lesion.tracking_uid, lesion.tracking_id)
        poly = np.asarray(lesion.polygon, dtype=np.float32)
        groups.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking,
            referenced_region=hd.sr.ImageRegion(graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
                                                graphic_data=poly, source_image=region_src),
            finding_type=FINDING_LESION, algorithm_id=_algorithm(model),
            measurements=[_prob(LESION_SCORE, lesion.score, model),
                          _prob(MALIGNANCY_PROBABILITY, img.malignancy.probability, model)],
            qualitative_evaluations=_mammography_qualitative(img)))
        if lesion.tracking_uid in seg_by_tracking:
            seg, number = seg_by_tracking[lesion.tracking_uid]
            groups.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=_tracking(lesion.tracking_uid, lesion.tracking_id),
                referenced_segment=_segment_ref(seg, number, src),
                finding_type=FINDING_LESION, algorithm_id=_algorithm(model),
                measurements=[_prob(LESION_SCORE, lesion.score, model)]))
    return groups


def _slide_groups(analysis: StudyAnalysis, sources: dict[str, Dataset],
                  segs: list[Dataset]) -> tuple[list, list[Dataset]]:
    """The slide's metastasis group, a Planar ROI per top tile, and a link per attention-map segment."""
    sl, model = analysis.slide, analysis.model
    src = sources.get(sl.base_sop_instance_uid)
    if src is None:
        raise ValueError(f"slide base image {sl.base_sop_instance_uid} missing for SR of study "
                         f"{analysis.study_instance_uid}")
    groups: list = [hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(derived_uid(sl.base_sop_instance_uid, model.name, "slide"),
                                      "slide"),
        referenced_region=whole_image_region(src, volume=True),
        finding_type=FINDING_IMAGE, algorithm_id=_algorithm(model),
        measurements=[_prob(METASTASIS_PROBABILITY, sl.metastasis.probability, model),
                      _prob(THRESHOLD, sl.metastasis.threshold, model)]
        + q.operating_point_items(sl.metastasis)[0] + q.domain_items(sl.domain)[0],
        qualitative_evaluations=q.decision_or_not(sl.domain, [_decision(sl.metastasis)], DECISION)
        + q.operating_point_items(sl.metastasis)[1] + q.domain_items(sl.domain)[1])]
    region_src = hd.sr.SourceImageForRegion.from_source_image(src)
    groups += [_slide_tile_group(sl.base_sop_instance_uid, k, t, region_src, model)
               for k, t in enumerate(sl.top_tiles, start=1)]
    # the SEG is written on a pyramid level (map_level_sop_instance_uid): its segments' source
    # image is that level, while the top-tile boxes are in base-level pixels
    map_src = sources.get(sl.map_level_sop_instance_uid) if sl.map_level_sop_instance_uid else src
    if map_src is None:
        raise ValueError(f"slide map level {sl.map_level_sop_instance_uid} missing for SR of study "
                         f"{analysis.study_instance_uid}")
    for seg in segs:
        for item in seg.SegmentSequence:
            groups.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=_tracking(str(item.TrackingUID), str(item.TrackingID)),
                referenced_segment=_segment_ref(seg, int(item.SegmentNumber), map_src),
                finding_type=FINDING_IMAGE, algorithm_id=_algorithm(model)))
    return groups, [src] + ([map_src] if map_src is not src else [])


def _slide_tile_group(base_uid: str, k: int, t: SlideTile, region_src: hd.sr.SourceImageForRegion,
                      model: ModelIdentity) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    """Planar ROI of the k-th top tile (1-based): its box, attention and (if known) tile probability."""
    box = np.array([[t.x, t.y], [t.x + t.width, t.y], [t.x + t.width, t.y + t.height],
                    [t.x, t.y + t.height], [t.x, t.y]], dtype=np.float32)
    ms = [_prob(ATTENTION, t.attention, model)]
    if t.probability is not None:
        ms.append(_prob(METASTASIS_PROBABILITY, t.probability, model))
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(derived_uid(base_uid, model.name, f"tile{k}"), f"top-tile-{k}"),
        referenced_region=hd.sr.ImageRegion(
            graphic_type=hd.sr.GraphicTypeValues.POLYLINE, graphic_data=box,
            source_image=region_src,
            pixel_origin_interpretation=hd.sr.PixelOriginInterpretationValues.VOLUME),
        finding_type=FINDING_IMAGE, algorithm_id=_algorithm(model), measurements=ms)


def _ultrasound_groups(analysis: StudyAnalysis, sources: dict[str, Dataset]) -> tuple[list, list[Dataset]]:
    """The lesion region whose features feed the recurrence model, with its size and source.

    No diagnosis is made from ultrasound here; the report lets the sonographer see (and
    correct, by sending an SR with their own region) which region the model used.
    """
    us, model = analysis.ultrasound, analysis.model
    src = sources.get(us.sop_instance_uid)
    if src is None:
        raise ValueError(f"ultrasound image {us.sop_instance_uid} missing for SR of study "
                         f"{analysis.study_instance_uid}")
    x0, y0, x1, y1 = us.lesion_box
    box = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], dtype=np.float32)
    sizes = [hd.sr.Measurement(name=name, value=float(us.radiomics[key]), unit=unit)
             for key, name, unit in US_SIZE if key in us.radiomics]
    group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(derived_uid(us.sop_instance_uid, model.name, "lesion"), "us-lesion"),
        referenced_region=hd.sr.ImageRegion(graphic_type=hd.sr.GraphicTypeValues.POLYLINE, graphic_data=box,
                                            source_image=hd.sr.SourceImageForRegion.from_source_image(src)),
        finding_type=FINDING_LESION, algorithm_id=_algorithm(model), measurements=sizes or None,
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(REGION_SOURCE, REGION_SOURCE_VALUE[us.box_source])])
    return [group], [src]


def _segment_frames(seg: Dataset, number: int) -> list[int]:
    """Frame numbers of one segment. highdicom moves Segment Identification into the shared
    functional groups when there is a single segment, which its own from_segmentation misses."""
    shared = seg.SharedFunctionalGroupsSequence[0]
    if "SegmentIdentificationSequence" in shared:
        return list(range(1, int(seg.NumberOfFrames) + 1))
    return [i for i, fg in enumerate(seg.PerFrameFunctionalGroupsSequence, start=1)
            if int(fg.SegmentIdentificationSequence[0].ReferencedSegmentNumber) == number]


def _segment_ref(seg: Dataset, number: int, src: Dataset) -> hd.sr.ReferencedSegmentationFrame:
    """Reference the frames of one SEG segment, plus its source image.

    The SOP Instance Reference macro forbids Referenced Segment Number next to Referenced Frame
    Number (dciodvfy errors); in a SEG each frame belongs to exactly one segment, so the frame
    numbers alone identify the segment and the segment number is dropped from the item.
    """
    ref = hd.sr.ReferencedSegmentationFrame(
        sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID,
        frame_number=_segment_frames(seg, number), segment_number=number,
        source_image=hd.sr.SourceImageForSegmentation.from_source_image(src))
    sop_item = ref[0].ReferencedSOPSequence[0]
    if "ReferencedSegmentNumber" in sop_item:
        del sop_item.ReferencedSegmentNumber
    return ref


def recurrence_group(rec: RecurrenceResult) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    model = rec.model
    ms = [hd.sr.Measurement(name=RISK_SCORE, value=float(rec.risk_score), unit=UNITLESS,
                            algorithm_id=_algorithm(model))]
    ms += [_prob(RISK_AT[y], p, model) for y, p in sorted(rec.absolute_risk.items()) if y in RISK_AT]
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(derived_uid(model.name, model.version, rec.created_at.isoformat()),
                                      "recurrence"),
        finding_type=FINDING_IMAGE, algorithm_id=_algorithm(model), measurements=ms,
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(RISK_GROUP, RISK_GROUP_VALUE[rec.risk_group])])


def case_sr(rec: RecurrenceResult, evidence: list[Dataset], study_uid: str) -> hd.sr.Comprehensive3DSR:
    """A TID 1500 report with the recurrence risk, placed in the study whose images it used."""
    if not evidence:
        raise ValueError("case SR needs at least one source instance of the study it belongs to")
    sr = _report(rec.model, IMAGING_PROCEDURE,
                 [recurrence_group(rec)], evidence, study_uid, "case-sr")
    return sr


def save(sr: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sr.save_as(path, enforce_file_format=True)
    return path
