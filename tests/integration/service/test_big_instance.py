"""A 1.15 GB instance streams to disk: the listener's resident memory stays under 300 MB."""

from __future__ import annotations

import struct
import subprocess
import threading
import time
from io import BytesIO

import psutil
from pydicom import dcmread
from pydicom.filewriter import dcmwrite

from cds.store import Store
from tests.integration.service.spine_support import ServeProcess, mg_dataset, need

ROWS = COLS = 24000  # 16-bit: 1,152,000,000 bytes of pixel data
RSS_LIMIT = 300 * 1024 * 1024


def write_big_mg(path) -> str:
    """Header written by pydicom, then a sparse Pixel Data value: a 1 GB file in milliseconds."""
    ds = mg_dataset(rows=ROWS, cols=COLS, patient_id="BIG")
    del ds.PixelData
    buf = BytesIO()
    dcmwrite(buf, ds, enforce_file_format=True)
    n = ROWS * COLS * 2
    with open(path, "wb") as f:
        f.write(buf.getvalue())
        f.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, n))
        f.truncate(f.tell() + n)
    return ds.SOPInstanceUID


def test_gigabyte_instance_streams_with_low_rss(tmp_path):
    need("storescu")
    big = tmp_path / "big.dcm"
    uid = write_big_mg(big)
    assert big.stat().st_size > 1_000_000_000
    with ServeProcess(tmp_path / "data", CDS_STABLE_AGE_S="3600",
                      CDS_DISABLED_MODELS="mammography,slides,ultrasound,recurrence") as srv:
        proc = psutil.Process(srv.pid)
        peak = [proc.memory_info().rss]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                try:
                    peak.append(proc.memory_info().rss)
                except psutil.Error:
                    return
                time.sleep(0.05)

        t = threading.Thread(target=sample, daemon=True)
        t.start()
        try:
            r = subprocess.run(["storescu", "-aec", "CDS", "127.0.0.1", str(srv.port), str(big)],
                               capture_output=True, text=True, timeout=300)
        finally:
            done.set()
            t.join()
        assert r.returncode == 0, r.stderr
        store = Store(f"sqlite:///{srv.data_dir / 'cds.sqlite3'}")
        row = store.instance_row(uid)
        assert row and (row.size or 0) > 1_000_000_000
        assert dcmread(row.path, stop_before_pixels=True).Rows == ROWS
        assert max(peak) < RSS_LIMIT, f"listener RSS peaked at {max(peak) / 2**20:.0f} MB"
