"""The hash-chained audit log: intact chains verify, one altered record is named; BALP shapes."""

from __future__ import annotations

import json
import socket
import stat

from typer.testing import CliRunner

from app.cli import app
from cds.audit.chain import GENESIS, append, verify
from cds.audit.trail import audit_disclosure, audit_path, audit_query, audit_receipt
from cds.contracts.settings import Settings


def _settings(tmp_path, **kw) -> Settings:
    return Settings(data_dir=tmp_path / "data", **kw)


def test_records_chain_and_verify(tmp_path):
    log = tmp_path / "a" / "audit.jsonl"
    for i in range(5):
        append(log, {"resourceType": "AuditEvent", "n": i})
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert lines[0]["prev"] == GENESIS and [r["seq"] for r in lines] == [1, 2, 3, 4, 5]
    assert all(b["prev"] == a["hash"] for a, b in zip(lines, lines[1:], strict=False))
    assert verify(log).ok and verify(log).records == 5
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert stat.S_IMODE(log.parent.stat().st_mode) == 0o700


def test_one_altered_record_is_named(tmp_path):
    log = tmp_path / "audit.jsonl"
    for i in range(4):
        append(log, {"n": i})
    lines = log.read_text().splitlines()
    rec = json.loads(lines[2])
    rec["event"]["n"] = 99  # hash left as it was
    lines[2] = json.dumps(rec)
    log.write_text("\n".join(lines) + "\n")
    v = verify(log)
    assert not v.ok and v.bad_line == 3 and "altered" in v.reason


def test_removed_record_breaks_the_link(tmp_path):
    log = tmp_path / "audit.jsonl"
    for i in range(4):
        append(log, {"n": i})
    lines = log.read_text().splitlines()
    log.write_text("\n".join(lines[:1] + lines[2:]) + "\n")
    v = verify(log)
    assert not v.ok and v.bad_line == 2 and "does not follow" in v.reason


def test_cli_verify_passes_then_fails(tmp_path, monkeypatch):
    s = _settings(tmp_path)
    audit_receipt(s, patient_key="k1", study_uid="1.2.3", sop_uid="1.2.3.4", calling_ae="PACS")
    audit_query(s, patient_key="k1", server="https://fhir.example", resource_types=["Patient"])
    audit_disclosure(s, patient_key="k1", destination="pacs", peer="PACS@h:104", output_kind="dicom",
                     output_key="1.2.3/seg", response="C-STORE success")
    path = audit_path(s)
    runner = CliRunner()
    ok = runner.invoke(app, ["audit", "verify", "--path", str(path)])
    assert ok.exit_code == 0, ok.output
    assert "3 record(s), chain intact" in ok.output
    monkeypatch.setenv("CDS_DATA_DIR", str(s.data_dir))
    assert runner.invoke(app, ["audit", "verify"]).exit_code == 0
    text = path.read_text().replace("C-STORE success", "C-STORE failure")
    path.write_text(text)
    bad = runner.invoke(app, ["audit", "verify", "--path", str(path)])
    assert bad.exit_code == 1
    assert "BROKEN at line 3" in bad.output


def test_balp_shapes(tmp_path):
    s = _settings(tmp_path)
    audit_receipt(s, patient_key="k1", study_uid="1.2.3", sop_uid="1.2.3.4", calling_ae="PACS")
    audit_query(s, patient_key="k1", server="https://fhir.example", resource_types=["Patient", "Observation"],
                fhir_patient_ref="Patient/7")
    audit_disclosure(s, patient_key="k1", destination="fhir", peer="https://fhir.example",
                     output_kind="fhir", output_key="case/k1/ra", response="201")
    receipt, query, disclosure = (json.loads(x)["event"] for x in audit_path(s).read_text().splitlines())
    assert receipt["type"]["code"] == "110104" and receipt["action"] == "C"
    roles = {a["type"]["coding"][0]["code"]: a["who"]["display"] for a in receipt["agent"]}
    assert roles == {"110153": "PACS", "110152": "CDS"}
    pat = receipt["entity"][0]
    assert pat["role"]["code"] == "1" and pat["type"]["code"] == "1"
    assert pat["what"]["identifier"]["value"] == "k1"
    assert query["type"]["code"] == "rest" and query["subtype"][0]["code"] == "search-type"
    assert query["entity"][0]["what"]["reference"] == "Patient/7"
    assert query["meta"]["profile"][0].endswith("IHE.BasicAudit.PatientQuery")
    assert disclosure["type"]["code"] == "110106" and disclosure["subtype"][0]["code"] == "disclose"


def test_syslog_forward_udp(tmp_path):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    try:
        s = _settings(tmp_path, audit_syslog_host="127.0.0.1", audit_syslog_port=sock.getsockname()[1])
        audit_receipt(s, patient_key="k9", study_uid="1.2.3", sop_uid="1.2.3.4", calling_ae="PACS")
        msg = sock.recv(65535).decode()
    finally:
        sock.close()
    head, body = msg.split(" - ", 1)
    assert head.startswith("<85>1 ") and " breast-cds " in head and "IHE+FHIR" in head
    assert json.loads(body)["resourceType"] == "AuditEvent"
    assert verify(audit_path(s)).ok
