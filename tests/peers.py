"""How a test reacts to a missing peer (dcmtk, dicom3tools, PixelMed, the FHIR peer, npm data):
skipped on a developer's machine that lacks it, a failure in CI (CONF_REQUIRE_PEERS=1), so a
validator can never drop out of the test run silently."""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest

REQUIRED = os.environ.get("CONF_REQUIRE_PEERS") == "1"


def missing(reason: str) -> NoReturn:
    if REQUIRED:
        pytest.fail(f"required peer unavailable: {reason}", pytrace=False)
    pytest.skip(reason)


def need(tool: str) -> str:
    """The tool's path, or :func:`missing` naming it."""
    path = shutil.which(tool)
    if path is None:
        missing(f"{tool} is not installed: run scripts/install_peers.sh")
    return path


def needs_tool(tool: str) -> pytest.MarkDecorator:
    """A skip mark for a missing tool that does not apply in CI (where the test then fails)."""
    return pytest.mark.skipif(shutil.which(tool) is None and not REQUIRED,
                              reason=f"{tool} is not installed: run scripts/install_peers.sh")


def need_postgres() -> str:
    """Why not: PostgreSQL's server binaries (initdb, pg_ctl; Debian keeps them off PATH) and, as
    root, the ``postgres`` OS user to run them. Returns the folder of the binaries."""
    from conformance.peers.postgres import postgres_bindir, postgres_missing_reason

    reason = postgres_missing_reason()
    if reason is not None:
        missing(reason)
    return str(postgres_bindir())
