"""The offline FHIR source: a folder of Bundles (``*.json``) and/or NDJSON bulk-export files.

``cds analyze`` and the demo read the patient's Observations and ultrasound report from here
instead of a server. It answers the same questions as the server path (find the Patients with
an identifier, list a type's resources for a patient) so :mod:`cds.fhir.reader` has one logic.
References are resolved as they come (relative, absolute, ``urn:uuid:`` through the entries'
fullUrl), in any order across files. A file that is not JSON is an :class:`InputError` (:class:`OfflineFileError`) naming
the file and line; an entry that is not a resource is recorded in :attr:`problems` (file and
entry index) and skipped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cds.contracts.errors import InputError
from cds.fhir.references import ReferenceIndex, resource_name, subject_reference


class OfflineFileError(InputError, ValueError):
    """An offline FHIR file cannot be read; the message names the file (and line)."""


class OfflineFhirSource:
    def __init__(self, folder: Path) -> None:
        folder = Path(folder)
        if not folder.exists():
            raise FileNotFoundError(f"FHIR offline folder {folder} does not exist (settings.fhir_offline_dir)")
        self.folder = folder
        self.resources: list[tuple[dict[str, Any], str]] = []
        self.index = ReferenceIndex()
        self.problems: list[str] = []
        files = [folder] if folder.is_file() else sorted(folder.rglob("*"))
        for f in files:
            if f.suffix == ".ndjson":
                for n, line in enumerate(f.read_text().splitlines(), start=1):
                    if line.strip():
                        try:
                            self._add(json.loads(line), f"{f.name} line {n}")
                        except json.JSONDecodeError as exc:
                            raise OfflineFileError(f"{f} line {n}: not valid JSON ({exc.msg})") from exc
            elif f.suffix == ".json":
                try:
                    self._add(json.loads(f.read_text()), f.name)
                except json.JSONDecodeError as exc:
                    raise OfflineFileError(f"{f}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc

    def _add(self, res: Any, where: str, full_url: str = "") -> None:
        if not isinstance(res, dict) or not isinstance(res.get("resourceType"), str):
            self.problems.append(f"{where}: not a FHIR resource (no resourceType); skipped")
            return
        if res["resourceType"] == "Bundle":
            entries = res.get("entry", [])
            if not isinstance(entries, list):
                self.problems.append(f"{where}: Bundle.entry is not a list; skipped")
                return
            for i, e in enumerate(entries):
                if not isinstance(e, dict) or "resource" not in e:
                    self.problems.append(f"{where}: Bundle.entry[{i}] has no resource; skipped")
                    continue
                url = e.get("fullUrl") if isinstance(e.get("fullUrl"), str) else ""
                self._add(e["resource"], f"{where} Bundle.entry[{i}]", url)
            return
        name = resource_name(res, full_url)
        if name != res["resourceType"] and name in self.index.by_name:
            return  # the same resource (Type/id or fullUrl) in another file: read once
        self.resources.append((res, name))
        self.index.add(res, full_url)

    def of_type(self, rtype: str) -> list[tuple[dict[str, Any], str]]:
        return [(r, n) for r, n in self.resources if r["resourceType"] == rtype]

    def find_patients(self, system: str, value: str) -> list[tuple[dict[str, Any], str]]:
        out = []
        for p, name in self.of_type("Patient"):
            idents = p.get("identifier") if isinstance(p.get("identifier"), list) else []
            if any(isinstance(i, dict) and i.get("value") == value and (not system or i.get("system") == system)
                   for i in idents):
                out.append((p, name))
        return out

    def for_patient(self, rtype: str, patient: dict[str, Any], ref: str,
                    codes: list[str] | None = None) -> list[tuple[dict[str, Any], str]]:
        return [(r, n) for r, n in self.of_type(rtype) if self.index.refers_to(subject_reference(r), patient)]
