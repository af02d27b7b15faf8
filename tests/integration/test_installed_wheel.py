"""The installed artifact is the tested artifact.

Builds the wheel from this checkout (the files git knows about, copied to a temporary folder so
that no stale ``build/`` or ``*.egg-info`` of the checkout can leak into it), installs it NOT
editable with its runtime dependencies only into a fresh virtual environment, and runs
``cds demo`` from a folder outside the source tree (``PYTHONPATH`` empty, no ``CDS_*``), so
nothing but the installed package can be imported. Then every shipped model must have produced
its outputs, and the store must hold no dead job or output and no ``no_model`` result: a model
that does not load in a runtime-only install (e.g. a runtime module that imports a training-only
package) fails here, even though the demo itself exits 0.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

REPO = Path(__file__).resolve().parents[2]
TRAINING_ONLY = ["torch", "sklearn", "lifelines", "sksurv", "onnx"]
NOT_SHIPPED = ["tests", "conformance", "bench"]
PIP = ["-m", "pip", "--disable-pip-version-check", "-q"]

# What each shipped model must deliver in the demo (found by the model name in the output key,
# classified by content). recurrence-clinical is the fallback for cases without imaging: the demo
# patient has imaging, so its case goes through recurrence-mrrp; the clinical model is only
# checked to be in the wheel.
EXPECTED = {
    "mammography-phantom-cnn": {"SEG", "SR", "RiskAssessment"},
    "slide-lymph-node-metastasis": {"SEG", "SR", "RiskAssessment"},
    "ultrasound-lesion-encoder": {"SR"},
    "recurrence-mrrp": {"RiskAssessment", "PDF", "DiagnosticReport"},
}
NOT_EXERCISED = {"recurrence-clinical"}
CONTRIBUTING = {"crossmodal-alignment"}  # no result of its own: similar patches in the mammography result


def _git_files() -> list[str]:
    """Tracked and untracked, not ignored, files of the checkout that exist (not deleted)."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    return sorted(f for f in out.split("\0") if f and (REPO / f).is_file())


def _tail(text: str | bytes | None, n: int = 4000) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return (text or "")[-n:]


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment of a fresh shell: no CDS_* settings, nothing on PYTHONPATH, no venv."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CDS_") and k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(PYTHONPATH="", PYTHONNOUSERSITE="1", **extra)
    return env


def _run(cmd: list[str], *, cwd: Path, timeout: float, what: str, env: dict[str, str] | None = None,
         ) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env or _clean_env(), capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{what} did not finish in {timeout:.0f} s: {cmd}\n--- stdout tail ---\n"
                    f"{_tail(exc.stdout)}\n--- stderr tail ---\n{_tail(exc.stderr)}")
    return proc


def _require_ok(proc: subprocess.CompletedProcess[str], what: str) -> None:
    if proc.returncode != 0:
        pytest.fail(f"{what} failed (rc {proc.returncode}): {proc.args}\n--- stdout tail ---\n"
                    f"{_tail(proc.stdout)}\n--- stderr tail ---\n{_tail(proc.stderr)}")


@dataclass
class Installed:
    wheel: Path
    venv: Path
    tmp: Path
    seconds: dict[str, float]
    sources: list[str]  # the files the wheel was built from (git's view of the checkout then)

    def source_files(self, *patterns: str) -> list[str]:
        return sorted(f for f in self.sources if any(fnmatch.fnmatch(f, p) for p in patterns))

    @property
    def bin(self) -> Path:
        return self.venv / "bin"


