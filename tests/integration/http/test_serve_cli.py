"""`cds token create` and `cds serve` as a site runs them: the token printed once, its hash in a
0600 file, and the HTTP server of the serve process answering on its own free port."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from conformance.peers.cds_serve import CdsServe

REPO = Path(__file__).resolve().parents[3]
NO_MODELS = {"CDS_DISABLED_MODELS": "mammography,slides,ultrasound,recurrence"}


def _cds(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=120, env={**{k: v for k, v in os.environ.items() if not k.startswith("CDS_")}, **env})


def test_token_create_then_serve_answers_with_it(tmp_path: Path) -> None:
    data = tmp_path / "serve" / "data"
    env = {"CDS_DATA_DIR": str(data)}
    made = _cds("token", "create", "--role", "operator", "--name", "ci-bot", env=env)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    tokens_file = data / "api-tokens"
    assert len(token) >= 40 and token not in tokens_file.read_text()
    assert oct(tokens_file.stat().st_mode & 0o777) == "0o600"
    assert tokens_file.read_text().split()[1:] == ["operator", "ci-bot"]
    bad = _cds("token", "create", "--role", "pilot", "--name", "x", env=env)
    assert bad.returncode != 0 and "pilot" in bad.stderr
    with CdsServe(tmp_path / "serve", NO_MODELS) as srv:
        assert srv.http_port and srv.http_port != 8080
        base = f"http://127.0.0.1:{srv.http_port}"
        deadline = time.monotonic() + 30
        while True:  # the DICOM port opens first; HTTP follows within the same start
            try:
                health = httpx.get(f"{base}/health", timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert health.json()["alive"] is True
        assert httpx.get(f"{base}/api/v1/jobs").status_code == 401
        jobs = httpx.get(f"{base}/api/v1/jobs", headers={"Authorization": f"Bearer {token}"})
        assert jobs.status_code == 200 and jobs.json()["items"] == []
        assert f"port {srv.http_port}" in srv.log_tail()
