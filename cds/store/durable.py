"""Durable file moves: the "write, fsync, rename, fsync the folder" sequence.

An instance is acknowledged only after its bytes and its directory entry are on stable storage,
so a power cut after Success never loses it. Output writers use the same helpers.
"""

from __future__ import annotations

import errno
import os
import shutil
import threading
from pathlib import Path

OUT_OF_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC  # files are created 0600: outputs carry patient data


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def makedirs_durable(path: Path) -> None:
    """mkdir -p, fsyncing each parent whose entry was created, so new folders survive a crash."""
    missing: list[Path] = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:
            continue
        fsync_dir(d.parent)


def move_durable(src: Path, dest: Path) -> None:
    """Move a file into place durably; falls back to copy+fsync across filesystems."""
    makedirs_durable(dest.parent)
    fsync_file(src)
    try:
        os.replace(src, dest)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        tmp = dest.with_suffix(dest.suffix + ".partial")
        shutil.copyfile(src, tmp)
        fsync_file(tmp)
        os.replace(tmp, dest)
        os.unlink(src)
    fsync_dir(dest.parent)


def copy_durable(src: Path, dest: Path) -> None:
    """Copy a file into place atomically and durably (streamed; a re-copy overwrites ``dest``)."""
    makedirs_durable(dest.parent)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(src, "rb") as s, open(os.open(tmp, _CREATE, 0o600), "wb") as d:
        shutil.copyfileobj(s, d, 4 << 20)
        d.flush()
        os.fsync(d.fileno())
    os.replace(tmp, dest)
    fsync_dir(dest.parent)


def write_durable(dest: Path, data: bytes) -> None:
    """Write bytes to ``dest`` atomically and durably (temp file in the same folder)."""
    makedirs_durable(dest.parent)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    with open(os.open(tmp, _CREATE, 0o600), "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, dest)
    fsync_dir(dest.parent)
