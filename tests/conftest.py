"""Shared fixtures for the writer and dispatch tests: synthetic MG and SM studies analysed by the
fixture model (synthetic/fixture_model.py), and every output written once per test session."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cds.contracts.domain import CaseInput, ClinicalContext, RecurrenceResult, StudyAnalysis
from cds.contracts.settings import Settings


@dataclass
class Outputs:
    root: Path
    settings: Settings
    mammo: StudyAnalysis
    slide: StudyAnalysis
    recurrence: RecurrenceResult
    clinical: ClinicalContext
    sources: dict[str, Path]
    study_arts: list = field(default_factory=list)
    case_arts: list = field(default_factory=list)

    @property
    def all(self) -> list:
        return self.study_arts + self.case_arts


@pytest.fixture(scope="session")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> Outputs:
    from cds.fhir.context import fetch_clinical_context
    from cds.writers.outputs import case_outputs, study_outputs
    from synthetic.fixture_model import (
        FixtureMammoModel,
        FixtureRecurrenceModel,
        FixtureSlideModel,
        run_study,
        write_mammogram,
        write_slide,
    )
    from synthetic.phantoms.clinical import synthetic_patient, write_bundle

    root = tmp_path_factory.mktemp("results")
    patient = synthetic_patient()
    mg = [write_mammogram(root / "in" / f"mg{i}.dcm", patient, "2.25.1001", seed=i, view=v)
          for i, v in ((1, "CC"), (2, "MLO"))]
    sm = write_slide(root / "in" / "sm.dcm", patient, "2.25.1002", seed=3)
    write_bundle(root / "fhir" / "bundle.json")
    settings = Settings(data_dir=root / "data", output_dir=root / "output", encapsulated_pdf=True,
                        fhir_offline_dir=root / "fhir")
    mammo = run_study(FixtureMammoModel(), mg, patient, root / "work-mg")
    slide = run_study(FixtureSlideModel(), [sm], patient, root / "work-sm")
    clinical = fetch_clinical_context(settings, patient)
    rec = FixtureRecurrenceModel().analyze_case(
        CaseInput(patient=patient, clinical=clinical, slide=slide.slide, slide_study_uid="2.25.1002",
                  work_dir=root / "work-case"))
    sources = {**{i.sop_instance_uid: p for i, p in zip(mammo.mammography.images, mg)},
               slide.slide.base_sop_instance_uid: sm}
    out = Outputs(root, settings, mammo, slide, rec, clinical, sources)
    out.study_arts = (study_outputs(settings, mammo, root / "out", sources=sources)
                      + study_outputs(settings, slide, root / "out", sources=sources))
    out.case_arts = case_outputs(settings, patient, [mammo, slide], clinical, rec, root / "out",
                                 sources=sources)
    return out


@pytest.fixture(scope="module")
def fhir_peer(tmp_path_factory: pytest.TempPathFactory):
    """The real FHIR R4 peer (Medplum's router on loopback), one per test module. Missing node or
    peer packages skip the test, except under CONF_REQUIRE_PEERS=1 (CI), where they fail it."""
    from conformance.peers.fhir_server import FhirServer
    from conformance.peers.process import PeerUnavailable

    required = os.environ.get("CONF_REQUIRE_PEERS") == "1"
    missing = pytest.fail if required else pytest.skip
    if shutil.which("node") is None:
        missing("node not installed: no FHIR peer (run scripts/install_peers.sh)")
    try:
        with FhirServer(workdir=tmp_path_factory.mktemp("fhirpeer")) as srv:
            yield srv
    except PeerUnavailable as exc:
        missing(str(exc))
