"""Exit codes of `cds analyze` / `cds demo` read from the store after a run."""

from __future__ import annotations

from pathlib import Path

from app.outcome import EXIT_FAILED, EXIT_INCOMPLETE, EXIT_OK, EXIT_REFUSED_INPUT, run_outcome
from cds.contracts.handoffs import CaseJobPayload, NewOutput, NewResult
from cds.store import Store


def _store(tmp_path: Path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'cds.sqlite3'}")


def test_a_clean_run_exits_0(tmp_path):
    store = _store(tmp_path)
    store.replace_results(1, [NewResult(kind="study_analysis", patient_key="p", status="ok",
                                        study_uid="1.2.3", modality="MG", model="m")])
    # a sonographer's SR has no model of its own: it is an input, not an unanalysed study
    store.replace_results(2, [NewResult(kind="study_analysis", patient_key="p", status="no_model",
                                        study_uid="1.2.4", modality="SR", summary="no model")])
    assert run_outcome(store).exit_code == EXIT_OK


def test_codes_by_severity(tmp_path):
    store = _store(tmp_path)
    store.replace_results(1, [NewResult(kind="study_analysis", patient_key="p", status="no_model",
                                        study_uid="1.2.3", modality="MG", summary="no model for MG")])
    outcome = run_outcome(store)
    assert outcome.exit_code == EXIT_INCOMPLETE and "study 1.2.3 (MG): no model for MG" in outcome.lines()[0]

    store.record_rejection("ANALYZE", "", 0xC000, "x.txt: not a DICOM file")
    assert run_outcome(store).exit_code == EXIT_REFUSED_INPUT

    store.enqueue("case", "case:p:1", CaseJobPayload(patient_key="p"), max_attempts=1)
    job = store.claim_job("w", 60)
    assert job is not None
    store.fail_job(job.id, "PermanentError: broken", retry_delay_s=None)
    outcome = run_outcome(store)
    assert outcome.exit_code == EXIT_FAILED
    assert any("PermanentError: broken" in line for line in outcome.lines())


def test_a_dead_output_is_a_failure(tmp_path):
    store = _store(tmp_path)
    payload = tmp_path / "ra.json"
    payload.write_text("{}")
    item_id = store.outbox_add(NewOutput(kind="fhir", destination="fhir", key="k", payload_path=payload))
    store.outbox_dead(item_id, "FHIR server refused it (422)")
    assert run_outcome(store).exit_code == EXIT_FAILED


def test_the_latest_case_result_counts(tmp_path):
    store = _store(tmp_path)
    store.replace_results(1, [NewResult(kind="recurrence", patient_key="p", status="insufficient_input",
                                        model="rec", summary="no clinical values")])
    assert run_outcome(store).exit_code == EXIT_INCOMPLETE
    store.replace_results(2, [NewResult(kind="recurrence", patient_key="p", status="ok", model="rec")])
    assert run_outcome(store).exit_code == EXIT_OK


def test_work_still_retrying_when_the_command_ends_is_a_failure(tmp_path):
    store = _store(tmp_path)
    store.enqueue("case", "case:p:2", CaseJobPayload(patient_key="p"), max_attempts=5)
    job = store.claim_job("w", 60)
    assert job is not None
    store.fail_job(job.id, "AttributeError: no PatientBirthDate", retry_delay_s=300)
    outcome = run_outcome(store)
    assert outcome.exit_code == EXIT_FAILED
    assert "did not finish" in outcome.lines()[0] and "PatientBirthDate" in outcome.lines()[0]


def test_a_disabled_case_model_is_not_incomplete(tmp_path):
    store = _store(tmp_path)
    store.replace_results(1, [NewResult(kind="recurrence", patient_key="p", status="no_model",
                                        summary="no case model registered")])
    assert run_outcome(store).exit_code == EXIT_OK


def test_an_earlier_run_in_the_same_store_is_not_reported(tmp_path):
    import time

    store = _store(tmp_path)
    store.record_rejection("ANALYZE", "", 0xC000, "old.txt: not a DICOM file")
    time.sleep(0.01)
    started = time.time()
    assert run_outcome(store).exit_code == EXIT_REFUSED_INPUT
    assert run_outcome(store, since=started).exit_code == EXIT_OK
