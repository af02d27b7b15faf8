"""Where an accepted instance lands in the spool, and placing it there without ever replacing a file.

The path is ``<spool>/<Study UID>/<Series UID>/<SOP Instance UID>.dcm`` built only from UIDs that
passed :func:`cds.contracts.uids.require_uid`: a valid UID holds digits and dots only, never ``/``
or ``..``, so no input can name a path outside the spool (checked again on the resolved path).

A file is placed with ``link(2)``, which fails when the target exists, instead of ``rename(2)``,
which silently replaces it: an acknowledged instance can never be overwritten, not even by two
associations racing with the same SOP Instance UID.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from cds.contracts.errors import InputError
from cds.contracts.uids import require_uid
from cds.store.durable import fsync_dir, fsync_file, makedirs_durable


class UnsafeSpoolPath(InputError):
    """A spool path that would leave the spool folder (never expected after UID validation)."""


def spool_path(spool_dir: Path, study_uid: str, series_uid: str, sop_uid: str) -> Path:
    """The spool file for validated UIDs; raises :class:`~cds.contracts.uids.InvalidUid` otherwise."""
    parts = (require_uid(study_uid, "StudyInstanceUID (0020,000D)"),
             require_uid(series_uid, "SeriesInstanceUID (0020,000E)"),
             require_uid(sop_uid, "SOPInstanceUID (0008,0018)") + ".dcm")
    dest = spool_dir.joinpath(*parts)
    root = spool_dir.resolve()
    if root not in dest.resolve().parents:
        raise UnsafeSpoolPath("the spool path of an instance would leave the spool folder")
    return dest


def place_new(src: Path, dest: Path) -> bool:
    """Durably move ``src`` to ``dest`` unless ``dest`` exists; False (``src`` kept) if it does."""
    makedirs_durable(dest.parent)
    fsync_file(src)
    try:
        os.link(src, dest)
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EMLINK):
            raise
        try:
            _copy_new(src, dest)  # filesystems without hard links: exclusive create of a copy
        except FileExistsError:
            return False
    os.unlink(src)
    fsync_dir(dest.parent)
    fsync_dir(src.parent)
    return True


def _copy_new(src: Path, dest: Path) -> None:
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # FileExistsError if present
    try:
        with open(src, "rb") as s, os.fdopen(fd, "wb") as d:
            shutil.copyfileobj(s, d, 4 << 20)
            d.flush()
            os.fsync(d.fileno())
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
