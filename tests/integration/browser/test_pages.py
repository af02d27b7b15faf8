"""The web pages in a real browser (Debian chromium driven by Playwright) against a real service:
Orthanc as the PACS, the FHIR peer as the EHR, a demo patient's mammogram and slide analysed.

- a viewer sees the case but no review or requeue forms, and posting either is refused (403)
  even with a valid session and CSRF token: the role is checked on the server, not by hiding;
- the review round trip (issue 16's must-show): a clinician logs in with an API token, opens the
  worklist and the case, accepts the mammography finding and rejects the slide finding with a
  reason; the assessment SR then arrives in Orthanc referencing the AI SR, the two
  RiskAssessments on the FHIR peer become final and entered-in-error (the unreviewed recurrence
  one stays preliminary), /metrics counts both reviews and the model page shows them;
- screenshots of the worklist, the case page and a model page (docs/screenshots, refreshed with
  CDS_REFRESH_SCREENSHOTS=1).
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import httpx
import pydicom
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cds.audit.trail import audit_path
from cds.contracts.handoffs import CaseJobPayload
from tests.integration.browser.support import TOKENS, bearer, login, screenshot
from tests.integration.fhir_outputs.support import ours, run

pytestmark = pytest.mark.timeout(180)
MG_STUDY, SM_STUDY = "2.25.7701", "2.25.7702"


def _csrf(page) -> str:
    return next(c["value"] for c in page.context.cookies() if c["name"] == "cds_csrf")


def _section(page, kind: str):
    return page.locator(f"section.finding[data-kind='{kind}']")


def test_viewer_sees_no_forms_and_is_refused(served, browser):
    url = served.http.url
    page = browser.new_page()
    login(page, url, "viewer")
    page.click("a.case-link")
    assert page.locator("section.finding").count() == 4  # mammography, slide, recurrence (two variants)
    assert page.locator("form.review").count() == 0
    assert page.locator(".badge.preliminary").count() == 4
    result_id = _section(page, "MG").get_attribute("data-result-id")
    case_path = page.url.removeprefix(url)
    form = {"outcome": "accepted", "reason": "", "csrf_token": _csrf(page)}
    r = page.request.post(f"{url}{case_path}/results/{result_id}/review", form=form, max_redirects=0)
    assert r.status == 403 and "clinician role is required" in r.json()["detail"], r.text()
    page.goto(f"{url}/login?next=%22%3E%3Cscript%3Ewindow.pwned%3D1%3C%2Fscript%3E")  # markup is escaped
    assert page.evaluate("window.pwned") is None and page.locator("script").count() == 0
    page.goto(f"{url}/ops/jobs")
    assert page.locator("#jobs tbody tr").count() >= 3 and page.locator("#jobs form").count() == 0
    r = page.request.post(f"{url}/ops/jobs/1/requeue", form={"csrf_token": _csrf(page)}, max_redirects=0)
    assert r.status == 403 and "operator role is required" in r.json()["detail"], r.text()
    # The same post with the clinician's token passes the role check and meets the store's answer.
    r = httpx.post(f"{url}/ops/jobs/1/requeue", headers=bearer("operator"), timeout=10)
    assert r.status_code == 409 and "not dead" in r.json()["detail"]
    # A clinician's incomplete form is refused with what was wrong, and nothing is recorded.
    r = httpx.post(f"{url}{case_path}/results/{result_id}/review", headers=bearer("clinician"), timeout=10,
                   data={"outcome": "rejected", "reason": " "})
    assert r.status_code == 422 and "needs a reason" in r.json()["detail"], r.text
    r = httpx.post(f"{url}{case_path}/results/999999/review", headers=bearer("clinician"), timeout=10,
                   data={"outcome": "accepted"})
    assert r.status_code == 404 and "999999" in r.json()["detail"], r.text
    assert served.store.reviews(limit=10) == []
    key = case_path.rsplit("/", 1)[1]
    reads = [json.loads(line) for line in audit_path(served.settings).read_text().splitlines()]
    reads = [e for e in reads if "viewer-user" in json.dumps(e) and key in json.dumps(e)]
    assert {"worklist page", "case page"} <= {w for e in reads for w in ("worklist page", "case page")
                                              if w in json.dumps(e)}, reads[-2:]
    page.close()


def _orthanc_instances(orthanc, study_uid: str) -> list[pydicom.Dataset]:
    with orthanc.client() as c:
        ids = c.post("/tools/find", json={"Level": "Instance", "Query": {"StudyInstanceUID": study_uid}}).json()
        return [pydicom.dcmread(io.BytesIO(c.get(f"/instances/{i}/file").content)) for i in ids]


def _referenced(ds: pydicom.Dataset) -> set[str]:
    found: set[str] = set()
    for elem in ds.iterall():
        if elem.keyword == "ReferencedSOPInstanceUID":
            found.add(str(elem.value))
    return found


def _review(page, kind: str, outcome: str, reason: str = "") -> None:
    section = _section(page, kind)
    section.locator(f"input[name=outcome][value={outcome}]").check()
    if reason:
        section.locator("input[name=reason]").fill(reason)
    with page.expect_navigation():
        section.locator("form.review button[type=submit]").click()
    badge = _section(page, kind).locator(f".badge.review-{outcome}")
    assert badge.count() == 1, page.content()[:3000]


def test_review_round_trip(served, browser, orthanc, fhir_peer, tmp_path: Path):
    started = time.monotonic()
    url = served.http.url
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    login(page, url, "clinician")
    row = page.locator("#worklist tbody tr")
    assert row.count() == 1 and row.get_attribute("data-state") == "awaiting review"
    screenshot(page, tmp_path, "worklist")
    page.click("a.case-link")
    assert page.locator("form.review").count() == 4 and page.locator("svg.curve polyline").count() == 2
    assert page.locator("section.finding[data-kind='MG'] figure img").count() >= 1
    assert page.locator("section.finding[data-kind='SM'] img[alt$='over the thumbnail']").count() == 1
    screenshot(page, tmp_path, "case", full_page=True)

    _review(page, "MG", "accepted")
    _review(page, "SM", "rejected", "attention on a folded-tissue artefact, not on the node")
    assert _section(page, "recurrence").locator(".badge.preliminary").count() == 2
    reviews = {r.study_uid: r for r in served.store.reviews(limit=10)}
    assert {r.outcome.value for r in reviews.values()} == {"accepted", "rejected"}
    assert {r.reviewer for r in reviews.values()} == {"clinician-user"}

    run(served, timeout_s=60)  # deliver the assessment SRs and the FHIR status changes
    mg = _orthanc_instances(orthanc, MG_STUDY)
    assessment = next(ds for ds in mg if ds.SOPInstanceUID == reviews[MG_STUDY].sr_uid)
    ai = {str(ds.SOPInstanceUID) for ds in mg
          if ds is not assessment and ds.Modality in ("SR", "SEG") and "assessment" not in ds.SeriesDescription}
    assert {ds.Modality for ds in mg if str(ds.SOPInstanceUID) in ai} == {"SR", "SEG"}
    assert ai <= _referenced(assessment), (ai, _referenced(assessment))  # the AI SR and SEG, by SOP UID
    assert "clinician-user" in str(assessment)  # the assessor is named

    risks = {r["identifier"][0]["value"].split("/")[0]: r["status"] for r in ours(fhir_peer.base_url, "RiskAssessment")}
    assert risks == {MG_STUDY: "final", SM_STUDY: "entered-in-error", "case": "preliminary"}, risks

    text = httpx.get(f"{url}/metrics", headers=bearer("operator"), timeout=10).text
    samples = {(s.labels.get("model"), s.labels.get("outcome")): s.value
               for fam in text_string_to_metric_families(text) if fam.name == "cds_reviews" for s in fam.samples
               if s.name.endswith("_total")}
    assert samples == {("fixture-mammo", "accepted"): 1.0, ("fixture-slide", "rejected"): 1.0}, samples

    page.goto(f"{url}/models/fixture-mammo")
    assert page.locator("#review-counts").inner_text().split() == ["accepted", "1"]
    screenshot(page, tmp_path, "model")
    page.close()
    assert time.monotonic() - started < 180
    assert TOKENS["clinician"] not in text


def test_operator_requeues_a_dead_job_and_switches_a_model(served, browser):
    """A dead job turns the case 'failed' on the worklist; the operator's Requeue button puts it
    back and it completes; the model page's switch form disables a model with a reason."""
    url, store = served.http.url, served.store
    key = store.case_overview(1)[0].patient_key
    job_id = store.enqueue("case", f"browser-test-dead-{key}", CaseJobPayload(patient_key=key), max_attempts=1)
    claimed = store.claim_job("browser-test", 60, only=("case",))
    assert claimed is not None and claimed.id == job_id
    assert store.fail_job(job_id, "synthetic permanent failure", retry_delay_s=None) == "dead"

    page = browser.new_page()
    login(page, url, "operator")
    assert page.locator("#worklist tbody tr").get_attribute("data-state") == "failed"
    page.goto(f"{url}/ops/jobs?state=dead")
    row = page.locator(f"#jobs tr[data-job='{job_id}']")
    assert "synthetic permanent failure" in row.inner_text()
    with page.expect_navigation():
        row.locator("button", has_text="Requeue").click()
    assert store.job(job_id).state == "queued"
    trail = audit_path(served.settings).read_text()
    assert f"job:{job_id}" in trail and "requeued (pages)" in trail and "operator-user" in trail
    run(served, timeout_s=60)
    assert store.job(job_id).state == "done", store.job(job_id).last_error
    page.goto(f"{url}/")
    assert page.locator("#worklist tbody tr").get_attribute("data-state") == "awaiting review"  # 2 of 4 reviewed

    page.goto(f"{url}/models/fixture-slide")
    page.fill("form.switch input[name=reason]", "validation drift on the new scanner")
    with page.expect_navigation():
        page.click("form.switch button[type=submit]")
    assert page.locator(".state", has_text="disabled").count() == 1
    assert "validation drift on the new scanner" in page.inner_text("main")
    assert store.model_switches() == {"fixture-slide": False}
    r = page.request.post(f"{url}/models/fixture-slide/switch", form={"enabled": "true", "reason": ""},
                          max_redirects=0)
    assert r.status == 403 and "csrf" in r.text().lower()  # no CSRF token with the cookie: refused first
    page.close()
