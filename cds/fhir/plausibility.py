"""Plausibility ranges of the clinical variables, in their canonical units.

A value outside its range (or not finite) is not used: the reason names the value, the unit
and the range. The ranges are wide on purpose; they catch unit mix-ups and typing errors (ER
5000 %, age 2025 years, a 1e308 mm tumour), not unusual patients.
"""

from __future__ import annotations

import math

# variable -> canonical unit -> (low, high), inclusive.
RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "age_years": {"a": (15.0, 110.0)},
    "tumour_size_mm": {"mm": (0.1, 300.0)},
    "positive_nodes": {"{count}": (0.0, 80.0)},
    "nodes_examined": {"{count}": (0.0, 120.0)},
    "er": {"%": (0.0, 100.0), "fmol/L": (0.0, 10000.0)},
    "pr": {"%": (0.0, 100.0), "fmol/L": (0.0, 10000.0)},
    "ki67": {"%": (0.0, 100.0)},
    "her2": {"{score}": (0.0, 3.0)},
    "grade": {"{score}": (1.0, 3.0)},
}
INTEGER_VARIABLES = {"positive_nodes", "nodes_examined", "her2", "grade"}


def check(variable: str, value: float, unit: str) -> str:
    """"" when plausible, else the reason the value cannot be used."""
    if not math.isfinite(value):
        return f"{variable} value {value} is not a finite number"
    rng = RANGES.get(variable, {}).get(unit)
    if rng is None:
        return f"{variable}: no plausibility range for unit {unit!r}"
    low, high = rng
    if not low <= value <= high:
        return f"{variable} {value:g} {unit} is outside the plausible range {low:g}-{high:g} {unit}"
    if variable in INTEGER_VARIABLES and not float(value).is_integer():
        return f"{variable} {value:g} is not a whole number"
    return ""
