"""The DICOM listener against real clients: dcmtk echoscu/storescu and a pynetdicom SCU.

Each bad input must get its specific status and a rejection record, and the same association
must go on working after it.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, _config
from pynetdicom.sop_class import CTImageStorage

from cds.store import RejectionRow, Store
from tests.integration.service.spine_support import MG_FOR_PRESENTATION, ServeProcess, mg_dataset, need, write

US = "1.2.840.10008.5.1.4.1.1.6.1"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("listener")
    with ServeProcess(base / "data", CDS_STABLE_AGE_S="3600") as srv:
        yield srv


def store_of(srv: ServeProcess) -> Store:
    return Store(f"sqlite:///{srv.data_dir / 'cds.sqlite3'}")


def scu(srv: ServeProcess, contexts: list[tuple[str, list[str] | None]], calling: str = "TESTSCU"):
    ae = AE(ae_title=calling)
    for uid, ts in contexts:
        if ts:
            ae.add_requested_context(uid, ts)
        else:
            ae.add_requested_context(uid)
    return ae.associate("127.0.0.1", srv.port, ae_title="CDS")


def rejection_for(store: Store, sop_uid: str) -> RejectionRow:
    rows = store.rejections_for(sop_uid=sop_uid)
    assert rows, f"no rejection recorded for {sop_uid}"
    return rows[0]


def test_echoscu_and_storescu(server, tmp_path):
    need("echoscu")
    echo = subprocess.run(["echoscu", "-aec", "CDS", "127.0.0.1", str(server.port)],
                          capture_output=True, text=True, timeout=30)
    assert echo.returncode == 0, echo.stderr
    files = [write(mg_dataset(seed=i), tmp_path / f"mg{i}.dcm") for i in range(3)]
    store = subprocess.run(["storescu", "-aec", "CDS", "127.0.0.1", str(server.port), *map(str, files)],
                           capture_output=True, text=True, timeout=60)
    assert store.returncode == 0, store.stderr
    st = store_of(server)
    for f in files:
        uid = dcmread(f).SOPInstanceUID
        spooled = st.instance_path(uid)
        assert spooled, f"{uid} acknowledged but not indexed"
        # The file meta is the receiver's own; the dataset must be exactly what was sent.
        assert dcmread(spooled) == dcmread(f), "spooled dataset differs from what was sent"


@pytest.mark.parametrize("name", ["US1_J2KR.dcm", "US1_J2KI.dcm", "US1_UNCR.dcm"])
def test_pynetdicom_compressed_and_uncompressed(server, name):
    path = get_testdata_file(name)
    assert path, f"{name} missing: install pydicom-data (test extra)"
    ds = dcmread(path)
    assoc = scu(server, [(US, [str(ds.file_meta.TransferSyntaxUID)])])
    assert assoc.is_established
    status = assoc.send_c_store(ds)
    assoc.release()
    assert status.Status == 0x0000
    row = store_of(server).instance_row(ds.SOPInstanceUID)
    assert row and row.transfer_syntax == str(ds.file_meta.TransferSyntaxUID), "not stored as received"


def test_bad_inputs_keep_the_association(server, tmp_path):
    st = store_of(server)
    good = lambda i: mg_dataset(seed=100 + i)  # noqa: E731
    assoc = scu(server, [(MG_FOR_PRESENTATION, None), (CTImageStorage, None)])
    assert assoc.is_established

    # pixel data shorter than Rows x Columns x 2 bytes
    bad = mg_dataset(seed=1)
    bad.PixelData = bad.PixelData[:-64]
    status = assoc.send_c_store(bad)
    assert status.Status == 0xC002
    assert "Pixel Data" in (rejection_for(st, bad.SOPInstanceUID).reason or "")
    assert assoc.send_c_store(good(1)).Status == 0x0000

    # duplicate: acknowledged, stored once
    dup = good(2)
    assert assoc.send_c_store(dup).Status == 0x0000
    assert assoc.send_c_store(dup).Status == 0x0000
    row = st.instance_row(dup.SOPInstanceUID)
    assert row and row.duplicates == 1

    # SOP class not accepted: CT is refused at negotiation, recorded, association still fine
    ct = dcmread(get_testdata_file("CT_small.dcm"))
    with pytest.raises(ValueError):
        assoc.send_c_store(ct)
    assert any("SOP class not accepted" in (r.reason or "") and CTImageStorage in (r.reason or "")
               for r in st.rejections_for(calling_ae="TESTSCU"))
    assert assoc.send_c_store(good(3)).Status == 0x0000
    assoc.release()


def test_truncated_and_missing_uid_files(server, tmp_path):
    """Raw files sent byte for byte (chunked send): a truncated one and one without (0008,0018)."""
    st = store_of(server)
    truncated = write(mg_dataset(seed=5, rows=128, cols=128), tmp_path / "trunc.dcm")
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) - 5000])
    trunc_uid = dcmread(truncated, stop_before_pixels=True).SOPInstanceUID

    no_uid = mg_dataset(seed=6)
    del no_uid.SOPInstanceUID  # file meta still names it, so the C-STORE request does too
    missing = tmp_path / "nouid.dcm"
    no_uid.preamble = b"\x00" * 128  # keep the Part 10 header: the SCU reads its file meta
    no_uid.save_as(missing, enforce_file_format=False)
    missing_uid = no_uid.file_meta.MediaStorageSOPInstanceUID

    ok = write(mg_dataset(seed=7), tmp_path / "ok.dcm")
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        assoc = scu(server, [(MG_FOR_PRESENTATION, [ExplicitVRLittleEndian])])
        assert assoc.is_established
        assert assoc.send_c_store(truncated).Status == 0xC003
        assert assoc.send_c_store(missing).Status == 0xC001
        assert assoc.send_c_store(ok).Status == 0x0000
        assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = False
    assert "truncated" in (rejection_for(st, trunc_uid).reason or "")
    assert "(0008,0018)" in (rejection_for(st, missing_uid).reason or "")
    assert not st.instance_exists(trunc_uid)
    quarantined = Path(rejection_for(st, trunc_uid).quarantine_path or "")
    assert quarantined.exists(), "a refused instance must be kept for inspection"


def test_disallowed_calling_ae_rejected(tmp_path):
    with ServeProcess(tmp_path / "data", CDS_ALLOWED_AES="GOODAE,OTHER") as srv:
        bad = scu(srv, [(MG_FOR_PRESENTATION, None)], calling="BADAE")
        assert bad.is_rejected
        good = scu(srv, [(MG_FOR_PRESENTATION, None)], calling="GOODAE")
        assert good.is_established
        assert good.send_c_store(mg_dataset(seed=9)).Status == 0x0000
        good.release()
        time.sleep(0.3)
        rows = store_of(srv).rejections_for(calling_ae="BADAE")
        assert rows and "allow-list" in (rows[0].reason or "")


def test_disk_full_is_out_of_resources(tmp_path):
    """A data folder on a 6 MB tmpfs: a 10 MB instance gets A700, the association goes on."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)]).returncode != 0:
        pytest.fail("cannot mount a small tmpfs (needs root): the disk-full test cannot run")
    try:
        with ServeProcess(mnt / "data") as srv:
            assoc = scu(srv, [(MG_FOR_PRESENTATION, None)])
            big = mg_dataset(seed=11, rows=2560, cols=2048)  # 10 MB
            assert assoc.send_c_store(big).Status == 0xA700
            small = mg_dataset(seed=12)
            assert assoc.send_c_store(small).Status == 0x0000
            assoc.release()
            st = store_of(srv)
            assert "No space" in (rejection_for(st, big.SOPInstanceUID).reason or "")
            assert st.instance_exists(small.SOPInstanceUID)
    finally:
        subprocess.run(["umount", "-l", str(mnt)])
