"""Digest of an output folder that ignores what legitimately differs between two runs.

Used to show that a refactor changed no finding: run ``cds analyze`` on the same studies before
and after, digest both output folders, and compare. UIDs, dates, times, resource ids and file
names differ between runs by design (fresh UIDs per output, timestamps); everything else must
match: SEG pixel data and segment descriptions, every SR content item (concept, value, unit,
coordinates), every FHIR resource field, the PDF's text.

    python scripts/output_digest.py OUT_DIR > digest.json
    python scripts/output_digest.py --compare A.json B.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pydicom

_VOLATILE_VR = {"UI", "DA", "TM", "DT"}
_VOLATILE_KEYWORDS = {"ContentCreatorName", "InstanceCreationDate", "InstanceCreationTime",
                      "SeriesNumber", "InstanceNumber", "SoftwareVersions"}
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}(T[\d:.+\-Z]+)?$")
# UIDs, UUIDs and the hex digests in result identifiers (they hash run-specific timestamps).
_UIDISH = re.compile(r"(urn:(uuid|oid):)?[0-9a-f]{8}-[0-9a-f-]{27}|2\.25\.\d+|(\d+\.){4,}\d+"
                     r"|\b[0-9a-f]{16,}\b")
_VOLATILE_JSON_KEYS = {"id", "lastUpdated", "versionId", "issued", "recorded", "occurrenceDateTime",
                       "effectiveDateTime", "date", "fullUrl"}


def _scrub(text: str) -> str:
    return _UIDISH.sub("<uid>", text)


def _dataset(ds: pydicom.Dataset) -> list[Any]:
    out: list[Any] = []
    for elem in ds:
        if elem.VR in _VOLATILE_VR or elem.keyword in _VOLATILE_KEYWORDS:
            continue
        if elem.keyword == "PixelData":
            out.append(["PixelData", hashlib.sha256(elem.value).hexdigest()[:16]])
        elif elem.keyword == "EncapsulatedDocument":
            out.append(["EncapsulatedDocument", len(elem.value) > 0])
        elif elem.VR == "SQ":
            out.append([elem.keyword or str(elem.tag), [_dataset(item) for item in elem.value]])
        else:
            value = elem.value
            if isinstance(value, (bytes, bytearray)):
                value = hashlib.sha256(value).hexdigest()[:16]
            out.append([elem.keyword or str(elem.tag), _scrub(str(value))])
    return out


def _json(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json(v) for k, v in sorted(value.items())
                if k not in _VOLATILE_JSON_KEYS and not (k == "data" and isinstance(v, str))}
    if isinstance(value, list):
        return [_json(v) for v in value]
    if isinstance(value, str):
        return "<date>" if _DATE.match(value) else _scrub(value)
    return value


def _pdf_text(path: Path) -> str:
    try:
        text = subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True,
                              text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return f"<pdf {path.stat().st_size > 0}>"
    lines = [_scrub(line) for line in text.splitlines()]
    # The report prints when it was made; drop lines that carry a date or time.
    return "\n".join(line for line in lines if not re.search(r"\d{4}-\d{2}-\d{2}|\d\d:\d\d", line))


def digest(folder: Path) -> dict[str, list[Any]]:
    """Sorted, run-independent descriptions of every output under ``folder``, by kind."""
    kinds: dict[str, list[Any]] = {"dicom": [], "fhir": [], "pdf": []}
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or ".cds-data" in path.parts:
            continue
        if path.suffix == ".dcm":
            ds = pydicom.dcmread(path)
            kinds["dicom"].append([str(ds.Modality), str(ds.SOPClassUID), _dataset(ds)])
        elif path.suffix == ".json":
            kinds["fhir"].append(_json(json.loads(path.read_text())))
        elif path.suffix == ".pdf":
            kinds["pdf"].append(_pdf_text(path))
    return {k: sorted(v, key=lambda x: json.dumps(x, sort_keys=True, default=str))
            for k, v in kinds.items()}


def compare(a: dict[str, list[Any]], b: dict[str, list[Any]]) -> list[str]:
    diffs = []
    for kind in sorted(set(a) | set(b)):
        xa, xb = a.get(kind, []), b.get(kind, [])
        if len(xa) != len(xb):
            diffs.append(f"{kind}: {len(xa)} outputs before, {len(xb)} after")
            continue
        for i, (u, v) in enumerate(zip(xa, xb)):
            if u != v:
                su, sv = json.dumps(u, sort_keys=True, default=str), json.dumps(v, sort_keys=True, default=str)
                at = next((j for j, (p, q) in enumerate(zip(su, sv)) if p != q), min(len(su), len(sv)))
                diffs.append(f"{kind}[{i}] differs near: before …{su[max(0, at - 80):at + 80]}… "
                             f"after …{sv[max(0, at - 80):at + 80]}…")
    return diffs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="+", type=Path)
    ap.add_argument("--compare", action="store_true", help="compare two digest files")
    args = ap.parse_args()
    if args.compare:
        a, b = (json.loads(p.read_text()) for p in args.paths)
        diffs = compare(a, b)
        counts = {k: len(v) for k, v in a.items()}
        for d in diffs:
            print(d)
        print(f"{'DIFFERENT' if diffs else 'IDENTICAL'}: {counts} outputs compared, {len(diffs)} differences")
        return 1 if diffs else 0
    json.dump(digest(args.paths[0]), sys.stdout, indent=1, sort_keys=True, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
