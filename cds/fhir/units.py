"""UCUM units of the clinical variables: which units each variable accepts and how to convert.

A small table rather than a general UCUM library: the recurrence model reads seven numeric
variables, each with a handful of units laboratories actually send; a general converter (pint,
ucumvert) would accept units that make no sense for the variable (a tumour in "km", an ER in
"mg/dl") and still need a per-variable whitelist. Anything not in the table is an unknown unit
and the value is not used, with the reason recorded.

Units are matched on the Quantity's ``code`` when its ``system`` is UCUM (or absent), else on
its ``unit`` text, case-sensitively for UCUM codes and through a short alias list for the human
texts labs put in ``unit`` ("centimeters", "percent").
"""

from __future__ import annotations

UCUM = "http://unitsofmeasure.org"

# kind -> {UCUM code: factor to the canonical unit}; canonical unit first.
LENGTH = {"mm": 1.0, "cm": 10.0, "m": 1000.0, "um": 0.001, "[in_i]": 25.4}
PERCENT = {"%": 1.0}
# GBSG2's biochemical receptor assay (dextran-coated charcoal, cut-off 10). The data set states
# "fmol"; the classical unit is fmol per mg of cytosol protein. Both spellings mean that scale.
RECEPTOR_FMOL = {"fmol/L": 1.0, "fmol/mg": 1.0, "fmol/mg{protein}": 1.0, "fmol/mg{prot}": 1.0}
COUNT = {"{count}": 1.0, "1": 1.0, "{#}": 1.0, "{nodes}": 1.0, "{lymph_nodes}": 1.0}
SCORE = {"{score}": 1.0, "1": 1.0}
YEARS = {"a": 1.0}

CANONICAL = {"length": "mm", "percent": "%", "fmol": "fmol/L", "count": "{count}", "score": "{score}",
             "years": "a"}
TABLES = {"length": LENGTH, "percent": PERCENT, "fmol": RECEPTOR_FMOL, "count": COUNT, "score": SCORE,
          "years": YEARS}

# Human texts seen in ``Quantity.unit`` -> UCUM code.
ALIASES = {
    "millimeter": "mm", "millimeters": "mm", "millimetre": "mm", "millimetres": "mm",
    "centimeter": "cm", "centimeters": "cm", "centimetre": "cm", "centimetres": "cm",
    "percent": "%", "pct": "%", "% positive": "%", "%positive": "%",
    "fmol/l": "fmol/L", "fmol/mg protein": "fmol/mg{protein}", "count": "{count}", "nodes": "{count}",
    "#": "{count}", "years": "a", "year": "a", "yr": "a",
}

# Which kinds each variable accepts (numbers only; coded values carry no unit).
VARIABLE_KINDS: dict[str, tuple[str, ...]] = {
    "age_years": ("years",),
    "tumour_size_mm": ("length",),
    "positive_nodes": ("count",),
    "nodes_examined": ("count",),
    "er": ("percent", "fmol"),
    "pr": ("percent", "fmol"),
    "ki67": ("percent",),
    "her2": ("score",),
    "grade": ("score",),
}
# Counts and scores may come as a bare integer (valueInteger, or a Quantity without a unit).
DIMENSIONLESS_OK = {"positive_nodes", "nodes_examined", "her2", "grade"}


class UnitError(ValueError):
    """The unit is absent or not one this variable accepts; the message says which."""


def ucum_code(quantity: dict) -> str:
    """The unit of a FHIR Quantity as a UCUM code ("" when it has none)."""
    system = quantity.get("system")
    code = quantity.get("code")
    if isinstance(code, str) and code.strip() and system in (None, UCUM):
        return code.strip()
    unit = quantity.get("unit")
    if isinstance(unit, str) and unit.strip():
        text = unit.strip()
        return ALIASES.get(text.lower(), text)
    if isinstance(code, str) and code.strip():  # a code in another system: keep it, it will not match
        return f"{system}|{code.strip()}"
    return ""


def normalise(variable: str, value: float, unit: str) -> tuple[float, str]:
    """``value`` in ``unit`` as (value, canonical UCUM unit) for ``variable``; raises UnitError."""
    kinds = VARIABLE_KINDS.get(variable, ())
    if not unit:
        if variable in DIMENSIONLESS_OK:
            return value, CANONICAL[kinds[0]]
        raise UnitError(f"no unit given (expected one of {accepted(variable)})")
    for kind in kinds:
        factor = TABLES[kind].get(unit)
        if factor is not None:
            return value * factor, CANONICAL[kind]
    raise UnitError(f"unit {unit!r} not accepted for {variable} (expected one of {accepted(variable)})")


def accepted(variable: str) -> list[str]:
    return [u for kind in VARIABLE_KINDS.get(variable, ()) for u in TABLES[kind]]
