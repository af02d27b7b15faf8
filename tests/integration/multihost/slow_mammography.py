"""The shipped mammography model, held up on its first run of chosen studies (CDS_EXTRA_MODEL_FACTORIES).

WHY: a real mammography exam takes about 0.1 s of model time, too short to SIGKILL a worker while
it holds the job. This factory loads the shipped model unchanged (same weights, same outputs) and,
for the study UIDs in ``MH_SLOW_STUDIES``, sleeps ``MH_SLOW_S`` seconds before the first run's
analysis; a marker file in ``MH_SLOW_MARKERS`` (shared by every host) makes the run that takes the
job over after the lease fast. The test disables the shipped factory (CDS_DISABLED_MODELS) so that
the model runs once per study, through here.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from cds.contracts.domain import StudyAnalysis, StudyInput
from cds.contracts.settings import Settings


class SlowFirstRun:
    """Delegates everything to the wrapped model; only ``analyze`` may wait first."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.identity = inner.identity
        self.modalities = inner.modalities

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def analyze(self, study: StudyInput, work_dir: Path) -> StudyAnalysis:
        slow = {u for u in os.environ.get("MH_SLOW_STUDIES", "").split(",") if u}
        if study.study_instance_uid in slow:
            marker = Path(os.environ["MH_SLOW_MARKERS"]) / f"{study.study_instance_uid}.started"
            try:
                marker.touch(exist_ok=False)  # first run only: the takeover runs at full speed
            except FileExistsError:
                pass
            else:
                time.sleep(float(os.environ.get("MH_SLOW_S", "30")))
        return self._inner.analyze(study, work_dir)


def load(settings: Settings) -> SlowFirstRun:
    from models.mammography.runtime import load as load_shipped

    return SlowFirstRun(load_shipped(settings))
