"""Several `cds listen` processes on one host share the DICOM port (CDS_LISTEN_REUSE_PORT).

Two listeners bind the same port only with the setting on (without it the second bind fails, as
before); with it, dcmtk's storescu reaches them through the one port, and each instance is stored
exactly once in the shared store whichever listener took the association.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from cds.contracts.settings import Settings
from cds.store import Store
from listeners.dicom_scp import DicomListener
from tests.dicom_files import sc_file
from tests.peers import needs_tool

pytestmark = pytest.mark.peers


def _listener(data: Path, port: int, reuse: bool) -> tuple[DicomListener, Store]:
    s = Settings(data_dir=data, host="127.0.0.1", port=port, listen_reuse_port=reuse, stable_age_s=3600)
    s.ensure_dirs()
    store = Store(s.store_url)
    lst = DicomListener(s, store)
    lst.start()
    return lst, store


def test_second_listener_cannot_bind_without_the_setting(tmp_path: Path) -> None:
    first, store = _listener(tmp_path / "data", 0, reuse=False)
    try:
        with pytest.raises(OSError):
            _listener(tmp_path / "data", first.port, reuse=False)
    finally:
        first.stop()
        store.close()


@needs_tool("storescu")
def test_two_listeners_share_the_port_and_store_each_instance_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first, store1 = _listener(data, 0, reuse=True)
    second, store2 = _listener(data, first.port, reuse=True)
    try:
        assert second.port == first.port
        study = generate_uid()
        files = [str(sc_file(tmp_path / f"i{n}.dcm", "SHARED-1", study)) for n in range(6)]
        for chunk in (files[:2], files[2:4], files[4:]):  # three associations through one port
            done = subprocess.run(["storescu", "-aet", "PACS", "-aec", "CDS", "127.0.0.1", str(first.port),
                                   *chunk], capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr
        second.stop()  # the port still answers through the other listener
        done = subprocess.run(["storescu", "-aet", "PACS", "-aec", "CDS", "127.0.0.1", str(first.port),
                               files[0]], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        stored = store1.study_instances(study)
        assert len(stored) == 6 and len({i.sop_instance_uid for i in stored}) == 6
    finally:
        first.stop()
        store1.close()
        store2.close()


def test_a_starting_listener_leaves_the_others_transfers_alone(tmp_path: Path) -> None:
    """On a shared spool each listener receives into its own folder: a listener starting (or
    restarting) removes the partial transfers of dead listeners it can see, never a live one's."""
    import os
    import subprocess
    import sys

    from cds.store import worker_name

    data = tmp_path / "data"
    first, store1 = _listener(data, 0, reuse=True)
    try:
        in_flight = first.incoming / "transfer.dcm"
        in_flight.write_bytes(b"partial")
        dead_pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                                  capture_output=True, text=True).stdout.strip()
        dead = data / "incoming" / f"{worker_name().split(':')[0]}:{dead_pid}:listen"
        dead.mkdir(parents=True)
        (dead / "cut.dcm").write_bytes(b"cut by a crash")
        elsewhere = data / "incoming" / f"otherhost@00000000:{os.getpid()}:listen"  # not ours to judge
        elsewhere.mkdir()
        second, store2 = _listener(data, first.port, reuse=True)
        second.stop()
        store2.close()
        assert in_flight.exists(), "a starting listener removed another listener's transfer"
        assert not dead.exists() and elsewhere.is_dir()
    finally:
        first.stop()
        store1.close()
