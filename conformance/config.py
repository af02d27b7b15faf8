"""Where the peers under test are: environment variables, else the local peers started by the suite.

WHY by address: a site points the same suite at its own Orthanc and FHIR server (HAPI, ...) and
gets the same checks; expectations that legitimately differ between servers are looked up per peer
in ``FHIR_EXPECTATIONS`` rather than skipped.

Variables (all optional):
  CONF_ORTHANC_URL, CONF_ORTHANC_USER, CONF_ORTHANC_PASSWORD   Orthanc REST API
  CONF_ORTHANC_AET, CONF_ORTHANC_HOST, CONF_ORTHANC_PORT       Orthanc DICOM (default ORTHANC, 127.0.0.1, 4242)
  CONF_FHIR_URL                                                FHIR R4 base URL
  CONF_PEER                                                    medplum | hapi (default: medplum)
  CONF_STANDIN_HOST                                            address an external Orthanc uses to reach
                                                               the suite's stand-in/plugin (default 127.0.0.1)
  CONF_REQUIRE_PEERS=1                                         a missing peer fails instead of skipping (CI)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

KNOWN_FHIR_PEERS = ("medplum", "hapi")

# What each FHIR server does with the requests the plugin depends on. A set lists every status the
# server is known to answer; the tests assert membership, so a change of behaviour is caught.
FHIR_EXPECTATIONS: dict[str, dict[str, Any]] = {
    "medplum": {
        "create": {201},
        "conditional_create_existing": {200},
        "conditional_create_multiple": {412},
        "missing_required_element": {400},
        "unknown_element": {400},
        "bad_date": {400},
        "malformed_json": {400},
        # Medplum's validateResource does not check required ValueSet bindings.
        "code_outside_required_binding": {201},
        "read_missing": {404},
        "bare_patient_search_param": True,  # the wrapper rewrites ?patient=<id> to Patient/<id>
        # Medplum applies FHIR's 1 MB string limit to base64Binary too: an inline PDF over ~750 kB
        # (1 MB of base64) in DiagnosticReport.presentedForm is refused.
        "attachment_over_1mb": {400},
    },
    "hapi": {
        "create": {201},
        "conditional_create_existing": {200},
        "conditional_create_multiple": {412},
        "missing_required_element": {201, 400, 422},  # only rejected with request validation on
        "unknown_element": {201, 400, 422},  # lenient parser by default
        "bad_date": {400},
        "malformed_json": {400},
        "code_outside_required_binding": {400},
        "read_missing": {404, 410},
        "bare_patient_search_param": True,
        "attachment_over_1mb": {201},
    },
}


@dataclass(frozen=True)
class ConformanceConfig:
    """The addresses under test; ``None`` URL means: start the local peer."""

    orthanc_url: str | None
    orthanc_user: str | None
    orthanc_password: str | None
    orthanc_aet: str
    orthanc_host: str
    orthanc_port: int
    fhir_url: str | None
    fhir_peer: str
    standin_host: str
    require_peers: bool

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> ConformanceConfig:
        e = dict(os.environ if env is None else env)
        peer = e.get("CONF_PEER", "medplum").strip().lower() or "medplum"
        if peer not in KNOWN_FHIR_PEERS:
            raise ValueError(
                f"CONF_PEER={peer!r} is not one of {', '.join(KNOWN_FHIR_PEERS)}; "
                "add its expectations to conformance/config.py FHIR_EXPECTATIONS"
            )
        port_text = e.get("CONF_ORTHANC_PORT", "4242")
        try:
            port = int(port_text)
        except ValueError as exc:
            raise ValueError(f"CONF_ORTHANC_PORT={port_text!r} is not a port number") from exc
        return cls(
            orthanc_url=(e.get("CONF_ORTHANC_URL") or "").rstrip("/") or None,
            orthanc_user=e.get("CONF_ORTHANC_USER") or None,
            orthanc_password=e.get("CONF_ORTHANC_PASSWORD") or None,
            orthanc_aet=e.get("CONF_ORTHANC_AET", "ORTHANC"),
            orthanc_host=e.get("CONF_ORTHANC_HOST", "127.0.0.1"),
            orthanc_port=port,
            fhir_url=(e.get("CONF_FHIR_URL") or "").rstrip("/") or None,
            fhir_peer=peer,
            standin_host=e.get("CONF_STANDIN_HOST", "127.0.0.1"),
            require_peers=e.get("CONF_REQUIRE_PEERS", "") == "1",
        )

    @property
    def fhir_expectations(self) -> dict[str, Any]:
        return FHIR_EXPECTATIONS[self.fhir_peer]
