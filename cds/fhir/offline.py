"""The offline FHIR source: a folder of Bundles (``*.json``) and/or NDJSON bulk-export files.

``cds analyze`` and the demo read the patient's Observations and ultrasound report from here
instead of a server. It answers the same three questions as the server path (find the
patient, list Observations, list DiagnosticReports) so :mod:`cds.fhir.context` has one logic.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class OfflineFhirSource:
    def __init__(self, folder: Path) -> None:
        folder = Path(folder)
        if not folder.exists():
            raise FileNotFoundError(f"FHIR offline folder {folder} does not exist (settings.fhir_offline_dir)")
        self.folder = folder
        self.resources: list[dict[str, Any]] = []
        files = [folder] if folder.is_file() else sorted(folder.rglob("*"))
        for f in files:
            if f.suffix == ".ndjson":
                for n, line in enumerate(f.read_text().splitlines(), start=1):
                    if line.strip():
                        try:
                            self._add(json.loads(line))
                        except json.JSONDecodeError as exc:
                            raise ValueError(f"{f} line {n}: not valid JSON ({exc.msg})") from exc
            elif f.suffix == ".json":
                try:
                    self._add(json.loads(f.read_text()))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{f}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc

    def _add(self, res: dict[str, Any]) -> None:
        if not isinstance(res, dict) or "resourceType" not in res:
            return
        if res["resourceType"] == "Bundle":
            for e in res.get("entry", []):
                if "resource" in e:
                    self._add(e["resource"])
        else:
            self.resources.append(res)

    def of_type(self, rtype: str) -> list[dict[str, Any]]:
        return [r for r in self.resources if r["resourceType"] == rtype]

    def find_patient(self, system: str, value: str) -> dict[str, Any] | None:
        for p in self.of_type("Patient"):
            for ident in p.get("identifier", []):
                if ident.get("value") == value and (not system or ident.get("system") == system):
                    return p
        return None

    def for_patient(self, rtype: str, patient_ref: str) -> list[dict[str, Any]]:
        return [r for r in self.of_type(rtype) if (r.get("subject") or {}).get("reference") == patient_ref]
