"""A store holding one analysed mammography study (the session's fixture-model outputs) and its
queued AI outputs, as the pipeline leaves them: what a review assesses."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from cds.contracts.handoffs import NewOutput, NewResult, OutboxMeta
from cds.contracts.review import Principal, Role
from cds.contracts.settings import Settings
from cds.store import Store


@dataclass
class Reviewable:
    settings: Settings
    store: Store
    result_id: int  # the mammography result (lesions, SR, 2 SEGs, RiskAssessment)
    slide_result_id: int
    job_id: int


CLINICIAN = Principal(name="jsmith", roles=frozenset({Role.clinician}), method="api-token",
                      display_name="Jane Smith")


@pytest.fixture
def reviewable(outputs, tmp_path) -> Reviewable:
    settings = Settings(data_dir=tmp_path / "data", output_dir=tmp_path / "out")
    store = Store(settings.store_url)
    job_id, slide_job = 7, 8
    ids = []
    for job, analysis in ((job_id, outputs.mammo), (slide_job, outputs.slide)):
        ids += store.replace_results(job, [NewResult(
            kind="study_analysis", patient_key=analysis.patient.key, study_uid=analysis.study_instance_uid,
            modality=analysis.modality, model=analysis.model.name, model_version=analysis.model.version,
            status="ok", summary="", body=analysis.model_dump(mode="json"))])
    for art in outputs.study_arts:
        job = job_id if outputs.mammo.study_instance_uid in art.key else slide_job
        store.outbox_add(NewOutput(
            kind=art.kind, destination="pacs" if art.kind == "dicom" else "fhir", key=art.key,
            payload_path=art.path, payload=None if art.kind == "dicom" else art.path.read_bytes(),
            meta=OutboxMeta(job_id=job, resource_type=art.resource_type)))
    return Reviewable(settings, store, ids[0], ids[1], job_id)
