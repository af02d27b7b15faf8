"""What every process that touches patient data does first (service, analyze, demo, status)."""

from __future__ import annotations

from cds.contracts.settings import Settings
from cds.security.privacy import disable_onnx_telemetry, quiet_third_party_loggers, restrict_process
from cds.security.site_secret import install_site_patient_key


def prepare_process(settings: Settings) -> None:
    """umask 077, third-party loggers quiet, onnxruntime telemetry off, data folders 0700, and
    the site secret installed as the key of patient keys (stable across restarts)."""
    restrict_process()
    quiet_third_party_loggers()
    disable_onnx_telemetry()
    settings.ensure_dirs()
    install_site_patient_key(settings)
