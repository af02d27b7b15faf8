"""Receiving a STOW-RS body: ``multipart/related`` streamed part by part into temp files.

The body is never held in memory: python-multipart's streaming parser hands over each part's
bytes as they arrive, and they go straight to a file in ``settings.incoming_dir`` (the same
folder C-STORE receives into). A body over ``http_stow_max_bytes`` stops the transfer (413) and
every temp file is removed.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from fastapi import HTTPException
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

DICOM = "application/dicom"


@dataclass
class Part:
    path: Path
    content_type: str = ""


@dataclass
class _Receiver:
    folder: Path
    parts: list[Part] = field(default_factory=list)
    _file: IO[bytes] | None = None
    _header: bytearray = field(default_factory=bytearray)
    _value: bytearray = field(default_factory=bytearray)

    def begin(self) -> None:
        fd, name = tempfile.mkstemp(prefix="stow-", suffix=".part", dir=self.folder)
        self._file = os.fdopen(fd, "wb")
        self.parts.append(Part(Path(name)))

    def data(self, data: bytes, start: int, end: int) -> None:
        if self._file is not None:
            self._file.write(data[start:end])

    def end(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self._header += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def header_end(self) -> None:
        if bytes(self._header).strip().lower() == b"content-type" and self.parts:
            self.parts[-1].content_type = parse_options_header(bytes(self._value))[0].decode("latin-1").lower()
        self._header.clear()
        self._value.clear()

    def discard(self) -> None:
        self.end()
        for part in self.parts:
            part.path.unlink(missing_ok=True)


def check_media_type(content_type: str) -> bytes:
    """The boundary of a ``multipart/related; type="application/dicom"`` body, else 415."""
    media, params = parse_options_header(content_type)
    kind = params.get(b"type", b"").decode("latin-1").lower()
    if media != b"multipart/related" or kind not in ("", DICOM) or not params.get(b"boundary"):
        raise HTTPException(415, f"STOW-RS takes multipart/related; type=\"{DICOM}\" with a boundary "
                                 f"(got {content_type or 'no Content-Type'!r}); other representations "
                                 "(DICOM JSON/XML with bulk data) are not accepted")
    return params[b"boundary"]


async def receive_parts(stream: AsyncIterator[bytes], content_type: str, folder: Path,
                        max_bytes: int) -> list[Part]:
    """Stream the body's parts into files in ``folder``; 413 past ``max_bytes``, 400 if malformed."""
    boundary = check_media_type(content_type)
    folder.mkdir(parents=True, exist_ok=True)
    rx = _Receiver(folder)
    parser = MultipartParser(boundary, callbacks={
        "on_part_begin": rx.begin, "on_part_data": rx.data, "on_part_end": rx.end,
        "on_header_field": rx.header_field, "on_header_value": rx.header_value, "on_header_end": rx.header_end})
    seen = 0
    try:
        async for chunk in stream:
            seen += len(chunk)
            if seen > max_bytes:
                raise HTTPException(413, f"STOW-RS body larger than {max_bytes} bytes (CDS_HTTP_STOW_MAX_BYTES); "
                                         "send the instances in several requests")
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as exc:
        rx.discard()
        raise HTTPException(400, f"the multipart/related body cannot be parsed: {exc}") from exc
    except BaseException:
        rx.discard()
        raise
    rx.end()
    wrong = sorted({p.content_type for p in rx.parts if p.content_type not in ("", DICOM)})
    if wrong:
        rx.discard()
        raise HTTPException(415, f"every part must be {DICOM} (got {', '.join(wrong)})")
    if not rx.parts:
        raise HTTPException(400, "the multipart/related body has no parts: no instance to store")
    return rx.parts
