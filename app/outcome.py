"""What a run achieved, as an exit code and one line per problem (`cds analyze`, `cds demo`).

A command that did not do all of its work must say so and exit non-zero, so that a script or CI
running it never mistakes "no model" or "failed" for success. The codes, most severe first:

====  ==========================================================================================
0     every input was accepted, every study analysed by a model, every case evaluated, every
      output delivered
3     start refused: an enabled model cannot be loaded (names the package or file; a site can
      disable the model with ``CDS_DISABLED_MODELS``)
5     work failed: a job or an output is dead, or a job was still retrying when the command
      ended (its last error is listed)
4     an input was refused (not DICOM, invalid, unsupported; listed with the reason)
6     results incomplete: a study had no model for its modality or nothing in it could be
      analysed (e.g. tomosynthesis only), or a case lacked the inputs its model needs
====  ==========================================================================================

(1 is an unexpected error, 2 a usage error, as typer reports them.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cds.store import Store

EXIT_OK = 0
EXIT_MODEL_UNAVAILABLE = 3
EXIT_REFUSED_INPUT = 4
EXIT_FAILED = 5
EXIT_INCOMPLETE = 6


@dataclass
class RunOutcome:
    failed: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if self.failed:
            return EXIT_FAILED
        if self.refused:
            return EXIT_REFUSED_INPUT
        if self.incomplete:
            return EXIT_INCOMPLETE
        return EXIT_OK

    def lines(self) -> list[str]:
        return ([f"failed: {x}" for x in self.failed] + [f"refused: {x}" for x in self.refused]
                + [f"incomplete: {x}" for x in self.incomplete])


def run_outcome(store: Store, limit: int = 10_000, since: float = 0.0) -> RunOutcome:
    """Read the store after a run: dead work, refused inputs, studies and cases without results.

    ``since`` (epoch seconds) limits it to this run when the store holds earlier ones (a second
    `cds analyze` into the same folder must not report the first run's failures)."""
    out = RunOutcome()

    def _recent(*stamps: float | None) -> bool:
        return max((s or 0.0) for s in stamps) >= since

    for j in (j for j in store.jobs("dead", limit=limit) if _recent(j.updated_at, j.created_at)):
        out.failed.append(f"job {j.id} ({j.kind} {j.key}): {j.last_error or 'no reason recorded'}")
    for state in ("queued", "running"):  # still retrying when the command ended: not done
        for j in (j for j in store.jobs(state, limit=limit) if _recent(j.updated_at, j.created_at)):
            out.failed.append(f"job {j.id} ({j.kind} {j.key}) did not finish ({state}, attempt "
                              f"{j.attempts}): {j.last_error or 'not started'}")
    for o in (o for o in store.outbox_items("dead", limit=limit) if _recent(o.created_at)):
        out.failed.append(f"output {o.id} ({o.kind} {o.payload_path.name} -> {o.destination}): "
                          f"{o.last_error or 'no reason recorded'}")
    for state in ("pending", "delivering"):
        for o in (o for o in store.outbox_items(state, limit=limit) if _recent(o.created_at)):
            out.failed.append(f"output {o.id} ({o.kind} {o.payload_path.name} -> {o.destination}) "
                              f"not delivered ({state}): {o.last_error or 'not attempted'}")
    for r in (r for r in store.recent_rejections(limit) if _recent(r.at)):
        if r.status != 0x0122:  # "SOP classes not offered" refused no instance
            out.refused.append(f"{r.sop_uid or r.calling_ae or '?'} (0x{(r.status or 0):04X}): {r.reason}")
    latest: dict[tuple[str, str, str | None], str] = {}
    for r in (r for r in store.results(limit=limit) if _recent(r.created_at)):  # newest first
        key = (r.kind, r.study_uid or r.patient_key, r.model)
        if key in latest:
            continue
        latest[key] = r.status
        if r.status == "no_model" and r.modality == "SR":
            continue  # SRs (a sonographer's lesion region) are inputs other models read, not studies
        if r.status == "no_model" and r.kind == "recurrence":
            continue  # only when a site disabled the case models: an enabled one that cannot
            # load stops start-up instead
        if r.status == "no_model":
            where = f"study {r.study_uid} ({r.modality})" if r.study_uid else f"case {r.patient_key}"
            out.incomplete.append(f"{where}: {r.summary}")
        elif r.status == "not_analysed":  # e.g. only tomosynthesis or spot views: said why
            out.incomplete.append(f"study {r.study_uid} ({r.modality}) not analysed: {r.summary}")
        elif r.status == "insufficient_input":
            out.incomplete.append(f"case {r.patient_key} ({r.model}): {r.summary}")
    return out
