"""The official HL7 mCODE STU3 examples (npm hl7.fhir.us.mcode@4.0.0), read from the package that
scripts/install_peers.sh caches (npm pack, under the FHIR peer's node_modules; never copied into
the repository), and bundles built from them."""

from __future__ import annotations

import copy
import json
import tarfile
import uuid
from pathlib import Path

from tests.peers import missing

ROOT = Path(__file__).resolve().parents[3]
PACK = ROOT / "conformance" / "peers" / "fhir" / "node_modules" / ".packs" / "hl7.fhir.us.mcode-4.0.0.tgz"
MRN_SYSTEM = "http://hospital.example.org"
MRN = "MRN1234"
EXTRA = ("Observation-us-core-observation-lab-tumor-grade-jenny-m.json",)


def example(name: str) -> dict:
    if not PACK.exists():
        missing(f"{PACK} missing: run scripts/install_peers.sh (npm pack hl7.fhir.us.mcode@4.0.0)")
    with tarfile.open(PACK) as tar:
        f = tar.extractfile(f"package/example/{name}")
        assert f is not None
        return json.load(f)


def jenny_bundle() -> dict:
    """mCODE's Jenny M patient bundle plus her Nottingham grade Observation (a separate example)."""
    b = example("Bundle-mcode-patient-bundle-jenny-m.json")
    for name in EXTRA:
        r = example(name)
        b["entry"].append({"fullUrl": f"http://example.org/fhir/Observation/{r['id']}", "resource": r})
    return b


def with_urn_uuids(bundle: dict) -> dict:
    """The same bundle as a transaction would carry it: urn:uuid fullUrls and references, no ids."""
    b = copy.deepcopy(bundle)
    urns = {}
    for e in b["entry"]:
        r = e["resource"]
        urns[f"{r['resourceType']}/{r['id']}"] = f"urn:uuid:{uuid.uuid4()}"
    text = json.dumps(b)
    for rel, urn in sorted(urns.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(f'"reference": "{rel}"', f'"reference": "{urn}"')
    b = json.loads(text)
    for e in b["entry"]:
        r = e["resource"]
        e["fullUrl"] = urns[f"{r['resourceType']}/{r.pop('id')}"]
    return b


def replace_observation(bundle: dict, obs_id: str, **changes) -> dict:
    b = copy.deepcopy(bundle)
    for e in b["entry"]:
        r = e["resource"]
        if r.get("id") == obs_id:
            for k in [k for k in r if k.startswith("value")]:
                del r[k]
            r.update(changes)
    return b
