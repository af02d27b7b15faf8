"""Shared slide phantoms for the slide tests (generated once per session, small and seeded)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cds.contracts.domain import PatientRef
from synthetic.phantoms.slides import SlideTruth, generate_slide

PATIENT = PatientRef(patient_id="TEST-SLIDE", issuer="phantom", name="Phantom^Slide", sex="F")


@pytest.fixture(scope="session")
def demo_slide(tmp_path_factory: pytest.TempPathFactory) -> SlideTruth:
    """The default demo slide: 4096 px at 0.5 um/px, 4 levels, with a metastasis."""
    return generate_slide(tmp_path_factory.mktemp("demo_slide"), 7, PATIENT, metastasis=True)


@pytest.fixture(scope="session")
def small_negative(tmp_path_factory: pytest.TempPathFactory) -> SlideTruth:
    return generate_slide(tmp_path_factory.mktemp("neg_slide"), 11, PATIENT, metastasis=False, size=1024)


@pytest.fixture(scope="session")
def small_occult(tmp_path_factory: pytest.TempPathFactory) -> SlideTruth:
    return generate_slide(tmp_path_factory.mktemp("occ_slide"), 12, PATIENT, occult=True, size=1024)


def level_paths(truth: SlideTruth) -> list[Path]:
    return list(truth.level_paths)
