"""A deliberately slow study model for the kill test (loaded via CDS_EXTRA_MODEL_FACTORIES).

It computes something real (the mean pixel value of each image) but takes a few seconds, so a
test can SIGKILL the service while the job runs. It records nothing as a finding.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from pydicom import dcmread

from cds.contracts.domain import ModelIdentity, StudyAnalysis, StudyInput
from cds.contracts.settings import Settings

SLOW_S = 4.0


class SlowModel:
    identity = ModelIdentity(name="test-slow-model", version="0", device_uid="2.25.1",
                             synthetic_trained=True)
    modalities = frozenset({"MG"})

    def analyze(self, study: StudyInput, work_dir: Path) -> StudyAnalysis:
        work_dir.mkdir(parents=True, exist_ok=True)
        means = [float(np.mean(dcmread(i.path).pixel_array)) for i in study.instances]
        time.sleep(SLOW_S)
        (work_dir / "means.txt").write_text(repr(means))
        return StudyAnalysis(study_instance_uid=study.study_instance_uid, modality=study.modality,
                             patient=study.patient, model=self.identity, work_dir=work_dir)


def load(settings: Settings) -> SlowModel:
    return SlowModel()
