"""Import rules of docs/architecture.md: the import-linter contracts in pyproject.toml hold, the
checker can actually fail, and importing any runtime module leaves the training stack and the
synthetic package unloaded."""

from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
TRAINING_STACK = ("torch", "sklearn", "lifelines", "sksurv", "onnx")
RUNTIME_PACKAGES = ("cds", "listeners", "reports", "models")


def _lint(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--no-logo", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def _importlinter_section() -> str:
    """The [tool.importlinter] tables of pyproject.toml, verbatim (they are contiguous)."""
    out: list[str] = []
    inside = False
    for line in (REPO / "pyproject.toml").read_text().splitlines():
        if line.startswith("["):
            inside = line.strip("[] ").startswith("tool.importlinter")
        if inside:
            out.append(line)
    assert out, "pyproject.toml has no [tool.importlinter] section"
    return "\n".join(out) + "\n"


def _write_tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def test_contracts_hold_on_the_tree():
    proc = _lint(cwd=REPO)
    assert proc.returncode == 0, f"lint-imports failed:\n{proc.stdout}\n{proc.stderr}"


@pytest.mark.parametrize("violating", [False, True])
def test_checker_can_fail(tmp_path, violating):
    """A lower layer importing a higher one breaks a layers contract; the clean tree passes."""
    _write_tree(tmp_path, {
        "toy/__init__.py": "",
        "toy/high.py": "from toy import low\n",
        "toy/low.py": "from toy import high\n" if violating else "X = 1\n",
        "lint.toml": """\
            [tool.importlinter]
            root_packages = ["toy"]

            [[tool.importlinter.contracts]]
            name = "toy layers"
            type = "layers"
            layers = ["toy.high", "toy.low"]
            """,
    })
    proc = _lint("lint.toml", cwd=tmp_path)
    out = proc.stdout + proc.stderr
    if violating:
        assert proc.returncode == 1 and "BROKEN" in out and "toy.low -> toy.high" in out, out
    else:
        assert proc.returncode == 0, out


# A skeleton with every module the project's contracts name, so that the real contracts run on it.
_SKELETON = {
    **{f"{pkg.replace('.', '/')}/__init__.py": "" for pkg in (
        "app", "listeners", "reports", "synthetic", "models", "models.toy", "models.toy.training",
        "models.training", "cds", "cds.pipeline", "cds.dispatch", "cds.review", "cds.fhir", "cds.writers",
        "cds.scheduling", "cds.intake", "cds.audit", "cds.store", "cds.security", "cds.contracts")},
    "app/demo.py": "import synthetic.phantom\n",
    "synthetic/phantom.py": "import cds.contracts.domain\n",
    "cds/contracts/domain.py": "import numpy\n",
    "cds/store/db.py": "import cds.contracts.domain\n",
    "models/toy/runtime.py": "import cds.contracts.domain\nimport onnxruntime\n",
    "models/toy/training/train.py": "import torch\nimport synthetic.phantom\nimport models.toy.runtime\n",
    "models/training/fit.py": "import sklearn\n",
}

# (contract id, extra files) -> the project's contract must break on that tree.
_VIOLATIONS = {
    "lower-imports-higher": ("layers", {"cds/contracts/bad.py": "import cds.store.db\n"}),
    "contracts-import-project": ("contracts-bottom", {"cds/contracts/bad.py": "import synthetic\n"}),
    "cds-imports-model": ("models-by-path", {"cds/pipeline/bad.py": "import models.toy.runtime\n"}),
    "runtime-torch-transitive": ("runtime-no-training-stack", {
        "cds/store/bad.py": "import cds.store.helper\n", "cds/store/helper.py": "import lifelines\n"}),
    "model-runtime-torch": ("runtime-no-training-stack", {"models/toy/net.py": "import torch\n"}),
    "model-runtime-via-training": ("training-closed", {
        "models/toy/bad.py": "from models.toy.training import train\n"}),
    "app-imports-trainer": ("training-closed", {"app/cli.py": "import models.training.fit\n"}),
    "model-runtime-synthetic": ("synthetic-protected", {"models/toy/bad.py": "import synthetic.phantom\n"}),
    "cds-synthetic-transitive": ("runtime-no-synthetic", {
        "cds/intake/bad.py": "import app.demo\n"}),
    "synthetic-imports-store": ("synthetic-on-contracts", {"synthetic/bad.py": "import cds.store.db\n"}),
}


def test_project_contracts_pass_on_clean_skeleton(tmp_path):
    _write_tree(tmp_path, {**_SKELETON, "lint.toml": _importlinter_section()})
    proc = _lint("lint.toml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("case", sorted(_VIOLATIONS))
def test_project_contracts_catch(tmp_path, case):
    contract, extra = _VIOLATIONS[case]
    _write_tree(tmp_path, {**_SKELETON, **extra, "lint.toml": _importlinter_section()})
    proc = _lint("lint.toml", "--contract", contract, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "BROKEN" in out, out


def _runtime_modules() -> list[str]:
    """Every module under the runtime packages, training packages excluded. Found on disk with
    pkgutil.iter_modules (not walk_packages, which would import each package, training ones too)."""
    found: list[str] = []

    def walk(path: Path, prefix: str) -> None:
        for info in pkgutil.iter_modules([str(path)], prefix):
            if ".training" in info.name or info.name.rsplit(".", 1)[-1] == "training":
                continue
            found.append(info.name)
            if info.ispkg:
                walk(path / info.name.rsplit(".", 1)[-1], info.name + ".")

    for pkg in RUNTIME_PACKAGES:
        found.append(pkg)
        walk(REPO / pkg, pkg + ".")
    return sorted(found)


_IMPORT_ALL = """
import importlib, json, sys
watch = {watch!r}
blame, failed = {{}}, {{}}
for name in {modules!r}:
    try:
        importlib.import_module(name)
    except Exception as exc:  # reported, not hidden: a runtime module must import cleanly
        failed[name] = f"{{type(exc).__name__}}: {{exc}}"
    for top in watch:
        if top in sys.modules and top not in blame:
            blame[top] = name
print(json.dumps({{"loaded": blame, "failed": failed}}))
"""


def test_runtime_modules_load_no_training_stack_or_synthetic():
    modules = _runtime_modules()
    assert len(modules) > 20, modules
    watch = (*TRAINING_STACK, "synthetic")
    code = _IMPORT_ALL.format(watch=watch, modules=modules)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not report["failed"], f"runtime modules failed to import: {report['failed']}"
    assert not report["loaded"], (
        "importing runtime modules loaded (package: first module that pulled it in): "
        f"{report['loaded']}")
