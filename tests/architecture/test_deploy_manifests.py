"""The Kubernetes manifests in deploy/k8s are valid for the Kubernetes API (strict schema check
with kubernetes-validate, offline) and every command they run is a real `cds` subcommand."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml
from typer.testing import CliRunner

from app.cli import app

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"


def _documents() -> list[dict]:
    return [d for f in sorted(K8S.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]


def test_manifests_pass_the_kubernetes_schema() -> None:
    files = sorted(map(str, K8S.glob("*.yaml")))
    assert files, "no manifests in deploy/k8s"
    r = subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", *files],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_container_command_is_a_cds_subcommand() -> None:
    commands = [c["command"] for d in _documents() if d["kind"] == "Deployment"
                for c in d["spec"]["template"]["spec"]["containers"]]
    assert {tuple(c[:2]) for c in commands} >= {("cds", "listen"), ("cds", "work"), ("cds", "dispatch"),
                                                ("cds", "api")}
    runner = CliRunner()
    for command in commands:
        assert command[0] == "cds"
        result = runner.invoke(app, [*command[1:], "--help"])
        assert result.exit_code == 0, f"{' '.join(command)}: {result.output}"
