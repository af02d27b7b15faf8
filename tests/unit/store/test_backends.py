"""What the PostgreSQL backend adds or must keep equal to SQLite: claim priorities, versioned
migrations, concurrent writers (serialization failures retried), a dropped connection."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from cds.contracts.domain import InstanceRecord, PatientRef
from cds.contracts.handoffs import CaseJobPayload, NewResult, StudyJobPayload
from cds.store import Store
from cds.store.schema import MIGRATIONS


def _study(uid: str, modality: str) -> StudyJobPayload:
    return StudyJobPayload(study_uid=uid, modality=modality, patient_key="p")


def test_a_mammography_exam_is_claimed_before_an_earlier_slide_batch(store: Store) -> None:
    for i in range(3):
        store.enqueue("study", f"study:sm{i}", _study(f"sm{i}", "SM"))
    store.enqueue("case", "case:p", CaseJobPayload(patient_key="p"))
    store.enqueue("study", "study:mg", _study("mg", "MG"))
    store.enqueue("study", "study:us", _study("us", "US"))
    order = []
    while (job := store.claim_job("me:1:w", 60)) is not None:
        order.append(job.key)
    assert order == ["study:mg", "study:sm0", "study:sm1", "study:sm2", "study:us", "case:p"]


def test_lanes_split_study_slide_and_case_jobs(store: Store) -> None:
    store.enqueue("study", "study:sm", _study("sm", "SM"))
    store.enqueue("study", "study:mg", _study("mg", "MG"))
    store.enqueue("study", "study:us", _study("us", "US"))
    store.enqueue("case", "case:p", CaseJobPayload(patient_key="p"))

    def claim_all(lanes: tuple[str, ...]) -> list[str]:
        keys = []
        while (job := store.claim_job("me:1:w", 60, lanes=lanes)) is not None:
            keys.append(job.key)
        return keys

    assert claim_all(("slide",)) == ["study:sm"]
    assert claim_all(("case",)) == ["case:p"]
    assert claim_all(("study",)) == ["study:mg", "study:us"]


def test_migrations_are_versioned_and_bring_an_old_store_up_to_date(store_url: str) -> None:
    store = Store(store_url)
    assert [r[0] for r in store._query("SELECT version FROM schema_version")] == [m.version for m in MIGRATIONS]
    with store.tx() as con:  # back to the schema before the priority column, with an old MG job queued
        con.execute("DROP INDEX jobs_claim")
        con.execute("ALTER TABLE jobs DROP COLUMN priority")
        con.execute("ALTER TABLE jobs DROP COLUMN lane")
        con.execute("DELETE FROM schema_version")
        con.execute("INSERT INTO jobs(kind, key, payload, state, max_attempts, next_run_at) "
                    "VALUES ('study', 'old', ?, 'queued', 3, 0)", (_study("old", "MG").model_dump_json(),))
    store.close()
    again = Store(store_url)
    Store(store_url).close()  # a second start changes nothing
    assert len(again._query("SELECT version FROM schema_version")) == len(MIGRATIONS)
    assert again._query("SELECT priority FROM jobs WHERE key='old'")[0]["priority"] == 0
    assert again._query("SELECT lane FROM jobs WHERE key='old'")[0]["lane"] == "study"
    again.close()


def test_rows_ids_and_types_read_back_alike(store: Store) -> None:
    job = store.enqueue("case", "case:x", CaseJobPayload(patient_key="p"))
    ids = store.replace_results(job, [NewResult(kind="recurrence", patient_key="p", status="ok", body={"r": 1})] * 3)
    assert len(set(ids)) == 3 and all(i > 0 for i in ids)  # lastrowid
    row = store._query("SELECT id, job_id AS j, body FROM results ORDER BY id LIMIT 1")[0]
    assert row[0] == row["id"] == ids[0] and row["j"] == job and dict(row)["body"] == '{"r": 1}'
    store.record_instance(InstanceRecord(sop_instance_uid="1", sop_class_uid="1.2", study_instance_uid="9",
                                         series_instance_uid="9.1", modality="MG", path=Path("/s/1"),
                                         size_bytes=5_000_000_000), PatientRef(patient_id="P"))
    assert store.received_totals() == (1, 5_000_000_000)  # sizes past 2**31, sums as int


def test_concurrent_writers_to_one_study_all_land(store: Store) -> None:
    """8 threads index 25 instances each into one study: read-then-write transactions that
    conflict on PostgreSQL (serialization failures, retried) and queue on SQLite."""
    errors: list[BaseException] = []

    def index(t: int) -> None:
        try:
            for i in range(25):
                rec = InstanceRecord(sop_instance_uid=f"{t}.{i}", sop_class_uid="1.2", study_instance_uid="7",
                                     series_instance_uid="7.1", modality="MG", path=Path(f"/s/{t}.{i}"))
                assert store.record_instance(rec, PatientRef(patient_id="P"))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=index, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    study = store.study("7")
    assert study and study.n_instances == 200 and len(store.study_instances("7")) == 200


@pytest.mark.peers
def test_a_dropped_connection_fails_one_call_clearly_then_reconnects(postgres_server) -> None:
    import psycopg

    from cds.store.pg import StoreUnavailable

    url = postgres_server.create_database("dropped")
    store = Store(url)
    store.enqueue("case", "case:1", CaseJobPayload(patient_key="p"))
    pid = store._query("SELECT pg_backend_pid()")[0][0]
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(StoreUnavailable, match=r"PostgreSQL store 127\.0\.0\.1:\d+/dropped unavailable"):
        store.jobs()
    assert [j.key for j in store.jobs()] == ["case:1"]  # the next call opened a new connection
    store.close()


def test_concurrent_claimers_never_share_a_job_or_an_output(store: Store, tmp_path: Path) -> None:
    from cds.contracts.handoffs import NewOutput, OutboxMeta

    for i in range(60):
        store.enqueue("case", f"case:{i}", CaseJobPayload(patient_key=f"p{i}"))
        store.outbox_add(NewOutput(kind="fhir", destination="fhir", key=f"o{i}", payload_path=tmp_path / "x",
                                   meta=OutboxMeta()))
    jobs: list[int] = []
    outputs: list[int] = []

    def claim(n: int) -> None:
        while (job := store.claim_job(f"h:{n}:w", 60)) is not None:
            jobs.append(job.id)
        while (item := store.outbox_claim(f"h:{n}:d", 60)) is not None:
            outputs.append(item.id)

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(jobs) == sorted(set(jobs)) and len(jobs) == 60
    assert sorted(outputs) == sorted(set(outputs)) and len(outputs) == 60


@pytest.mark.peers
def test_connections_of_ended_threads_are_released(postgres_server) -> None:
    import gc

    url = postgres_server.create_database("threads")
    store = Store(url)

    def one_call() -> None:
        store.counts()

    for _ in range(20):
        t = threading.Thread(target=one_call)
        t.start()
        t.join()
    gc.collect()
    time.sleep(0.2)  # the server notices the closed sockets
    n = store._count("SELECT COUNT(*) FROM pg_stat_activity WHERE datname='threads'")
    assert n <= 2, f"{n} connections still open after 20 threads ended"
    store.close()


@pytest.mark.peers
def test_postgres_sessions_commit_durably(postgres_server) -> None:
    """Acknowledged = committed on disk: the store's sessions run with synchronous_commit and fsync on."""
    store = Store(postgres_server.create_database("durable"))
    assert store._query("SHOW synchronous_commit")[0][0] == "on"
    assert store._query("SHOW fsync")[0][0] == "on"
    assert store._query("SHOW transaction_isolation")[0][0] == "read committed"  # reads outside tx()
    with store.tx() as con:
        assert con.execute("SHOW transaction_isolation").fetchone()[0] == "serializable"
    store.close()
