"""docs/settings.md is generated from the settings object and must be current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_settings_reference_is_current():
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "settings_doc.py"), "--check"],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr
