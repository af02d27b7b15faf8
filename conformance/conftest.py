"""Fixtures of the conformance suite: the peers under test, by address or started locally.

Session-scoped so that each peer starts once per run (Orthanc ~0.5 s, FHIR ~2 s) and is stopped
at the end whatever happens. When a peer cannot be started because it is not installed, the tests
that need it are skipped with the exact reason, or fail when CONF_REQUIRE_PEERS=1 (CI).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from conformance.config import ConformanceConfig
from conformance.peers.dcmtk import StoreScp
from conformance.peers.fhir_server import FhirServer
from conformance.peers.orthanc import DICOMWEB_PLUGIN, OrthancServer
from conformance.peers.process import LOOPBACK, PeerUnavailable, dcmtk_missing_reason

RECIPE_DIR = Path(__file__).resolve().parent / "orthanc"
ROUTING_LUA = RECIPE_DIR / "route_to_cds.lua"
ORTHANC_TEMPLATE = RECIPE_DIR / "orthanc.json"
CDS_MODALITY = "cds"
CDS_AET = "CDS"


def unavailable(config: ConformanceConfig, reason: str) -> None:
    """Skip (developer machine) or fail (CONF_REQUIRE_PEERS=1) because a peer is missing."""
    if config.require_peers:
        pytest.fail(f"required peer unavailable: {reason}", pytrace=False)
    pytest.skip(reason)


@dataclass
class FhirPeer:
    """The FHIR server under test. ``local`` is the FhirServer when the suite started it."""

    base_url: str
    peer: str
    expectations: dict[str, Any]
    local: FhirServer | None

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url,
            headers={"Accept": "application/fhir+json", "Content-Type": "application/fhir+json"},
            timeout=30,
        )


@dataclass
class OrthancPeer:
    """The Orthanc under test: REST and DICOM addresses; ``local`` when the suite started it."""

    base_url: str
    auth: tuple[str, str] | None
    aet: str
    dicom_host: str
    dicom_port: int
    local: OrthancServer | None

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, auth=self.auth, timeout=60)

    def point_cds_modality(self, aet: str, host: str, port: int) -> None:
        """(Re)define the routing target "cds" at runtime (PUT /modalities/cds)."""
        with self.client() as c:
            r = c.put(f"/modalities/{CDS_MODALITY}", json={"AET": aet, "Host": host, "Port": port})
            if r.status_code != 200:
                raise AssertionError(
                    f"Orthanc refused PUT /modalities/{CDS_MODALITY} ({r.status_code}): {r.text[:300]}; "
                    "the routing tests need to point the recipe's 'cds' modality at the suite's stand-in"
                )


@pytest.fixture(scope="session")
def conf_config() -> ConformanceConfig:
    return ConformanceConfig.from_env()


@pytest.fixture(scope="session")
def peers_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("peers")


@pytest.fixture(scope="session")
def fhir_peer(conf_config: ConformanceConfig, peers_root: Path) -> Iterator[FhirPeer]:
    if conf_config.fhir_url:
        yield FhirPeer(conf_config.fhir_url, conf_config.fhir_peer, conf_config.fhir_expectations, None)
        return
    server = FhirServer(workdir=peers_root / "fhir", test_hooks=True)
    try:
        server.start()
    except PeerUnavailable as exc:
        unavailable(conf_config, str(exc))
    try:
        yield FhirPeer(server.base_url, "medplum", conf_config.fhir_expectations, server)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def cds_standin(conf_config: ConformanceConfig, peers_root: Path) -> Iterator[StoreScp]:
    """dcmtk storescp with AE CDS: the routing target while the real plugin is not involved."""
    reason = dcmtk_missing_reason(("storescp", "storescu"))
    if reason:
        unavailable(conf_config, reason)
    scp = StoreScp(peers_root / "standin", aet=CDS_AET)
    scp.start()
    try:
        yield scp
    finally:
        scp.stop()


@pytest.fixture(scope="session")
def orthanc_peer(
    conf_config: ConformanceConfig, peers_root: Path, cds_standin: StoreScp
) -> Iterator[OrthancPeer]:
    """Orthanc with the routing recipe, its 'cds' modality pointing at the stand-in."""
    if conf_config.orthanc_url:
        auth = (
            (conf_config.orthanc_user, conf_config.orthanc_password)
            if conf_config.orthanc_user
            else None
        )
        peer = OrthancPeer(
            conf_config.orthanc_url,
            auth,
            conf_config.orthanc_aet,
            conf_config.orthanc_host,
            conf_config.orthanc_port,
            None,
        )
        peer.point_cds_modality(CDS_AET, conf_config.standin_host, cds_standin.port)
        yield peer
        return
    server = OrthancServer(
        peers_root / "orthanc",
        aet="ORTHANC",
        modalities={CDS_MODALITY: (CDS_AET, LOOPBACK, cds_standin.port)},
        lua_scripts=[ROUTING_LUA],
        plugins=[DICOMWEB_PLUGIN],
        stable_age=1,
        username="conformance",
        password="conformance-secret",
        config_template=ORTHANC_TEMPLATE,
    )
    try:
        server.start()
    except PeerUnavailable as exc:
        unavailable(conf_config, str(exc))
    try:
        yield OrthancPeer(server.base_url, server.auth, server.aet, LOOPBACK, server.dicom_port, server)
    finally:
        server.stop()
