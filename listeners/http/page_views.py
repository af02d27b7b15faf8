"""View models of the worklist and the case page: plain dicts the templates show.

Everything is read from the store (the single source of truth); the pictures come from
:mod:`reports.pdf` so the page and the clinician PDF agree. A case's state is derived, newest
evidence first: a dead job or output makes it *failed*, then *receiving* (a study still arriving),
*analysing* (jobs or outputs in flight), *awaiting review* (an AI result no one has assessed),
*reviewed*, and *results delivered* when nothing in it can be reviewed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cds.contracts.domain import RecurrenceResult, StudyAnalysis
from cds.contracts.handoffs import ResultRow
from cds.contracts.review import ReviewRow
from cds.store import Store
from listeners.http.page_figures import recurrence_curve, slide_thumbnail_attention
from reports import quality as q
from reports.pdf import _fmt, _mammo_image_context, _slide_context

STATES = ("failed", "receiving", "analysing", "awaiting review", "reviewed", "results delivered")
WORKLIST_SCAN = 5000  # cases looked at for one worklist page (a state filter pages over these)


def when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def _job_patient(store: Store, job_id: int | None, cache: dict[int, str | None]) -> str | None:
    if job_id is None:
        return None
    if job_id not in cache:
        job = store.job(job_id)
        cache[job_id] = job.payload.patient_key if job is not None else None
    return cache[job_id]


def _busy_patients(store: Store) -> tuple[set[str], set[str], set[str]]:
    """Patients with a dead job/output, a study still arriving, and work in flight."""
    cache: dict[int, str | None] = {}
    failed: set[str] = set()
    busy: set[str] = set()
    for state, target in (("dead", failed), ("queued", busy), ("running", busy)):
        for job in store.jobs(state=state, limit=10000):
            cache[job.id] = job.payload.patient_key
            target.add(job.payload.patient_key)
    for state, target in (("dead", failed), ("pending", busy), ("delivering", busy)):
        for item in store.outbox_items(state=state, limit=10000):
            pk = _job_patient(store, item.meta.job_id, cache)
            if pk:
                target.add(pk)
    receiving = {s.patient_key for s in store.recent_studies(10000) if s.state == "receiving" and s.patient_key}
    return failed, receiving, busy


def reviewable(rows: list[ResultRow]) -> list[ResultRow]:
    """The newest ``ok`` result per (kind, study, model): what the pages show and clinicians assess."""
    seen: set[tuple[str, str | None, str | None]] = set()
    out = []
    for r in rows:  # newest first
        key = (r.kind, r.study_uid, r.model)
        if r.status != "ok" or r.body is None or key in seen:
            continue
        seen.add(key)
        out.append(r)
    return out


def worklist(store: Store, *, state: str | None, page: int, per_page: int) -> dict[str, Any]:
    """One page of cases, newest first, each with its state and counts of results and reviews."""
    failed, receiving, busy = _busy_patients(store)
    cases = []
    for c in store.case_overview(WORKLIST_SCAN):
        results = reviewable(store.results(patient_key=c.patient_key))
        reviews = store.latest_reviews([r.id for r in results]) if results else {}
        if c.patient_key in failed:
            st = "failed"
        elif c.patient_key in receiving:
            st = "receiving"
        elif c.patient_key in busy:
            st = "analysing"
        elif results and len(reviews) < len(results):
            st = "awaiting review"
        elif results:
            st = "reviewed"
        else:
            st = "results delivered"
        if state and st != state:
            continue
        patient = store.patient(c.patient_key)
        cases.append({"key": c.patient_key, "state": st, "updated": when(c.updated_at),
                      "name": (patient.name if patient else "") or "", "studies": c.n_studies,
                      "modalities": (c.modalities or "").replace(",", ", "), "results": len(results),
                      "reviewed": len(reviews)})
    start = (page - 1) * per_page
    return {"cases": cases[start:start + per_page], "total": len(cases), "page": page, "per_page": per_page,
            "pages": max(1, -(-len(cases) // per_page)), "state": state or "", "states": STATES}


def _review_view(review: ReviewRow | None) -> dict[str, Any] | None:
    if review is None:
        return None
    return {"outcome": review.outcome.value, "reason": review.reason, "decision": review.decision or "",
            "removed": ", ".join(str(i) for i in review.removed_lesions),
            "by": review.reviewer_display or review.reviewer, "at": when(review.created_at), "sr_uid": review.sr_uid}


def _source_paths(store: Store, a: StudyAnalysis) -> dict[str, Path]:
    uids = [img.sop_instance_uid for img in a.mammography.images] if a.mammography else []
    paths = {u: store.instance_path(u) for u in uids}
    return {u: p for u, p in paths.items() if p is not None}


def _study_finding(store: Store, row: ResultRow, a: StudyAnalysis) -> dict[str, Any]:
    """A mammography or slide result: decision, probability, operating point, domain, figures."""
    out: dict[str, Any] = {"kind": a.modality, "study_uid": a.study_instance_uid, "images": [], "slide": None,
                           "lesions": []}
    if a.mammography is not None:
        m = a.mammography
        dom = q.analysis_domain(a)
        out.update(title="Mammography malignancy (exam)", probability=_fmt(m.exam_malignancy.probability),
                   decision=q.decision_text(m.exam_malignancy, dom, "suspicious", "not suspicious"),
                   decisions=("suspicious", "not suspicious"),
                   operating_point=q.operating_point_text(m.exam_malignancy), ood=q.out_of_domain(dom),
                   domain=q.domain_text(dom))
        paths = _source_paths(store, a)
        out["images"] = [_mammo_image_context(img, a.work_dir, paths, m.grade_labels, m.similar_pathology)
                         for img in m.images]
        out["lesions"] = [{"index": i, "label": f"{img.laterality} {img.view} {les.tracking_id} ({les.score:.2f})"}
                          for i, (img, les) in enumerate((img, les) for img in m.images for les in img.lesions)]
    elif a.slide is not None:
        s = a.slide
        out.update(title="Lymph-node metastasis", probability=_fmt(s.metastasis.probability),
                   decision=q.decision_text(s.metastasis, s.domain, "metastasis suspected", "not suspected"),
                   decisions=("metastasis suspected", "not suspected"),
                   operating_point=q.operating_point_text(s.metastasis), ood=q.out_of_domain(s.domain),
                   domain=q.domain_text(s.domain))
        slide = _slide_context(a)
        levels = [p for p in (store.instance_path(u) for u in s.sop_instance_uids) if p is not None]
        slide["thumbnail"] = slide_thumbnail_attention(a, levels)
        out["slide"] = slide
    else:
        out.update(title=f"{a.modality} analysis", probability="-", decision=row.summary or "-",
                   decisions=(), operating_point="-", ood=False, domain="")
    return out


def _recurrence_finding(rec: RecurrenceResult) -> dict[str, Any]:
    risks = ", ".join(f"{y} y {_fmt(p)}" for y, p in sorted(rec.absolute_risk.items()))
    return {"kind": "recurrence", "title": f"Recurrence risk ({rec.scope or 'model'})",
            "probability": risks, "decision": f"{rec.risk_group} risk group", "decisions": ("high risk group",
                                                                                          "low risk group"),
            "operating_point": f"risk groups at cut-off {rec.cutoff:.3f} (score {rec.risk_score:.3f})",
            "ood": False, "domain": "", "images": [], "slide": None, "lesions": [], "curve": recurrence_curve(rec),
            "present": ", ".join(rec.modalities_present) or "none",
            "missing": ", ".join(rec.modalities_missing) or "none",
            "inputs": [{"name": v.variable, "value": v.original or str(v.value) + (f" {v.unit}" if v.unit else ""),
                        "note": v.note, "source": (v.source.display or v.source.reference) if v.source else "-"}
                       for v in rec.clinical_values],
            "not_used": [{"name": n.variable, "reason": n.reason, "source": n.source} for n in rec.not_used],
            "encoding": list(rec.input_encoding),
            "sources": [{"kind": i.kind, "reference": i.reference, "display": i.display} for i in rec.inputs]}


def case_page(store: Store, patient_key: str) -> dict[str, Any] | None:
    """Everything the case page shows; None when the store knows no such patient."""
    patient = store.patient(patient_key)
    if patient is None:
        return None
    rows = reviewable(store.results(patient_key=patient_key))
    reviews = store.latest_reviews([r.id for r in rows]) if rows else {}
    findings, models = [], {}
    for row in rows:
        if row.kind == "study_analysis":
            a = StudyAnalysis.model_validate(row.body)
            f, ident = _study_finding(store, row, a), a.model
        else:
            rec = RecurrenceResult.model_validate(row.body)
            f, ident = _recurrence_finding(rec), rec.model
        models[ident.name] = {"name": ident.name, "version": ident.version, "device_uid": ident.device_uid,
                              "intended_use": ident.intended_use, "notice": ident.notice}
        review = _review_view(reviews.get(row.id))
        f.update(id=row.id, model=f"{ident.name} {ident.version}", model_name=ident.name, created=when(row.created_at),
                 review=review, preliminary=review is None)
        findings.append(f)
    findings.sort(key=lambda f: (f["kind"] == "recurrence", f["kind"]))  # images first, then the case
    other = [{"kind": r.kind, "model": r.model or "-", "status": r.status, "summary": r.summary or ""}
             for r in store.results(patient_key=patient_key) if r.status != "ok"][:50]
    return {"key": patient_key, "patient": patient, "findings": findings, "models": list(models.values()),
            "other": other, "notice": next((m["notice"] for m in models.values() if m["notice"]), "")}
