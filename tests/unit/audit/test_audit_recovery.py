"""A torn last line does not stop auditing: a break record is appended and verify reports it."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

from typer.testing import CliRunner

from app.cli import app
from cds.audit import trail
from cds.audit.chain import append, verify
from cds.audit.disclosure import delivery_event
from cds.contracts.settings import Settings


def _torn_log(tmp_path):
    log = tmp_path / "audit.jsonl"
    for i in range(3):
        append(log, {"n": i})
    with open(log, "ab") as f:
        f.write(b'{"seq":4,"prev":"ab')  # a crash cut this write short
    return log


def test_append_after_torn_line_records_a_break_and_verify_names_it(tmp_path):
    log = _torn_log(tmp_path)
    assert not verify(log).ok and verify(log).bad_line == 4
    rec = append(log, {"n": 3})
    rec2 = append(log, {"n": 4})
    lines = log.read_text().splitlines()
    assert len(lines) == 7
    brk = json.loads(lines[4])
    assert brk["break"]["torn_line"] == 4 and brk["seq"] == 4
    assert brk["prev"] == json.loads(lines[2])["hash"]
    assert rec["prev"] == brk["hash"] and rec2["prev"] == rec["hash"] and rec2["seq"] == 6
    v = verify(log)
    assert not v.ok and v.bad_line == 4 and "chain break" in v.reason and v.records == 6
    out = CliRunner().invoke(app, ["audit", "verify", "--path", str(log)])
    assert out.exit_code == 1 and "BROKEN at line 4" in out.output


def test_tampering_after_a_break_is_still_detected(tmp_path):
    log = _torn_log(tmp_path)
    append(log, {"n": 3})
    append(log, {"n": 4})
    lines = log.read_text().splitlines()
    lines[6] = lines[6].replace('"n":4', '"n":9')
    log.write_text("\n".join(lines) + "\n")
    v = verify(log)
    assert not v.ok and v.bad_line == 7 and "altered" in v.reason


def test_forged_break_without_torn_data_is_rejected(tmp_path):
    log = _torn_log(tmp_path)
    append(log, {"n": 3})
    lines = log.read_text().splitlines()
    del lines[3]  # drop the torn line: the break record now claims data that is not there
    log.write_text("\n".join(lines) + "\n")
    v = verify(log)
    assert not v.ok and v.bad_line == 4 and "claims a chain break" in v.reason


def test_record_logs_the_exception_message(tmp_path, monkeypatch, caplog):
    def boom(path, event):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(trail, "append", boom)
    with caplog.at_level(logging.ERROR, logger="cds.audit.trail"):
        trail.record(Settings(data_dir=tmp_path), {"id": "e1"})
    assert "No space left on device" in caplog.text and "OSError" in caplog.text


def test_disclosure_with_unreadable_job_is_marked_patient_unknown(tmp_path, caplog):
    s = Settings(data_dir=tmp_path / "data")

    class Store:
        def job(self, job_id):
            raise ValueError("bad payload")

    item = SimpleNamespace(id=17, meta=SimpleNamespace(job_id=42), destination="output", kind="pdf",
                           key="k/report.pdf")
    with caplog.at_level(logging.WARNING, logger="cds.audit.disclosure"):
        trail.record(s, delivery_event(s, Store(), item, "written"))
    assert "outbox item 17" in caplog.text and "job 42" in caplog.text
    rec = json.loads(trail.audit_path(s).read_text().splitlines()[-1])
    patients = [e for e in rec["event"]["entity"] if e["role"]["code"] == "1"]
    assert patients and patients[0]["what"]["display"] == "patient unknown"
