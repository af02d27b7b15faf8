"""Shared set-up for the FHIR-output tests: the Medplum peer, a two-variant recurrence fixture,
and a service run against the peer with the fixture models."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from app.analyze import check_stable, ingest_file
from app.service import Service
from cds.contracts.domain import CaseInput, RecurrenceResult
from cds.contracts.settings import Settings
from cds.pipeline.registry import ModelRegistry
from synthetic.fixture_model import (
    FixtureMammoModel,
    FixtureRecurrenceModel,
    FixtureSlideModel,
    identity,
    write_mammogram,
    write_slide,
)
from synthetic.phantoms.clinical import clinical_resources, synthetic_patient

RESULT = "urn:breast-cds:result"


class TwoVariantRecurrence:
    """The clinical fixture Cox model plus a 'multimodal' variant when the case has a slide
    (its score shifted so that the two disagree, as the clinical and MRRP models did)."""

    def __init__(self) -> None:
        self.clinical = FixtureRecurrenceModel()
        self.identity = self.clinical.identity
        self.mm_identity = identity("fixture-recurrence-multimodal")

    def analyze_case(self, case: CaseInput) -> RecurrenceResult:
        return self.analyze_case_all(case)[0]

    def analyze_case_all(self, case: CaseInput) -> list[RecurrenceResult]:
        base = self.clinical.analyze_case(case)
        clinical = base.model_copy(update={"scope": "clinical", "modalities_present": ["clinical"]})
        if case.slide is None:
            return [clinical]
        score = base.risk_score + 1.5
        mm = base.model_copy(update={
            "scope": "multimodal", "model": self.mm_identity, "risk_score": score,
            "risk_group": "high" if score >= base.cutoff else "low",
            "absolute_risk": {y: min(0.99, p * 1.6) for y, p in base.absolute_risk.items()}})
        return [mm, clinical]


def load_clinical(base_url: str, settings: Settings) -> None:
    for r in clinical_resources(settings):
        httpx.put(f"{base_url}/{r['resourceType']}/{r['id']}", json=r, timeout=10,
                  headers={"Content-Type": "application/fhir+json"}).raise_for_status()


def make_service(tmp: Path, base_url: str, **kw: object) -> Service:
    fields: dict = {"stable_age_s": 0.0, "job_backoff_base_s": 0.05, "job_backoff_max_s": 0.2,
                    "peer_probe_interval_s": 0.2, **kw}
    settings = Settings(data_dir=tmp / "data", output_dir=tmp / "out", fhir_base_url=base_url, **fields)
    registry = ModelRegistry(study_models=[FixtureMammoModel(), FixtureSlideModel()],
                             case_models=[TwoVariantRecurrence()])
    return Service(settings, registry=registry, listen=False)


def study_files(tmp: Path) -> dict[str, list[Path]]:
    patient = synthetic_patient()
    return {"MG": [write_mammogram(tmp / "in" / "mg.dcm", patient, "2.25.7701", seed=1)],
            "SM": [write_slide(tmp / "in" / "sm.dcm", patient, "2.25.7702", seed=2)]}


def run(service: Service, timeout_s: float = 60.0) -> None:
    """Process until nothing is queued, running or pending (or the timeout)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        check_stable(service.settings, service.store)
        service.workers.drain()
        service.dispatcher.run_once()
        busy = [j for j in service.store.jobs(limit=1000) if j.state in ("queued", "running")]
        pending = [o for o in service.store.outbox_items(limit=1000) if o.state in ("pending", "delivering")]
        if not busy and not pending:
            return
        time.sleep(0.05)
    raise AssertionError("pipeline did not settle in time")


def ingest(service: Service, files: list[Path]) -> None:
    for f in files:
        assert ingest_file(service, f).ok


def ours(base_url: str, rtype: str) -> list[dict]:
    """Every resource of ``rtype`` on the server that carries one of our result identifiers."""
    r = httpx.get(f"{base_url}/{rtype}", params={"_count": "500"}, timeout=10)
    r.raise_for_status()
    found = [e["resource"] for e in r.json().get("entry", [])]
    return [x for x in found if any(i.get("system") == RESULT for i in x.get("identifier", []))]
