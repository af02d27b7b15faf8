"""The similar reference pathology in the clinician PDF and on the case page: a row of patches
per lesion with class and similarity, under the caption that says they are not this patient's
pathology; nothing of it when there are no examples."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from jinja2 import Environment, FileSystemLoader

from cds.contracts.domain import NOT_FOR_CLINICAL_USE, StudyAnalysis
from cds.contracts.handoffs import CaseJobPayload, NewResult
from cds.contracts.settings import Settings
from cds.store import Store
from listeners.http.page_views import case_page
from reports.pdf import render_html, render_pdf, report_context
from reports.similar_view import CAPTION
from tests.peers import missing
from tests.unit.writers.test_sr_similar import K, with_similar

PAGES = Path(__file__).resolve().parents[3] / "listeners" / "http" / "templates"


@pytest.fixture(scope="module")
def similar(outputs, tmp_path_factory) -> StudyAnalysis:
    return with_similar(outputs, tmp_path_factory.mktemp("similar-views"))


def _n_lesions(a: StudyAnalysis) -> int:
    return len(a.mammography.similar_pathology)


def test_pdf_html_shows_each_lesions_patches_under_the_caption(outputs, similar):
    ctx = report_context(outputs.mammo.patient, [similar], outputs.clinical, None, outputs.sources)
    html = render_html(ctx)
    assert html.count(CAPTION.replace("'", "&#39;")) == _n_lesions(similar)
    assert html.count('alt="reference patch bank-') == K * _n_lesions(similar)
    first = similar.mammography.similar_pathology[0].examples[0]
    assert f"similarity {first.similarity:.2f}" in html and first.label in html
    assert "<td>crossmodal-alignment</td>" in html  # named in the models table too
    plain = render_html(report_context(outputs.mammo.patient, [outputs.mammo], outputs.clinical, None,
                                       outputs.sources))
    assert "reference bank" not in plain and 'alt="reference patch' not in plain


def test_pdf_text_carries_the_caption(outputs, similar, tmp_path):
    if shutil.which("pdftotext") is None:
        missing("poppler-utils (pdftotext) not installed: run scripts/install_peers.sh")
    ctx = report_context(outputs.mammo.patient, [similar], outputs.clinical, None, outputs.sources)
    (tmp_path / "r.pdf").write_bytes(render_pdf(ctx))
    text = subprocess.run(["pdftotext", str(tmp_path / "r.pdf"), "-"], capture_output=True, text=True).stdout
    flat = re.sub(r"\s+", " ", text).replace("\u2019", "'")
    assert flat.count(CAPTION) == _n_lesions(similar)
    assert similar.mammography.similar_pathology[0].examples[0].bank_id in flat


def test_case_page_shows_the_same_caption_and_patches(outputs, similar, tmp_path):
    store = Store(Settings(data_dir=tmp_path / "data").store_url)
    patient = similar.patient
    from synthetic.fixture_model import instance_record

    for img in similar.mammography.images:
        store.record_instance(instance_record(outputs.sources[img.sop_instance_uid]), patient)
    job = store.enqueue("case", "case:similar", CaseJobPayload(patient_key=patient.key), max_attempts=1)
    store.claim_job("w", 60)
    store.replace_results(job, [NewResult(kind="study_analysis", patient_key=patient.key, status="ok",
                                          study_uid=similar.study_instance_uid, modality="MG",
                                          model=similar.model.name, model_version=similar.model.version,
                                          body=similar.model_dump(mode="json"))])
    view = case_page(store, patient.key)
    assert view is not None
    env = Environment(loader=FileSystemLoader(PAGES), autoescape=True)
    html = env.get_template("case.html.j2").render(user=None, can={"review": False}, csrf="", **view)
    assert html.count(CAPTION.replace("'", "&#39;")) == _n_lesions(similar)
    assert html.count('alt="reference patch bank-') == K * _n_lesions(similar)
    assert NOT_FOR_CLINICAL_USE in html


def test_case_provenance_names_the_alignment_model(outputs, similar, tmp_path):
    """The FHIR Provenance of the case lists every model behind what the report shows, the
    alignment model that chose the reference patches included."""
    import json

    from cds.writers.outputs import case_outputs

    arts = case_outputs(outputs.settings, outputs.mammo.patient, [similar], outputs.clinical, None, tmp_path,
                        outputs.sources)
    prov = next(json.loads(a.path.read_text()) for a in arts if a.resource_type == "Provenance")
    names = json.dumps(prov)
    assert "crossmodal-alignment" in names and similar.model.name in names
    plain = case_outputs(outputs.settings, outputs.mammo.patient, [outputs.mammo], outputs.clinical, None,
                         tmp_path / "plain", outputs.sources)
    assert "crossmodal-alignment" not in json.dumps(
        next(json.loads(a.path.read_text()) for a in plain if a.resource_type == "Provenance"))
