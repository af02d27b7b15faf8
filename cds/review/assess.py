"""The review stage: record a clinician's accept / modify / reject of one AI result, three ways.

1. a DICOM SR (:mod:`cds.writers.assessment_sr`) in the result's study that references the AI's
   SR and SEGs by SOP Instance UID and names the clinician, queued to every DICOM destination
   the AI's SR went to (outbox key ``review:<id>:sr``);
2. on FHIR, the result's RiskAssessment moves from preliminary to final / amended /
   entered-in-error (a conditional update, see :mod:`cds.fhir.writeback`), with a Provenance
   naming the clinician (``review:<id>:riskassessment``, ``review:<id>:provenance``);
3. a row in the store (metrics, pages) and an audit record.

A second review of the same result supersedes the first: its SR lists the previous assessment
SR as predecessor, and its status change wins on the FHIR server (the review tag is compared).
Validation happens before anything is written, so a refused review leaves no trace but its error.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from pathlib import Path

import pydicom

from cds.audit.trail import audit_assessment
from cds.contracts.handoffs import NewOutput, OutboxMeta, ResultRow
from cds.contracts.review import Principal, ReviewOutcome, ReviewRequest, ReviewRow
from cds.contracts.settings import Settings
from cds.review.errors import InvalidReview, ResultNotFound
from cds.review.targets import AiOutputs, ai_outputs, lesions_of, read_dicom, read_resource, review_sr_path
from cds.store import Store
from cds.writers import assessment_sr as asr
from cds.writers import fhir_resources as fr
from cds.writers.common import derived_uid

log = logging.getLogger(__name__)


def validate(store: Store, result_id: int, request: ReviewRequest) -> tuple[ResultRow, AiOutputs, list[asr.RemovedFinding]]:
    """The result, its AI outputs and the findings the clinician removes; or ResultNotFound /
    InvalidReview naming what is wrong and what is expected."""
    result = store.review_target(result_id)
    if result is None:
        raise ResultNotFound(f"result {result_id} does not exist")
    if result.status != "ok":
        raise InvalidReview(f"result {result_id} has status '{result.status}': there is no AI result to assess "
                            "(expected a result with status 'ok')")
    reason = request.reason.strip()
    if request.outcome is not ReviewOutcome.accepted and not reason:
        raise InvalidReview(f"a '{request.outcome.value}' review needs a reason (field 'reason' is empty)")
    if request.outcome is not ReviewOutcome.modified and (request.decision is not None or request.removed_lesions):
        raise InvalidReview("'decision' and 'removed_lesions' belong to a 'modified' review only "
                            f"(outcome is '{request.outcome.value}')")
    if request.outcome is ReviewOutcome.modified and not ((request.decision or "").strip() or request.removed_lesions):
        raise InvalidReview("a 'modified' review says what changed: expected a 'decision' or 'removed_lesions'")
    lesions = lesions_of(result)
    bad = sorted({i for i in request.removed_lesions if not 0 <= i < len(lesions)})
    if bad:
        raise InvalidReview(f"removed_lesions {bad} do not exist: result {result_id} has {len(lesions)} "
                            f"lesion(s) (valid indices 0..{len(lesions) - 1})" if lesions else
                            f"removed_lesions {bad} do not exist: result {result_id} has no lesions")
    outputs = ai_outputs(store, result)
    if outputs.empty:
        raise InvalidReview(f"result {result_id} has no AI outputs (SR or RiskAssessment) to assess")
    return result, outputs, [lesions[i] for i in sorted(set(request.removed_lesions))]


def _previous_sr(settings: Settings, store: Store, result_id: int) -> pydicom.Dataset | None:
    """The latest earlier assessment SR of the same result, which the new one supersedes."""
    for row in store.reviews_of(result_id):
        path = review_sr_path(settings.work_dir, row.id)
        if row.sr_uid and path.exists():
            return pydicom.dcmread(path, stop_before_pixels=True)
    return None


def _queue_sr(settings: Settings, store: Store, review: ReviewRow, outputs: AiOutputs,
              assessment: asr.Assessment, previous: pydicom.Dataset | None) -> None:
    """Write the assessment SR and queue it to each DICOM destination of the AI's SR."""
    ai_sr = outputs.sr[0]
    assessed = [read_dicom(ai_sr)] + [read_dicom(s) for s in outputs.segs]
    sr = asr.assessment_sr(assessment, assessed, key=f"review:{review.id}", manufacturer="breast-cds",
                           organization=str(assessed[0].get("InstitutionName", "")) or settings.ae_title,
                           previous=previous)
    if str(sr.SOPInstanceUID) != review.sr_uid:
        raise RuntimeError(f"review {review.id}: SR UID mismatch")  # both derive from the same key
    path = asr.save(sr, review_sr_path(settings.work_dir, review.id))
    for n, dest in enumerate(dict.fromkeys(i.destination for i in outputs.sr)):
        store.outbox_add(NewOutput(
            kind="dicom", destination=dest, key=f"review:{review.id}:sr" + (f":{dest}" if n else ""),
            payload_path=path, meta=OutboxMeta(description=f"Assessment SR {sr.SOPInstanceUID} "
                                               f"(review {review.id}, result {review.result_id})",
                                               resource_type="SR")))


