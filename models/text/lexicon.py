"""BI-RADS ultrasound lexicon extraction from a free-text breast ultrasound report.

Radiologists write the ACR BI-RADS US descriptors in fairly fixed words, so a rule-based reader is
both sufficient and auditable: each field lists the phrases it recognizes, most specific first.
Negation is handled per clause: "no calcifications", "without posterior shadowing", "no
posterior acoustic features" give the *absent*/"none" value, while lexicon terms that contain a
negative word ("not parallel", "not circumscribed") are matched as terms before negation is
considered.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel

Shape = Literal["oval", "round", "irregular"]
Orientation = Literal["parallel", "not_parallel"]
Margin = Literal["circumscribed", "indistinct", "angular", "microlobulated", "spiculated", "not_circumscribed"]
EchoPattern = Literal["anechoic", "hyperechoic", "complex_cystic_solid", "hypoechoic", "isoechoic", "heterogeneous"]
Posterior = Literal["none", "enhancement", "shadowing", "combined"]

NEGATIONS = r"(?:no|without|absence of|absent|negative for|free of|not seen|no evidence of)"


class UltrasoundLexicon(BaseModel):
    """The BI-RADS US descriptors found in one report (None = not mentioned)."""

    shape: Shape | None = None
    orientation: Orientation | None = None
    margin: Margin | None = None
    echo_pattern: EchoPattern | None = None
    posterior_features: Posterior | None = None
    calcifications: bool | None = None
    size_mm: float | None = None
    birads: str | None = None  # "0".."6", "4A", "4B", "4C"

    def model_fields_numeric(self) -> dict[str, float]:
        """Numeric fields for the recurrence model (names in features.TEXT_LEXICON_FIELDS).

        Only fields that the report mentions are returned; the rest are missing inputs.
        """
        out: dict[str, float] = {}
        if self.shape is not None:
            out["shape_irregular"] = float(self.shape == "irregular")
        if self.orientation is not None:
            out["orientation_not_parallel"] = float(self.orientation == "not_parallel")
        if self.margin is not None:
            out["margin_not_circumscribed"] = float(self.margin != "circumscribed")
        if self.posterior_features is not None:
            out["posterior_shadowing"] = float(self.posterior_features in ("shadowing", "combined"))
        if self.calcifications is not None:
            out["calcifications_present"] = float(self.calcifications)
        if self.birads is not None:
            sub = {"A": 0.25, "B": 0.5, "C": 0.75}
            out["birads_category"] = float(self.birads[0]) + sub.get(self.birads[1:], 0.0)
        if self.size_mm is not None:
            out["size_mm"] = self.size_mm
        return out


def _clauses(text: str) -> list[str]:
    """Split into clauses; negation scope ends at a sentence or clause boundary."""
    return [c.strip() for c in re.split(r"[.;\n]|,\s*(?:and|but|with)\s|\bbut\b", text.lower()) if c.strip()]


def _negated(clause: str, term_start: int) -> bool:
    """True when a negation cue precedes the term within the same clause (up to 6 words back)."""
    before = clause[:term_start].split()[-6:]
    return re.search(rf"\b{NEGATIONS}\b", " ".join(before)) is not None


# (value, pattern) lists, most specific first.
_SHAPE = [("irregular", r"irregular(?:ly)?(?:[- ]shaped)?"), ("oval", r"oval|ellipsoid|elliptical"),
          ("round", r"round(?:ed)?")]
_ORIENT = [("not_parallel", r"not parallel|non[- ]?parallel|taller[- ]than[- ]wide|vertical(?:ly)? oriented"),
           ("parallel", r"parallel|wider[- ]than[- ]tall|horizontal(?:ly)? oriented")]
_MARGIN = [("spiculated", r"spiculat\w*"), ("microlobulated", r"micro[- ]?lobulated"),
           ("angular", r"angular"), ("indistinct", r"indistinct|ill[- ]defined|poorly defined"),
           ("not_circumscribed", r"not circumscribed|non[- ]?circumscribed"),
           ("circumscribed", r"circumscribed|well[- ]defined|smooth margins?")]
_ECHO = [("complex_cystic_solid", r"complex cystic(?: and|/)? ?solid|mixed cystic(?: and|/)? ?solid"),
         ("heterogeneous", r"heterogeneous(?:ly)?(?: echo\w*)?"), ("anechoic", r"anechoic"),
         ("hyperechoic", r"hyperechoic"), ("hypoechoic", r"hypoechoic|hypo-echoic"),
         ("isoechoic", r"isoechoic|iso-echoic")]
_POSTERIOR = [("combined", r"combined (?:posterior )?(?:pattern|features)"),
              ("shadowing", r"(?:posterior )?(?:acoustic )?shadow\w*"),
              ("enhancement", r"(?:posterior )?(?:acoustic )?enhancement")]


def _first(clauses: list[str], options: list[tuple[str, str]], allow_negated: bool = False) -> str | None:
    for value, pattern in options:
        for clause in clauses:
            for m in re.finditer(rf"\b(?:{pattern})\b", clause):
                if allow_negated or not _negated(clause, m.start()):
                    return value
    return None


def _posterior(clauses: list[str]) -> str | None:
    for clause in clauses:
        if re.search(rf"\b{NEGATIONS}\b.{{0,30}}posterior (?:acoustic )?(?:features|phenomena|changes)", clause):
            return "none"
        if re.search(r"\bno posterior\b", clause):
            return "none"
    for value, pattern in _POSTERIOR:
        for clause in clauses:
            for m in re.finditer(rf"\b(?:{pattern})\b", clause):
                if _negated(clause, m.start()):
                    continue
                return value
    return None


def _calcifications(clauses: list[str]) -> bool | None:
    found: bool | None = None
    for clause in clauses:
        for m in re.finditer(r"\b(?:micro)?calcifications?\b|\bcalcified\b|\bcalcs\b", clause):
            if _negated(clause, m.start()):
                found = False if found is None else found
            else:
                return True
    return found


_SIZE = re.compile(
    r"(\d+(?:\.\d+)?)\s*(?:(?:x|×|by)\s*(\d+(?:\.\d+)?)\s*)?(?:(?:x|×|by)\s*(\d+(?:\.\d+)?)\s*)?(mm|cm)\b"
)


def _size_mm(text: str) -> float | None:
    """Largest dimension of the first measurement (``12 mm``, ``1.2 x 0.8 cm``, ``12 x 8 x 9 mm``)."""
    m = _SIZE.search(text.lower())
    if not m:
        return None
    dims = [float(g) for g in m.groups()[:3] if g is not None]
    scale = 10.0 if m.group(4) == "cm" else 1.0
    return round(max(dims) * scale, 2)


def _birads(text: str) -> str | None:
    m = re.search(r"bi-?rads(?:\s*(?:category|cat\.?|assessment))?\s*[:\-]?\s*([0-6])\s*([abc])?\b", text.lower())
    if not m:
        m = re.search(r"\bcategory\s*([0-6])\s*([abc])?\b", text.lower())
    if not m:
        return None
    return m.group(1) + (m.group(2) or "").upper()


def extract_lexicon(text: str) -> UltrasoundLexicon:
    """Read the BI-RADS US descriptors from report text (empty text gives all-None)."""
    clauses = _clauses(text or "")
    return UltrasoundLexicon(
        shape=_first(clauses, _SHAPE),
        orientation=_first(clauses, _ORIENT),
        margin=_first(clauses, _MARGIN),
        echo_pattern=_first(clauses, _ECHO),
        posterior_features=_posterior(clauses),
        calcifications=_calcifications(clauses),
        size_mm=_size_mm(text or ""),
        birads=_birads(text or ""),
    )