@dataclass
class Demo:
    proc: subprocess.CompletedProcess[str]
    out: Path
    status: subprocess.CompletedProcess[str]

    @property
    def results(self) -> Path:
        return self.out / "results"

    @property
    def store(self) -> Path:
        return self.out / "cds-data" / "cds.sqlite3"

    def context(self) -> str:
        return (f"\n--- cds demo rc {self.proc.returncode}, stdout tail ---\n{_tail(self.proc.stdout)}"
                f"\n--- cds demo stderr tail ---\n{_tail(self.proc.stderr)}")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    if not (REPO / ".git").exists() or shutil.which("git") is None:
        pytest.skip("needs a git checkout (the wheel is built from the files git knows about)")
    tmp = tmp_path_factory.mktemp("installed-wheel")
    seconds: dict[str, float] = {}

    # 1. the wheel, from a copy of the checkout (tracked + untracked, not ignored)
    t0 = time.monotonic()
    src = tmp / "src"
    sources = []
    for rel in _git_files():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copy2(REPO / rel, src / rel)
        except FileNotFoundError:  # deleted since git listed it
            continue
        sources.append(rel)
    wheel_dir = tmp / "wheel"
    proc = _run([sys.executable, *PIP, "wheel", "--no-deps", "--no-build-isolation", "-w", wheel_dir, src],
                cwd=tmp, timeout=600, what="pip wheel --no-build-isolation", env=_clean_env())
    if proc.returncode != 0:  # the test venv lacks a build requirement: build in isolation instead
        first = proc
        proc = _run([sys.executable, *PIP, "wheel", "--no-deps", "-w", wheel_dir, src],
                    cwd=tmp, timeout=900, what="pip wheel (build isolation)", env=_clean_env())
        if proc.returncode != 0:
            pytest.fail(f"building the wheel failed with and without build isolation\n"
                        f"--- without isolation ---\n{_tail(first.stderr)}\n--- with isolation ---\n"
                        f"{_tail(proc.stdout)}\n{_tail(proc.stderr)}")
    wheels = sorted(wheel_dir.glob("breast_cds-*.whl"))
    assert len(wheels) == 1, f"expected one breast_cds wheel in {wheel_dir}, found {os.listdir(wheel_dir)}"
    seconds["wheel"] = time.monotonic() - t0

    # 2. a fresh venv with the wheel and its runtime dependencies only
    t0 = time.monotonic()
    venv = tmp / "venv"
    _require_ok(_run([sys.executable, "-m", "venv", venv], cwd=tmp, timeout=300, what="python -m venv"),
                "python -m venv")
    _require_ok(_run([venv / "bin" / "python", *PIP, "install", wheels[0]], cwd=tmp, timeout=1200,
                     what="pip install <wheel>"), "pip install <wheel> (runtime dependencies only)")
    seconds["venv+install"] = time.monotonic() - t0
    return Installed(wheel=wheels[0], venv=venv, tmp=tmp, seconds=seconds, sources=sources)


@pytest.fixture(scope="module")
def demo(installed: Installed) -> Demo:
    """`cds demo` run from a folder outside the source tree, on embedded defaults."""
    cwd = installed.tmp / "run"
    cwd.mkdir()
    out = cwd / "demo"
    t0 = time.monotonic()
    proc = _run([installed.bin / "cds", "demo", "--out", out], cwd=cwd, timeout=600, what="cds demo")
    installed.seconds["demo"] = time.monotonic() - t0
    status = _run([installed.bin / "cds", "status"], cwd=cwd, timeout=120, what="cds status",
                  env=_clean_env(CDS_DATA_DIR=str(out / "cds-data")))
    print(f"installed-wheel timings (s): {json.dumps({k: round(v, 1) for k, v in installed.seconds.items()})}")
    return Demo(proc=proc, out=out, status=status)


def test_wheel_ships_the_runtime_and_leaves_out_tests(installed: Installed) -> None:
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    leaked = sorted(n for n in names if n.split("/")[0] in NOT_SHIPPED)
    assert not leaked, f"the wheel carries non-shipped trees: {leaked[:20]}"

    weights = installed.source_files("models/*/weights/*")
    assert any(w.endswith(".onnx") for w in weights) and any(w.endswith(".json") for w in weights), weights
    templates = installed.source_files("reports/templates/*")
    assert templates, "no report templates in the checkout?"
    modules = installed.source_files("synthetic/*.py", "cds/*.py", "app/*.py", "listeners/*.py",
                                     "models/*.py", "reports/*.py")
    assert any(m.startswith("synthetic/") for m in modules), "no synthetic package in the checkout?"
    missing = sorted(set(weights + templates + modules) - names)
    assert not missing, f"files of the shipped packages missing from {installed.wheel.name}: {missing}"

    cards = {json.loads(zipfile.ZipFile(installed.wheel).read(c))["name"]
             for c in names if c.startswith("models/") and "/weights/" in c and c.endswith("card.json")}
    assert cards == set(EXPECTED) | NOT_EXERCISED | CONTRIBUTING, (
        f"shipped model cards {sorted(cards)} differ from what this test checks "
        f"({sorted(set(EXPECTED) | NOT_EXERCISED | CONTRIBUTING)}): update EXPECTED")


def test_runtime_install_has_no_training_stack(installed: Installed) -> None:
    proc = _run([installed.bin / "python", "-c",
                 f"import importlib.util,sys; found=[m for m in {TRAINING_ONLY!r} if importlib.util.find_spec(m)]; "
                 "print(found); sys.exit(bool(found))"],
                cwd=installed.tmp, timeout=120, what="find_spec check")
    assert proc.returncode == 0, (
        f"training-only packages are importable in the runtime-only install: {proc.stdout.strip()} "
        f"{_tail(proc.stderr)}")
    where = _run([installed.bin / "python", "-c", "import cds; print(cds.__file__)"],
                 cwd=installed.tmp, timeout=120, what="import cds")
    _require_ok(where, "import cds from the installed venv")
    assert str(REPO) not in where.stdout and "site-packages" in where.stdout, (
        f"cds is not imported from the installed wheel: {where.stdout}")


