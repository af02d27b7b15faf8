"""dcmtk on loopback: ``storescp`` as a DICOM sink, ``storescu`` to send, and running other tools."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from conformance.peers.process import (
    LOOPBACK,
    ManagedProcess,
    PeerFailed,
    PeerUnavailable,
    dcmtk_missing_reason,
    free_port,
    wait_port_open,
)


class StoreScp(ManagedProcess):
    """dcmtk ``storescp`` writing every received instance under ``workdir/received``.

    Stands in for the plugin's listener when the routing recipe is tested on its own.
    """

    name = "storescp"

    def __init__(self, workdir: Path, port: int = 0, aet: str = "CDS") -> None:
        super().__init__(workdir)
        self.requested_port = port
        self.port = 0
        self.aet = aet
        self.received_dir = self.workdir / "received"

    def start(self) -> StoreScp:
        reason = dcmtk_missing_reason(("storescp",))
        if reason:
            raise PeerUnavailable(reason)
        self.received_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.requested_port or free_port()
        # +xa: accept every transfer syntax Orthanc may propose; +uf: a new file per reception,
        # so that an instance received twice shows up twice ("exactly once" is checkable).
        self._spawn(
            ["storescp", "-aet", self.aet, "+xa", "+uf", "-od", str(self.received_dir), str(self.port)]
        )
        try:
            wait_port_open(self.port, timeout_s=10)
        except PeerFailed:
            self._check_alive()
            self.stop()
            raise
        return self

    def __enter__(self) -> StoreScp:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def received(self) -> list[Path]:
        """Files received so far, one per reception (duplicates included)."""
        return sorted(p for p in self.received_dir.iterdir() if p.is_file())

    def received_sop_uids(self, study_uid: str | None = None) -> list[str]:
        """SOP Instance UIDs received (one entry per reception), optionally of one study only."""
        from pydicom import dcmread
        from pydicom.errors import InvalidDicomError

        uids = []
        for path in self.received():
            try:
                ds = dcmread(path, stop_before_pixels=True)
            except (InvalidDicomError, OSError, EOFError):
                continue  # still being written
            if study_uid is None or str(ds.get("StudyInstanceUID", "")) == study_uid:
                uids.append(str(ds.SOPInstanceUID))
        return uids


def run_tool(argv: Sequence[str], timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run a command-line tool (storescu, dciodvfy, ...) and return its completed process."""
    env = dict(os.environ)
    return subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout_s, env=env, check=False
    )


# dcmtk storescu option proposing exactly one (compressed) transfer syntax.
STORESCU_TS_OPTION = {
    "1.2.840.10008.1.2": "-xi",
    "1.2.840.10008.1.2.1": "-xe",
    "1.2.840.10008.1.2.2": "-xb",
    "1.2.840.10008.1.2.1.99": "-xd",
    "1.2.840.10008.1.2.4.50": "-xy",
    "1.2.840.10008.1.2.4.51": "-xx",
    "1.2.840.10008.1.2.4.57": "-xs",
    "1.2.840.10008.1.2.4.70": "-xs",
    "1.2.840.10008.1.2.4.80": "-xt",
    "1.2.840.10008.1.2.4.81": "-xu",
    "1.2.840.10008.1.2.4.90": "-xv",
    "1.2.840.10008.1.2.4.91": "-xw",
    "1.2.840.10008.1.2.5": "-xr",
}


def storescu(
    files: Sequence[Path],
    port: int,
    called_aet: str,
    calling_aet: str = "STORESCU",
    host: str = LOOPBACK,
) -> list[subprocess.CompletedProcess[str]]:
    """Send files with dcmtk ``storescu``; raises with its output on failure.

    ``-R`` proposes exactly the SOP classes of the files (storescu's default list lacks e.g.
    Comprehensive 3D SR and Segmentation). storescu proposes one transfer-syntax family per run,
    so files are grouped by transfer syntax: one association per group (one in the usual case).
    """
    from pydicom import dcmread

    reason = dcmtk_missing_reason(("storescu",))
    if reason:
        raise PeerUnavailable(reason)
    groups: dict[str, list[Path]] = {}
    for f in files:
        ts = str(dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID)
        if ts not in STORESCU_TS_OPTION:
            raise ValueError(f"{f}: transfer syntax {ts} has no storescu option (see STORESCU_TS_OPTION)")
        groups.setdefault(ts, []).append(Path(f))
    runs = []
    for ts, group in groups.items():
        argv = [
            "storescu", "-R", STORESCU_TS_OPTION[ts], "-aet", calling_aet, "-aec", called_aet,
            host, str(port), *map(str, group),
        ]
        done = run_tool(argv)
        if done.returncode != 0:
            raise RuntimeError(
                f"storescu to {called_aet}@{host}:{port} failed (exit {done.returncode}, "
                f"transfer syntax {ts}):\n{done.stdout}\n{done.stderr}"
            )
        runs.append(done)
    return runs
