"""The report's recurrence section when two models answer the same question.

The primary answer (``settings.recurrence_primary``) is the report's recurrence section; each
other variant is listed beside it, marked as not primary, with the sentence saying why the two
can differ. Kept apart from :mod:`reports.pdf` so that the PDF context stays one function.
"""

from __future__ import annotations

from typing import Any

from cds.contracts.domain import RecurrenceResult


def add_alternatives(context: dict[str, Any], primary: RecurrenceResult | None,
                     alternatives: list[RecurrenceResult], why: list[str]) -> dict[str, Any]:
    """``context`` with the primary model named and ``recurrence_others`` listed beside it."""
    if context.get("recurrence") is not None and primary is not None:
        context["recurrence"]["primary_model"] = f"{primary.model.name} {primary.model.version}"
    context["recurrence_others"] = [
        {"model": f"{r.model.name} {r.model.version}", "scope": r.scope or "other", "group": r.risk_group,
         "risks": [(y, f"{p:.0%}") for y, p in sorted(r.absolute_risk.items())], "why": text}
        for r, text in zip(alternatives, why)]
    return context