def test_demo_exits_zero(demo: Demo) -> None:
    assert demo.proc.returncode == 0, f"cds demo failed{demo.context()}"
    assert demo.status.returncode == 0, (
        f"cds status failed (rc {demo.status.returncode})\n{_tail(demo.status.stdout)}\n"
        f"{_tail(demo.status.stderr)}{demo.context()}")


def test_store_has_no_dead_work_and_no_missing_model(demo: Demo) -> None:
    assert demo.store.is_file(), f"no store at {demo.store}{demo.context()}"
    db = sqlite3.connect(f"file:{demo.store}?mode=ro", uri=True)
    try:
        dead_jobs = db.execute("SELECT id, kind, key, last_error FROM jobs WHERE state = 'dead'").fetchall()
        undelivered = db.execute("SELECT id, kind, key, state, last_error FROM outbox "
                                 "WHERE state != 'delivered'").fetchall()
        # The sonographer's SR rides in the ultrasound study: the ultrasound model reads it as a
        # companion, and the SR series on its own has (and needs) no model.
        no_model = db.execute("SELECT job_id, kind, study_uid, modality, summary, body FROM results "
                              "WHERE status = 'no_model' AND COALESCE(modality, '') != 'SR'").fetchall()
        ok = db.execute("SELECT DISTINCT model FROM results WHERE status = 'ok'").fetchall()
    finally:
        db.close()
    problems = []
    if dead_jobs:
        problems.append(f"dead jobs: {dead_jobs}")
    if undelivered:
        problems.append(f"outputs not delivered: {undelivered}")
    if no_model:
        problems.append(f"results with no model (a shipped model did not load?): {no_model}")
    missing = sorted(set(EXPECTED) - {m for (m,) in ok})
    if missing:
        problems.append(f"no ok result from shipped model(s) {missing}; ok results from {sorted(m for (m,) in ok)}")
    assert not problems, "\n".join(problems) + demo.context()


def test_installed_alignment_model_adds_similar_patches_to_each_lesion(demo: Demo) -> None:
    """The reference bank (.npz) and encoder ship in the wheel and run: every lesion the demo's
    mammography result reports has its similar reference patches from the alignment model."""
    db = sqlite3.connect(f"file:{demo.store}?mode=ro", uri=True)
    try:
        bodies = [json.loads(b) for (b,) in db.execute(
            "SELECT body FROM results WHERE status = 'ok' AND model = 'mammography-phantom-cnn'")]
    finally:
        db.close()
    assert bodies, f"no mammography result{demo.context()}"
    mg = bodies[-1]["mammography"]
    lesions = [les["tracking_uid"] for im in mg["images"] for les in im["lesions"]]
    assert lesions, f"the demo mammogram gave no lesion to find similar patches for{demo.context()}"
    similar = {sp["lesion_tracking_uid"]: sp for sp in mg["similar_pathology"]}
    assert set(similar) <= set(lesions) and similar, f"no similar patches: {mg['similar_pathology']}"
    for sp in similar.values():
        assert sp["model"]["name"] == "crossmodal-alignment" and len(sp["examples"]) == 3


def _classify(path: Path) -> str | None:
    """SEG / SR (DICOM, by Modality), a FHIR resourceType, or PDF."""
    if path.suffix == ".dcm":
        import pydicom

        ds = pydicom.dcmread(path)
        if ds.Modality == "SR":
            assert len(ds.get("ContentSequence", [])) > 0, f"{path.name}: SR with an empty ContentSequence"
        return str(ds.Modality)
    if path.suffix == ".json":
        return json.loads(path.read_text())["resourceType"]
    if path.suffix == ".pdf":
        assert path.read_bytes()[:5] == b"%PDF-", f"{path.name} is not a PDF"
        return "PDF"
    return None


def test_every_shipped_model_delivered_its_outputs(demo: Demo) -> None:
    files = sorted(p for p in demo.results.rglob("*") if p.is_file()) if demo.results.is_dir() else []
    listing = "\n".join(str(p.relative_to(demo.results)) for p in files) or "(no files)"
    problems = []
    for model, kinds in EXPECTED.items():
        mine = [p for p in files if f"_{model}_" in p.name]
        found = {}
        for p in mine:
            kind = _classify(p)
            if kind is not None:
                found.setdefault(kind, []).append(p)
        if not kinds <= set(found):
            problems.append(f"{model}: expected {sorted(kinds)}, found {sorted(found)}")
            continue
        for p in found.get("RiskAssessment", []):
            text = json.dumps({k: v for k, v in json.loads(p.read_text()).items() if k in ("method", "prediction")})
            if model not in text:
                problems.append(f"{p.name}: RiskAssessment method/prediction does not name {model}")
    assert not problems, ("\n".join(problems) + f"\n--- {demo.results} ---\n{listing}" + demo.context())
