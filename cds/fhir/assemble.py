"""From readings to the values a model reads: latest wins, conflicts refused, HER2 combined.

For each variable the latest reading is used. Readings made at the same time that disagree (an
ER presence "negative" next to an ER of 40 %; two tumour sizes) are a conflict: the variable is
not used and the reason names both resources. A newer reading supersedes an older one silently
(that is how a corrected result arrives). HER2: IHC 3+ positive, 0/1+ negative, 2+ (equivocal)
decided by ISH; equivocal without ISH is not used.

What the model reads (``ClinicalContext.values``): numbers in the canonical unit (mm, %,
counts, years); ER/PR in fmol stay numbers (GBSG2's scale), ER/PR in % or as presence become
"positive"/"negative" (ASCO/CAP >= 1 %). The unit, source and original text of each are kept in
``ClinicalContext.measured``.
"""

from __future__ import annotations

from cds.contracts.domain import ClinicalValue, NotUsed, SourceRef
from cds.fhir.mcode import Reading


def _pick(variable: str, readings: list[Reading]) -> tuple[Reading | None, NotUsed | None]:
    readings = sorted(readings, key=lambda r: r.when, reverse=True)
    latest = [r for r in readings if r.when == readings[0].when]
    cats = {r.category for r in latest}
    if len(cats) > 1:
        srcs = ", ".join(f"{r.source.reference} ({r.original})" for r in latest)
        return None, NotUsed(variable=variable, reason=f"conflicting results of the same time: {srcs}",
                             source=latest[0].source.reference)
    numeric = [r for r in latest if r.unit]  # a number with its unit is more informative than a category
    return (numeric or latest)[0], None


def _her2(chosen: dict[str, Reading], not_used: list[NotUsed]) -> None:
    ihc, ish = chosen.get("her2"), chosen.pop("her2_ish", None)
    if ihc is not None and ihc.category != "equivocal":
        return
    if ish is not None:
        note = "from ISH" + (f" (IHC {ihc.original} equivocal)" if ihc else "")
        chosen["her2"] = Reading("her2", ish.category, "", ish.original, ish.source, ish.when, ish.category, note)
    elif ihc is not None:
        del chosen["her2"]
        not_used.append(NotUsed(variable="her2", reason=f"{ihc.source.reference}: HER2 {ihc.original} is "
                                "equivocal and no ISH result was found", source=ihc.source.reference))


def model_value(r: Reading) -> float | str:
    if r.variable in ("er", "pr") and r.unit == "%":
        return r.category
    return r.value


def assemble(readings: list[Reading], not_used: list[NotUsed]) -> tuple[
        dict[str, float | str], dict[str, SourceRef], dict[str, ClinicalValue], list[NotUsed]]:
    by_var: dict[str, list[Reading]] = {}
    for r in readings:
        by_var.setdefault(r.variable, []).append(r)
    refused = list(not_used)
    chosen: dict[str, Reading] = {}
    for var, rs in by_var.items():
        pick, why = _pick(var, rs)
        if pick is not None:
            chosen[var] = pick
        if why is not None:
            refused.append(why)
    _her2(chosen, refused)
    values = {k: model_value(r) for k, r in chosen.items()}
    sources = {k: r.source for k, r in chosen.items()}
    measured = {k: ClinicalValue(variable=k, value=r.value, unit=r.unit, source=r.source, original=r.original,
                                 note=r.note) for k, r in chosen.items()}
    return values, sources, measured, refused
