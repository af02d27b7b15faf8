"""The dispatcher's disclosure records go through the store: real delivery (the output folder
target), real store (SQLite, and a real PostgreSQL server), real chain file; several OS processes
draining one PostgreSQL store at once.

What each test proves:
- a delivered output leaves exactly one disclosure record in the chain, naming its patient, and
  nothing staged behind;
- a dispatcher that dies after the commit and before its drain loses no record: it is staged,
  and the next drain (any process, `cds dispatch`'s periodic one) appends it once;
- three processes, each staging and draining at once on PostgreSQL, put every record in the
  chain exactly once and the chain verifies (the flock and the re-read under it hold across
  processes, not only threads).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cds.audit import drain as drain_mod
from cds.audit.chain import verify
from cds.audit.trail import audit_path
from cds.contracts.handoffs import NewOutput, OutboxMeta, StudyJobPayload
from cds.contracts.settings import Settings
from cds.dispatch.dispatcher import Dispatcher
from cds.store import Store, audit_outbox

REPO = Path(__file__).resolve().parents[3]


def _events(settings: Settings) -> list[dict]:
    path = audit_path(settings)
    return [json.loads(line)["event"] for line in path.read_text().splitlines()] if path.exists() else []


def _deliver_one(settings: Settings, store: Store) -> str:
    job = store.enqueue("study", "study:1", StudyJobPayload(study_uid="1.2.3", modality="MG", patient_key="pk-1"))
    store.outbox_add(NewOutput(kind="pdf", destination="folder", key="1.2.3/report.pdf",
                               payload_path=Path("report.pdf"), payload=b"%PDF-1.4 test",
                               meta=OutboxMeta(description="report", job_id=job)))
    item = store.outbox_claim("dispatch-test", 60.0)
    assert item is not None
    dispatcher = Dispatcher(settings, store, worker="dispatch-test")
    try:
        return dispatcher.handle(item)
    finally:
        dispatcher.close()


def _patients(event: dict) -> list[str]:
    return [e["what"]["identifier"]["value"] for e in event["entity"]
            if e["role"]["code"] == "1" and "identifier" in e["what"]]


def test_delivery_leaves_one_disclosure_record(store_url: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", output_dir=tmp_path / "out")
    store = Store(store_url)
    assert _deliver_one(settings, store) == "delivered"
    exports = [e for e in _events(settings) if e["type"]["code"] == "110106"]
    assert len(exports) == 1 and _patients(exports[0]) == ["pk-1"]
    assert audit_outbox.backlog(store)[0] == 0
    assert verify(audit_path(settings)).ok
    store.close()


def test_dispatcher_dying_before_its_drain_loses_no_record(store_url: str, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(data_dir=tmp_path / "data", output_dir=tmp_path / "out")
    store = Store(store_url)
    monkeypatch.setattr("cds.dispatch.dispatcher.after_commit", lambda s, st: 0)  # died right after the commit
    assert _deliver_one(settings, store) == "delivered"
    assert _events(settings) == [] and audit_outbox.backlog(store)[0] == 1
    assert drain_mod.drain(settings, Store(store_url)) == 1  # another process's drain
    assert drain_mod.drain(settings, store) == 0
    assert [e["type"]["code"] for e in _events(settings)] == ["110106"]
    store.close()


_WORKER = """
import sys
from cds.audit.drain import drain
from cds.contracts.settings import Settings
from cds.store import Store, audit_outbox
url, data, tag = sys.argv[1:4]
s, store = Settings(data_dir=data), Store(url)
for i in range(60):
    with store.tx() as con:
        audit_outbox.stage(con, [{"resourceType": "AuditEvent", "id": f"{tag}-{i}-{j}"} for j in range(2)])
    drain(s, store)
drain(s, store)
"""


@pytest.mark.peers
def test_processes_draining_one_postgres_store(postgres_server: object, tmp_path: Path) -> None:
    url = postgres_server.create_database("drainers")  # type: ignore[attr-defined]
    Store(url).close()  # schema once, before the processes race
    data = tmp_path / "data"
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, url, str(data), f"p{n}"], cwd=REPO)
             for n in range(3)]
    assert [p.wait(120) for p in procs] == [0, 0, 0]
    settings = Settings(data_dir=data)
    ids = [e["id"] for e in _events(settings)]
    assert len(ids) == 3 * 60 * 2 and len(set(ids)) == len(ids)
    verdict = verify(audit_path(settings))
    assert verdict.ok and verdict.records == 360
    store = Store(url)
    assert audit_outbox.backlog(store)[0] == 0
    store.close()
