"""STOW-RS (PS3.18 §10.5): ``POST /dicomweb/studies[/{study}]`` stores instances like C-STORE.

Each part goes through :func:`cds.intake.spool.spool_instance`, the intake C-STORE uses
(validate, write, fsync, index, BALP receipt), with the SOP Class and Instance UIDs the part's
own dataset carries (there is no DIMSE command here). The answer is a DICOM JSON dataset with a
ReferencedSOPSequence for what was stored and a FailedSOPSequence (FailureReason plus a readable
ErrorComment) for what was not: 200 all stored, 202 some failed, 409 none stored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from cds.contracts.review import Principal, Role
from cds.contracts.uids import is_valid_uid
from cds.intake.spool import refuse, spool_instance
from listeners.http.auth import require_any
from listeners.http.context import HttpContext, context
from listeners.http.stow_receive import Part, receive_parts

DICOM_JSON = "application/dicom+json"
STUDY_MISMATCH = 0xC409  # the instance's Study Instance UID is not the one in the request path
_FAILED, _REFERENCED = "00081198", "00081199"


def _uids(path: Path) -> tuple[str, str, str]:
    """(SOP Class, SOP Instance, Study Instance) UIDs the part's dataset states ("" when unreadable)."""
    try:
        ds = dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID", "SOPInstanceUID",
                                                                    "StudyInstanceUID"])
    except (InvalidDicomError, OSError, ValueError, TypeError, EOFError, KeyError):
        return "", "", ""
    return (str(ds.get("SOPClassUID", "") or ""), str(ds.get("SOPInstanceUID", "") or ""),
            str(ds.get("StudyInstanceUID", "") or ""))


def _ref(sop_class: str, sop_uid: str) -> dict[str, Any]:
    item: dict[str, Any] = {}
    if is_valid_uid(sop_class):
        item["00081150"] = {"vr": "UI", "Value": [sop_class]}
    if is_valid_uid(sop_uid):
        item["00081155"] = {"vr": "UI", "Value": [sop_uid]}
    return item


def store_part(ctx: HttpContext, part: Part, study: str | None, calling: str) -> dict[str, Any]:
    """Spool one part; the response item, with ``00081197`` FailureReason when it was not stored."""
    sop_class, sop_uid, study_uid = _uids(part.path)
    if study is not None and study_uid and study_uid != study:
        reason = "the instance's Study Instance UID differs from the study in the request URL"
        refuse(ctx.settings, ctx.store, calling, sop_uid, STUDY_MISMATCH, reason, part.path)
        return {**_ref(sop_class, sop_uid), "00081197": {"vr": "US", "Value": [STUDY_MISMATCH]},
                "00000902": {"vr": "LO", "Value": [reason]}}
    outcome = spool_instance(ctx.settings, ctx.store, part.path, calling, command_sop_class=sop_class,
                             command_sop_instance=sop_uid)
    if outcome.ok:
        return _ref(sop_class, sop_uid)
    return {**_ref(sop_class, sop_uid), "00081197": {"vr": "US", "Value": [outcome.status]},
            "00000902": {"vr": "LO", "Value": [outcome.reason[:64]]}}


def router() -> APIRouter:
    r = APIRouter(prefix="/dicomweb", tags=["stow-rs"])
    sender = require_any(Role.sender, Role.operator)
    answers: dict[int | str, dict[str, Any]] = {
        200: {"content": {DICOM_JSON: {}}, "description": "all instances stored"},
        202: {"content": {DICOM_JSON: {}}, "description": "some instances stored, FailedSOPSequence names the others"},
        409: {"content": {DICOM_JSON: {}}, "description": "no instance stored"},
        413: {"description": "body larger than CDS_HTTP_STOW_MAX_BYTES"},
        415: {"description": "not multipart/related; type=\"application/dicom\""}}

    async def stow(request: Request, study: str | None, ctx: HttpContext, who: Principal) -> JSONResponse:
        if study is not None and not is_valid_uid(study):
            raise HTTPException(400, "the study in the URL is not a valid DICOM UID")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > ctx.settings.http_stow_max_bytes:
            raise HTTPException(413, f"STOW-RS body of {declared} bytes is larger than "
                                     f"{ctx.settings.http_stow_max_bytes} (CDS_HTTP_STOW_MAX_BYTES)")
        parts = await receive_parts(request.stream(), request.headers.get("content-type", ""),
                                    ctx.settings.incoming_dir, ctx.settings.http_stow_max_bytes)
        calling = f"STOW:{who.name}"[:64]
        items = [await run_in_threadpool(store_part, ctx, part, study, calling) for part in parts]
        stored = [i for i in items if "00081197" not in i]
        failed = [i for i in items if "00081197" in i]
        body: dict[str, Any] = {}
        if stored:
            body[_REFERENCED] = {"vr": "SQ", "Value": stored}
        if failed:
            body[_FAILED] = {"vr": "SQ", "Value": failed}
        status = 200 if not failed else 202 if stored else 409
        return JSONResponse(body, status_code=status, media_type=DICOM_JSON)

    @r.post("/studies", response_class=JSONResponse, responses=answers)
    async def store_instances(request: Request, ctx: HttpContext = Depends(context),
                              who: Principal = Depends(sender)) -> JSONResponse:
        """Store instances of any studies (STOW-RS)."""
        return await stow(request, None, ctx, who)

    @r.post("/studies/{study}", response_class=JSONResponse, responses=answers)
    async def store_study_instances(study: str, request: Request, ctx: HttpContext = Depends(context),
                                    who: Principal = Depends(sender)) -> JSONResponse:
        """Store instances of one study; an instance of another study fails (0xC409)."""
        return await stow(request, study, ctx, who)

    return r