def _queue_fhir(store: Store, review: ReviewRow, outputs: AiOutputs, when: datetime,
                removed_findings: list[asr.RemovedFinding]) -> None:
    """The reviewed RiskAssessment(s) and a Provenance each, for the FHIR destination."""
    who = review.reviewer_display or review.reviewer
    removed = [f"lesion {r.tracking_id}" for r in removed_findings]
    for n, item in enumerate(outputs.risks):
        suffix = f":{n}" if n else ""
        ra = fr.reviewed_risk_assessment(read_resource(item), review_id=review.id, outcome=review.outcome.value,
                                         reviewer=who, reason=review.reason, decision=review.decision,
                                         removed=removed, when=when)
        ident = next(i for i in ra.get("identifier", []) if i.get("system") == fr.RESULT_SYSTEM)
        prov_key = f"review:{review.id}:provenance{suffix}"
        prov = fr.review_provenance(key=prov_key, target={"type": "RiskAssessment", "identifier": ident},
                                    reviewer=who, outcome=review.outcome.value, when=when,
                                    sr_uid=review.sr_uid, reason=review.reason)
        for key, resource, rtype in ((f"review:{review.id}:riskassessment{suffix}", ra, "RiskAssessment"),
                                     (prov_key, prov, "Provenance")):
            store.outbox_add(NewOutput(
                kind="fhir", destination=item.destination, key=key,
                payload_path=Path(f"review-{review.id}-{rtype.lower()}{suffix}.json"),
                payload=json.dumps(resource, indent=1).encode(),
                meta=OutboxMeta(description=f"{rtype} {fr.REVIEW_STATUS[review.outcome.value]} "
                                f"(review {review.id})" if rtype == "RiskAssessment" else
                                f"Provenance of review {review.id}", resource_type=rtype)))


def assess(settings: Settings, store: Store, result_id: int, request: ReviewRequest,
           principal: Principal) -> ReviewRow:
    """Record ``principal``'s assessment of result ``result_id`` and queue its SR and FHIR updates.

    Raises :class:`ResultNotFound` (no such result) or :class:`InvalidReview` (the request does
    not fit the result) before anything is written."""
    result, outputs, removed = validate(store, result_id, request)
    previous = _previous_sr(settings, store, result_id)
    now = time.time()
    when = datetime.fromtimestamp(now, UTC)
    display = principal.display_name or principal.name
    review_id = store.add_review(
        result_id=result_id, outcome=request.outcome, reviewer=principal.name, reviewer_display=display,
        patient_key=result.patient_key, study_uid=result.study_uid, model=result.model,
        model_version=result.model_version, reason=request.reason.strip(),
        decision=(request.decision or "").strip() or None, removed_lesions=request.removed_lesions,
        sr_uid="", created_at=now)
    try:
        sr_uid = derived_uid(f"review:{review_id}", "instance") if outputs.sr else ""
        store.set_review_sr(review_id, sr_uid)
        review = store.review(review_id)
        if review is None:
            raise RuntimeError(f"review {review_id} vanished while being recorded")
        if outputs.sr:
            _queue_sr(settings, store, review, outputs, asr.Assessment(
                outcome=request.outcome.value, observer_name=asr.person_name(display), login=principal.name,
                when=when, reason=review.reason, decision=review.decision, removed=removed), previous)
        _queue_fhir(store, review, outputs, when, removed)
    except BaseException:
        store.discard_review(review_id)  # nothing half-recorded: the caller sees the error
        raise
    audit_assessment(settings, user=principal.name, patient_key=result.patient_key, study_uid=result.study_uid or "",
                     review_id=review_id, result_id=result_id, outcome=request.outcome.value)
    log.info("review %d of result %d (%s %s): %s by %s; SR %s", review_id, result_id, result.model,
             result.model_version, request.outcome.value, principal.name, sr_uid or "none (no AI SR)")
    return review
