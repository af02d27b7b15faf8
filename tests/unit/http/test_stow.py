"""STOW-RS through the app: good parts stored like C-STORE ones, each bad one its own failure."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from cds.contracts.review import Role
from synthetic.fixture_model import write_mammogram
from tests.unit.http.support import PATIENT, audit_events, auth

STUDY = "2.25.4242"


def multipart(parts: list[bytes], content_type: str = "application/dicom") -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = b"".join(b"--" + boundary.encode() + b"\r\nContent-Type: " + content_type.encode() + b"\r\n\r\n" + p + b"\r\n"
                    for p in parts) + b"--" + boundary.encode() + b"--\r\n"
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def instances(tmp: Path, n: int, study: str = STUDY) -> list[bytes]:
    return [write_mammogram(tmp / f"mg{study}-{i}.dcm", PATIENT, study, seed=i, rows=64, columns=48,
                            view=("CC", "MLO")[i % 2]).read_bytes() for i in range(n)]


def test_stow_stores_good_and_fails_bad_per_instance(env, tmp_path: Path) -> None:
    good = instances(tmp_path, 2)
    other_study = instances(tmp_path, 1, "2.25.4343")
    body, ctype = multipart([good[0], b"DICM? no, just text", good[1], other_study[0]])
    r = env.client.post(f"/dicomweb/studies/{STUDY}", content=body, headers={**auth(env.tokens[Role.sender]),
                                                                           "Content-Type": ctype})
    assert r.status_code == 202 and r.headers["content-type"] == "application/dicom+json", r.text
    stored = r.json()["00081199"]["Value"]
    failed = r.json()["00081198"]["Value"]
    assert len(stored) == 2 and len(failed) == 2
    assert {f["00081197"]["Value"][0] for f in failed} == {0xC409, 0xC000}
    assert all(f["00000902"]["Value"][0] for f in failed)  # a readable reason per failure
    mismatch = next(f for f in failed if f["00081197"]["Value"][0] == 0xC409)
    assert "Study Instance UID" in mismatch["00000902"]["Value"][0]
    uids = [s["00081155"]["Value"][0] for s in stored]
    for uid in uids:  # in the store and the spool, like a C-STORE instance
        row = next(i for i in env.store.study_instances(STUDY, "MG") if i.sop_instance_uid == uid)
        assert row.path.exists() and str(env.settings.spool_dir) in str(row.path)
    assert len(env.store.study_instances("2.25.4343", "MG")) == 0
    assert not list(env.settings.incoming_dir.iterdir())  # no temp file left behind
    refusals = env.client.get("/api/v1/refusals", headers=auth(env.tokens[Role.viewer])).json()["items"]
    assert {x["status"] for x in refusals} >= {0xC409}
    receipts = [e for e in audit_events(env.settings) if e["type"]["code"] == "110104"]  # BALP receipt per instance
    assert len(receipts) == 2 and all("STOW:test-sender" in json.dumps(e) for e in receipts)


def test_stow_status_codes(env, tmp_path: Path) -> None:
    h = auth(env.tokens[Role.operator])
    good = instances(tmp_path, 1)
    body, ctype = multipart(good)
    ok = env.client.post("/dicomweb/studies", content=body, headers={**h, "Content-Type": ctype})
    assert ok.status_code == 200 and "00081198" not in ok.json()
    again = env.client.post("/dicomweb/studies", content=body, headers={**h, "Content-Type": ctype})
    assert again.status_code == 200  # a duplicate is acknowledged, as over C-STORE
    bad, ctype = multipart([b"garbage"])
    none = env.client.post("/dicomweb/studies", content=bad, headers={**h, "Content-Type": ctype})
    assert none.status_code == 409 and "00081199" not in none.json()
    wrong = env.client.post("/dicomweb/studies", content=body, headers={**h, "Content-Type": "application/dicom"})
    assert wrong.status_code == 415 and "multipart/related" in wrong.json()["detail"]
    jpeg, jtype = multipart([b"x"], "image/jpeg")
    assert env.client.post("/dicomweb/studies", content=jpeg, headers={**h, "Content-Type": jtype}).status_code == 415
    small = env.settings.model_copy(update={"http_stow_max_bytes": 1000})
    env.ctx.settings = small
    big = env.client.post("/dicomweb/studies", content=body, headers={**h, "Content-Type": ctype})
    assert big.status_code == 413 and "CDS_HTTP_STOW_MAX_BYTES" in big.json()["detail"]
    chunks = (body[i:i + 256] for i in range(0, len(body), 256))  # no Content-Length: stopped while streaming
    streamed = env.client.post("/dicomweb/studies", content=chunks, headers={**h, "Content-Type": ctype})
    assert streamed.status_code == 413 and not list(env.settings.incoming_dir.iterdir())
    assert env.client.post("/dicomweb/studies", content=body,
                           headers={**auth(env.tokens[Role.viewer]), "Content-Type": ctype}).status_code == 403
    assert env.client.post("/dicomweb/studies/not-a-uid", content=body, headers={**h, "Content-Type": ctype}).status_code == 400
