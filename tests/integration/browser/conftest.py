"""One served demo case per module: Orthanc (the PACS), the FHIR peer, the service with HTTP."""

from __future__ import annotations

import pytest

from conformance.peers.orthanc import OrthancServer
from conformance.peers.process import PeerUnavailable
from tests.integration.browser.support import serve_case
from tests.peers import missing, need


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory):
    try:
        with OrthancServer(tmp_path_factory.mktemp("orthanc")) as srv:
            yield srv
    except PeerUnavailable as exc:
        missing(str(exc))


@pytest.fixture(scope="module")
def served(fhir_peer, orthanc, tmp_path_factory: pytest.TempPathFactory):
    need("chromium")
    fhir_peer.reset()
    service = serve_case(tmp_path_factory.mktemp("served"), fhir_peer.base_url, orthanc.aet, orthanc.dicom_port)
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="module")
def browser(served):
    from playwright.sync_api import sync_playwright

    from tests.integration.browser.support import launch

    with sync_playwright() as p:
        b = launch(p)
        try:
            yield b
        finally:
            b.close()
