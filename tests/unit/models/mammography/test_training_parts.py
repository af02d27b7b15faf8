"""Training plumbing: parallel jobs keep order and surface failures; per-lesion-type IoU."""

from __future__ import annotations

import os

import numpy as np
import pytest

from models.mammography.training.parallel import run_jobs


def _pid_job(k: int):
    return lambda: (k, os.getpid())


def test_run_jobs_in_processes_keeps_order() -> None:
    res = run_jobs([(f"j{k}", _pid_job(k)) for k in range(4)], workers=2)
    assert [r[0] for r in res] == [0, 1, 2, 3]
    assert all(pid != os.getpid() for _, pid in res)  # really ran in forked workers
    inline = run_jobs([(f"j{k}", _pid_job(k)) for k in range(2)], workers=1)
    assert [pid for _, pid in inline] == [os.getpid()] * 2


def _boom():
    raise ValueError("bad data in job")


def test_run_jobs_reports_the_failing_job() -> None:
    with pytest.raises(RuntimeError, match=r"(?s)'broken'.*bad data in job"):
        run_jobs([("fine", _pid_job(0)), ("broken", _boom)], workers=2)


def test_seg_scores_by_type() -> None:
    pytest.importorskip("torch")
    from models.mammography.training.train import seg_scores_by_type

    mask = np.zeros((3, 32, 32), bool)
    mask[0, 4:12, 4:12] = True  # 64 px
    mask[1, 10:20, 10:20] = True
    prob = np.zeros((3, 32, 32), np.float32)
    prob[0, 4:12, 4:8] = 0.9  # half of the lesion: IoU 0.5
    prob[1, 10:20, 10:20] = 0.9  # exact: IoU 1
    kinds = np.array(["calcifications", "circumscribed_mass", ""])
    out = seg_scores_by_type(prob, mask, kinds, threshold=0.5)
    assert set(out) == {"calcifications", "circumscribed_mass"}
    assert out["calcifications"]["iou"] == pytest.approx(0.5)
    assert out["circumscribed_mass"]["iou"] == pytest.approx(1.0)
    assert out["circumscribed_mass"]["n"] == 1
