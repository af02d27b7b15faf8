"""Run independent training jobs in forked worker processes (training only).

``cds train synthetic`` trains one main network and eight leave-one-vendor-out networks. They are
independent, and one PyTorch process with one intra-op thread uses a core far better than one
process with two threads for these small convolutions (measured: 2 threads were no faster on
the shared 2-core machine), so the jobs run as separate processes, one thread each.

Workers are *forked* rather than spawned: a child inherits the parent's rendered data set
(hundreds of MB) copy-on-write instead of receiving it pickled, and nothing depends on the
caller's ``__main__`` being import-safe. The parent must not have run PyTorch computations with
more than one thread before forking (GNU OpenMP cannot be forked safely after its pool exists);
:func:`models.mammography.training.train.train_on_arrays` forks before it touches torch. Results travel
back through a queue as plain picklable objects (numpy arrays, floats).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import queue as queue_mod
import traceback
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Job = tuple[str, Callable[[], Any]]


def _child(fn: Callable[[], Any], index: int, out: Any) -> None:
    try:
        out.put((index, True, fn()))
    except BaseException:  # report any failure to the parent instead of dying silently
        out.put((index, False, traceback.format_exc()))


def run_jobs(jobs: list[Job], workers: int = 1,
             on_done: Callable[[str, float], None] | None = None) -> list[Any]:
    """Results of ``jobs`` (``(name, fn)`` pairs) in their order; ``workers`` processes at a time.

    With ``workers`` <= 1 the jobs run inline in this process. A job that raises, or a worker that
    dies (killed, out of memory), raises :class:`RuntimeError` naming the job; the other workers
    are terminated. ``on_done(name, seconds)`` is called as each job finishes.
    """
    import time

    if workers <= 1 or len(jobs) <= 1:
        results = []
        for name, fn in jobs:
            t = time.monotonic()
            results.append(fn())
            if on_done is not None:
                on_done(name, time.monotonic() - t)
        return results
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    results: list[Any] = [None] * len(jobs)
    pending = list(range(len(jobs)))
    running: dict[int, tuple[Any, float]] = {}
    try:
        while pending or running:
            while pending and len(running) < workers:
                i = pending.pop(0)
                proc = ctx.Process(target=_child, args=(jobs[i][1], i, out), name=f"train-{jobs[i][0]}")
                proc.start()
                running[i] = (proc, time.monotonic())
            try:
                i, ok, payload = out.get(timeout=2.0)
            except queue_mod.Empty:
                for j, (proc, _) in list(running.items()):
                    if not proc.is_alive() and proc.exitcode not in (0, None):
                        raise RuntimeError(f"training job {jobs[j][0]!r} died (exit code {proc.exitcode})") from None
                continue
            proc, started = running.pop(i)
            proc.join()
            if not ok:
                raise RuntimeError(f"training job {jobs[i][0]!r} failed:\n{payload}")
            results[i] = payload
            log.info("training job %s done in %.0f s", jobs[i][0], time.monotonic() - started)
            if on_done is not None:
                on_done(jobs[i][0], time.monotonic() - started)
    finally:
        for proc, _ in running.values():
            if proc.is_alive():
                proc.terminate()
                proc.join()
    return results
