"""Set-up of the browser tests: a served demo case (Orthanc as the PACS, the FHIR peer, the
service with its HTTP surface on a free port), API tokens per role, and a Debian chromium
driven by Playwright (never a downloaded browser; flags keep it off the network)."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import httpx
from PIL import Image

from app.service import Service
from cds.contracts.settings import Settings
from cds.pipeline.registry import ModelRegistry
from synthetic.fixture_model import FixtureMammoModel, FixtureSlideModel
from tests.integration.fhir_outputs.support import (
    TwoVariantRecurrence,
    ingest,
    load_clinical,
    run,
    study_files,
)
from tests.peers import need

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TOKENS = {"viewer": "tok-viewer-7f3a", "clinician": "tok-clinician-91bc", "operator": "tok-operator-c2d8"}
MAX_SCREENSHOT_BYTES = 400 * 1024
DOCS_SHOTS = Path(__file__).resolve().parents[3] / "docs" / "screenshots"


def write_tokens(path: Path) -> Path:
    """The tokens file format of cds.contracts.http_settings: '<sha256> <roles> <name>'."""
    path.write_text("".join(f"{hashlib.sha256(t.encode()).hexdigest()} {role} {role}-user\n"
                            for role, t in TOKENS.items()))
    return path


def serve_case(tmp: Path, fhir_url: str, orthanc_aet: str, orthanc_port: int) -> Service:
    """A service with the fixture models, results to Orthanc (C-STORE) and the FHIR peer, HTTP on
    a free port; the demo patient's mammogram and slide ingested and processed to the end."""
    settings = Settings(data_dir=tmp / "data", output_dir=tmp / "out", fhir_base_url=fhir_url,
                        pacs_ae_title=orthanc_aet, pacs_host="127.0.0.1", pacs_port=orthanc_port,
                        http_port=0, http_api_tokens_file=write_tokens(tmp / "api-tokens"),
                        stable_age_s=0.0, job_backoff_base_s=0.05, job_backoff_max_s=0.2,
                        peer_probe_interval_s=0.2)
    registry = ModelRegistry(study_models=[FixtureMammoModel(), FixtureSlideModel()],
                             case_models=[TwoVariantRecurrence()])
    service = Service(settings, registry=registry, listen=False, http=True)
    load_clinical(fhir_url, settings)
    files = study_files(tmp)
    ingest(service, files["MG"] + files["SM"])
    run(service, timeout_s=90)
    assert service.http is not None, "the service serves no HTTP (http_enabled off?)"
    service.http.start()
    return service


def launch(playwright: object):  # -> playwright Browser
    return playwright.chromium.launch(executable_path=need("chromium"), args=CHROMIUM_ARGS)  # type: ignore[attr-defined]


def login(page: object, url: str, role: str) -> None:
    """Log in through the login form with the role's API token; lands on the worklist."""
    page.goto(f"{url}/login")  # type: ignore[attr-defined]
    page.fill("input[name=token]", TOKENS[role])  # type: ignore[attr-defined]
    page.click("form.login button[type=submit]")  # type: ignore[attr-defined]
    page.wait_for_url(f"{url}/")  # type: ignore[attr-defined]


def bearer(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role]}"}


def screenshot(page: object, out: Path, name: str, *, full_page: bool = False) -> Path:
    """A PNG of the visible page, palette-reduced to stay under 400 KB; copied into docs/screenshots
    when CDS_REFRESH_SCREENSHOTS=1 (the docs' pictures are refreshed by running the test)."""
    raw = out / f"{name}.raw.png"
    page.screenshot(path=str(raw), full_page=full_page)  # type: ignore[attr-defined]
    path = out / f"{name}.png"
    Image.open(raw).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    raw.unlink()
    path.chmod(0o644)
    assert path.stat().st_size <= MAX_SCREENSHOT_BYTES, f"{name}.png is {path.stat().st_size} bytes"
    if os.environ.get("CDS_REFRESH_SCREENSHOTS") == "1":
        DOCS_SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_SHOTS / path.name)
        (DOCS_SHOTS / path.name).chmod(0o644)
    return path


def get(url: str, role: str, **kw: object) -> httpx.Response:
    return httpx.get(url, headers=bearer(role), timeout=30, **kw)  # type: ignore[arg-type]
