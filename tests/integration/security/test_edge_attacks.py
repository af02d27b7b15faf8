"""The issue-14 attacks repeated against `cds serve` on loopback, with short configured limits."""

from __future__ import annotations

import hashlib
import socket
import struct
import subprocess
import time

import psutil
import pytest
from pynetdicom import AE, _config

from cds.store import Store
from tests.integration.service.spine_support import ServeProcess, need
from tests.unit.intake.mutations import corpus, valid_file, write_mutant

LIMITS = {"CDS_DICOM_ACSE_TIMEOUT_S": "2", "CDS_DICOM_READ_TIMEOUT_S": "1",
          "CDS_DICOM_PDU_DEADLINE_S": "3", "CDS_DICOM_NETWORK_TIMEOUT_S": "10",
          "CDS_DICOM_MAX_ASSOCIATIONS_PER_PEER": "12", "CDS_DICOM_REJECTION_RECORD_INTERVAL_S": "30",
          "CDS_STABLE_AGE_S": "3600"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("security")
    with ServeProcess(base / "data", **LIMITS) as srv:
        yield srv


def store_of(srv):
    return Store(f"sqlite:///{srv.data_dir / 'cds.sqlite3'}")


def send_files(srv, mutants_and_paths, called="CDS"):
    _config.STORE_SEND_CHUNKED_DATASET = True  # send the bytes as written, never re-encoded
    ae = AE(ae_title="SECSCU")
    for m, _ in mutants_and_paths:
        ae.add_requested_context(m.sop_class, [m.ts]) if len(ae.requested_contexts) < 120 else None
    assoc = ae.associate("127.0.0.1", srv.port, ae_title=called)
    assert assoc.is_established
    statuses = [assoc.send_c_store(p).Status for _, p in mutants_and_paths]
    assoc.release()
    return statuses


def files_outside(srv):
    root = srv.data_dir.parent
    return sorted(p for p in root.rglob("*") if p.is_file() and srv.data_dir not in p.parents
                  and not p.name.endswith(".log") and p.suffix != ".dcm")


def test_traversal_and_overwrite_refused(server, tmp_path):
    good, gpath = valid_file("MG", tmp_path / "good.dcm", seed=1)
    assert send_files(server, [(good, gpath)]) == [0]
    stored = next(server.data_dir.joinpath("spool").rglob(f"{good.sop_uid}.dcm"))
    before = hashlib.sha256(stored.read_bytes()).hexdigest()
    attacks = []
    for i, bad in enumerate(["../../x", "../../../etc/cds-x", "./" + good.sop_uid, good.sop_uid + "/.."]):
        m, _ = valid_file("MG", tmp_path / f"a{i}.dcm", seed=2)
        m.body = m.body.replace(m.sop_uid.encode(), bad.encode().ljust(len(m.sop_uid), b"\0")[: max(len(bad), len(m.sop_uid))])
        m.sop_uid = bad if len(bad) <= 64 else m.sop_uid
        attacks.append((m, write_mutant(m, tmp_path / f"a{i}.dcm")))
    statuses = send_files(server, attacks)
    assert all(s != 0 for s in statuses), statuses
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == before
    assert not list(server.data_dir.parent.parent.glob("x")) and not (server.data_dir / "x").exists()
    assert not list(server.data_dir.glob("incoming/**/*.dcm"))
    # a true duplicate is acknowledged and stored once, the first file unchanged
    assert send_files(server, [(good, gpath)]) == [0]
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == before


def test_malformed_corpus_all_refused_and_recorded(server, tmp_path):
    mutants = corpus()
    assert len(mutants) >= 100
    pairs = [(m, write_mutant(m, tmp_path / f"m{i}.dcm")) for i, m in enumerate(mutants)]
    store = store_of(server)
    n_before = len(store.recent_rejections(100000))
    statuses = []
    for chunk in range(0, len(pairs), 40):
        statuses += send_files(server, pairs[chunk:chunk + 40])
    assert statuses.count(0) == 0
    assert 0xC211 not in statuses and 0xC0FF not in statuses
    assert len(store.recent_rejections(100000)) - n_before >= len(pairs)
    time.sleep(0.5)
    assert not list(server.data_dir.glob("incoming/**/*.dcm"))


def _rss(srv):
    return psutil.Process(srv.pid).memory_info().rss


def test_slow_and_oversized_clients_cut_off(server, tmp_path):
    rss0 = _rss(server)
    conns, t0 = [], time.monotonic()
    for i in range(10):  # one byte, a partial A-ASSOCIATE-RQ, a trickle
        s = socket.create_connection(("127.0.0.1", server.port))
        s.sendall(b"\x01" if i % 2 else b"\x01\x00\x00\x00\x01\x00\x00\x01")
        conns.append(s)
    # a legitimate association meanwhile
    echoscu = need("echoscu")
    assert subprocess.run([echoscu, "-aec", "CDS", "127.0.0.1", str(server.port)], timeout=20).returncode == 0
    cut = []
    for s in conns:
        s.settimeout(15)
        try:
            while s.recv(4096):
                pass
        except OSError:
            pass
        cut.append(time.monotonic() - t0)
        s.close()
    assert max(cut) < 6, cut  # read timeout 1 s / PDU deadline 3 s / ACSE 2 s
    # oversized A-ASSOCIATE-RQ and P-DATA headers: refused before the body is read
    for pdu_type in (0x01, 0x04):
        s = socket.create_connection(("127.0.0.1", server.port))
        s.sendall(struct.pack(">BBL", pdu_type, 0, 256 << 20) + b"\0" * (1 << 20))
        s.settimeout(10)
        t1 = time.monotonic()
        try:
            while s.recv(4096):
                pass
        except OSError:
            pass
        assert time.monotonic() - t1 < 5
        s.close()
    assert _rss(server) - rss0 < 64 << 20
    print(f"cut-off max {max(cut):.2f} s; RSS {rss0 >> 20} -> {_rss(server) >> 20} MiB")
    reasons = [r.reason for r in store_of(server).recent_rejections(1000)]
    assert any("over the limit" in r for r in reasons)


def test_called_ae_checked_and_rejections_rate_limited(server):
    store = store_of(server)
    before = len(store.recent_rejections(100000))
    for _ in range(20):
        ae = AE(ae_title="SECSCU")
        ae.add_requested_context("1.2.840.10008.1.1")
        assoc = ae.associate("127.0.0.1", server.port, ae_title="NOT-CDS")
        assert assoc.is_rejected
        assert assoc.acceptor.primitive.diagnostic == 0x07
    rows = store.recent_rejections(100000)[: len(store.recent_rejections(100000)) - before]
    assert 1 <= len(rows) <= 2
    assert all("called AE title not recognized" in r.reason for r in rows)
    assert not any("allow-list" in r.reason for r in rows)
