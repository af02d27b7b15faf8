"""Read clinical variables from Observations shaped per HL7 mCODE STU3 (and older plain forms).

One Observation (or one of its components) gives a :class:`Reading` per variable whose code it
carries (codes from ``settings.loinc``), or a :class:`NotUsed` saying why it cannot be used:
unknown unit, implausible value, a value of the wrong type, a malformed element. Every reason
names the resource and the element; none contains a patient's name or identifier.

Forms understood: tumour markers as presence (valueCodeableConcept Positive/Negative, LOINC
LA6576-8/LA6577-6 or SNOMED), percent of positive nuclei (valueQuantity ``%``) or biochemical
fmol; HER2 as IHC score (0, 1+, 2+, 3+) or interpretation, ISH as amplified / not amplified;
Ki-67 in ``%``; tumour size as valueQuantity or in mCODE's components (33728-7 maximum
dimension); node counts as valueInteger, valueQuantity or component (92833-3 examined);
Nottingham grade as a number or a coded answer ("Nottingham grade 2", "intermediate grade").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from cds.contracts.domain import NotUsed, SourceRef
from cds.fhir import plausibility, units

# ASCO/CAP 2020: ER/PR >= 1 % positive nuclei is positive (1-10 % "low positive").
RECEPTOR_PERCENT_POSITIVE = 1.0
# GBSG2's biochemical cut-off (fmol).
RECEPTOR_FMOL_POSITIVE = 10.0
NUMERIC = {"age_years", "tumour_size_mm", "positive_nodes", "nodes_examined", "ki67"}
CODED = {"menopausal_status", "stage_group", "her2_ish"}
NEGATIVE_CODES = {"LA6577-6", "260385009", "260415000", "2667000"}
POSITIVE_CODES = {"LA6576-8", "10828004", "52101004"}
LABELS = {"er": "ER", "pr": "PR", "her2": "HER2", "her2_ish": "HER2 ISH", "ki67": "Ki-67",
          "tumour_size_mm": "tumour size", "positive_nodes": "positive nodes", "nodes_examined": "nodes examined",
          "grade": "Nottingham grade", "menopausal_status": "menopausal status", "stage_group": "stage",
          "age_years": "age"}


@dataclass
class Reading:
    variable: str
    value: float | str  # canonical unit for numbers, a category for coded values
    unit: str
    original: str
    source: SourceRef
    when: str
    category: str  # what two readings are compared on (conflicts)
    note: str = ""


class Malformed(ValueError):
    """An element is not of the FHIR type expected; the message names the element."""


def codes_of(concept: Any) -> set[str]:
    """``system|code`` tokens of a CodeableConcept (malformed codings are skipped)."""
    out: set[str] = set()
    if not isinstance(concept, dict) or not isinstance(concept.get("coding"), list):
        return out
    for c in concept["coding"]:
        if isinstance(c, dict):
            out.add(f"{c.get('system', '')}|{c.get('code', '')}")
    return out


def text_of(concept: Any) -> str:
    if not isinstance(concept, dict):
        return ""
    parts = [concept.get("text")]
    for c in concept.get("coding") if isinstance(concept.get("coding"), list) else []:
        if isinstance(c, dict):
            parts += [c.get("display"), c.get("code")]
    return " ".join(p for p in parts if isinstance(p, str) and p).strip()


def display_of(concept: Any) -> str:
    """A concept as a person would read it: its text, else the first display, else a code."""
    if not isinstance(concept, dict):
        return ""
    if isinstance(concept.get("text"), str) and concept["text"]:
        return concept["text"]
    codings = [c for c in concept.get("coding") or [] if isinstance(c, dict)] if isinstance(
        concept.get("coding"), list) else []
    for key in ("display", "code"):
        for c in codings:
            if isinstance(c.get(key), str) and c[key]:
                return c[key]
    return ""


def when_of(res: dict[str, Any]) -> str:
    period = res.get("effectivePeriod") if isinstance(res.get("effectivePeriod"), dict) else {}
    meta = res.get("meta") if isinstance(res.get("meta"), dict) else {}
    for v in (res.get("effectiveDateTime"), period.get("start"), res.get("issued"), meta.get("lastUpdated")):
        if isinstance(v, str) and v:
            return v
    return ""


_NEGATION = re.compile(r"\bnot\s+(?:present|detected|expressed|amplified|identified|seen)\b|\babsent\b"
                       r"|\bnegative\b|\bneg\b|\bnon-?amplified\b|\bno\b")
_POSITIVE = re.compile(r"\bpositive\b|\bpos\b|\bdetected\b|\bpresent\b|\bexpressed\b|\bamplified\b"
                       r"|\byes\b")


class Ambiguous(ValueError):
    """A coded value that reads two ways; the message says why (no patient data)."""


def words_of(concept: Any) -> str:
    """A concept's text and displays, without codes (a code's digits are not a value)."""
    if not isinstance(concept, dict):
        return ""
    parts = [concept.get("text")]
    for c in concept.get("coding") if isinstance(concept.get("coding"), list) else []:
        if isinstance(c, dict):
            parts.append(c.get("display"))
    return " ".join(p for p in parts if isinstance(p, str) and p).strip()


def posneg(text: str, tokens: set[str] = frozenset()) -> str | None:  # type: ignore[assignment]
    """'positive', 'negative' or None (not understood). Negations are read first ("not
    present" is negative, never positive); a value that reads both ways raises
    :class:`Ambiguous`."""
    codes = {t.split("|")[-1] for t in tokens}
    neg_code, pos_code = bool(codes & NEGATIVE_CODES), bool(codes & POSITIVE_CODES)
    t = text.lower()
    neg_word = bool(_NEGATION.search(t))
    pos_word = bool(_POSITIVE.search(_NEGATION.sub(" ", t)))
    neg, pos = neg_code or neg_word, pos_code or pos_word
    if neg and pos:
        raise Ambiguous("reads both as positive and as negative")
    return "negative" if neg else "positive" if pos else None


def her2_category(score: float) -> str:
    return "positive" if score >= 3 else "equivocal" if score >= 2 else "negative"


_IHC_CONTEXT = re.compile(r"\bihc\b|immunohisto|\bscore\b")
_IHC_SCORE = re.compile(r"(?<![\w.+])([0-3])\s*\+(?![\w+])")  # "2+", never "HER2+"
_IHC_BARE = re.compile(r"\s*([0-3])\s*\+?\s*")
_IHC_IN_CONTEXT = re.compile(r"(?:\bihc|\bscore|immunohisto\w*)\s*(?:score)?\s*[:=]?\s*([0-3])(?![\d.])")


def _her2_coded(text: str, tokens: set[str]) -> tuple[str, str] | None:
    """(category, shown) from an IHC score (needs IHC context or a bare score: "HER2+" is not
    a score) or from positive/negative/equivocal words; :class:`Ambiguous` when it reads two
    ways."""
    t = text.lower()
    scores: set[int] = set()
    bare = _IHC_BARE.fullmatch(t)
    if bare:
        scores.add(int(bare.group(1)))
    scores |= {int(m) for m in _IHC_SCORE.findall(t)}
    if _IHC_CONTEXT.search(t):
        scores |= {int(m) for m in _IHC_IN_CONTEXT.findall(t)}
    if len(scores) > 1:
        raise Ambiguous(f"more than one IHC score ({', '.join(f'{s}+' for s in sorted(scores))})")
    if scores:
        score = scores.pop()
        return her2_category(score), f"IHC {score}{'+' if score else ''}"
    if re.search(r"equivocal|borderline", t):
        return "equivocal", "equivocal"
    pn = posneg(text, tokens)
    return (pn, pn) if pn else None


_GRADE_WORDS = (("well differentiated", 1), ("low grade", 1), ("low histologic", 1),
                ("moderately", 2), ("intermediate", 2), ("poorly", 3), ("high grade", 3),
                ("high histologic", 3))


def _grade_coded(text: str) -> float | None:
    """A Nottingham grade from words ("grade 2", "G2", "grade II", "intermediate grade", a bare
    "2"); ``text`` must hold text/displays only, never codes (a LOINC answer code ends in a check
    digit). :class:`Ambiguous` when it names more than one grade."""
    t = text.lower()
    found: set[int] = set()
    found |= {int(g) for g in re.findall(r"\bgrade\s*:?\s*([1-3])(?![\d.])", t)}
    found |= {int(g) for g in re.findall(r"\bg([1-3])\b", t)}
    found |= {{"i": 1, "ii": 2, "iii": 3}[g] for g in re.findall(r"\bgrade\s*:?\s*(iii|ii|i)\b", t)}
    bare = re.fullmatch(r"\s*([1-3])\s*", t)
    if bare:
        found.add(int(bare.group(1)))
    found |= {g for words, g in _GRADE_WORDS if words in t}
    if len(found) > 1:
        raise Ambiguous(f"names more than one grade ({', '.join(str(g) for g in sorted(found))})")
    return float(found.pop()) if found else None


def _menopause(text: str, tokens: set[str]) -> str | None:
    codes = {t.split("|")[-1] for t in tokens}
    t = text.lower()
    if "307429007" in codes or "post" in t or "after" in t:
        return "post"
    if "309606002" in codes or "pre" in t or "peri" in t or "before" in t:
        return "pre"
    return None


class _Ctx:
    def __init__(self, variable: str, name: str, element: str, when: str, display: str) -> None:
        self.variable, self.name, self.element, self.when = variable, name, element, when
        self.source = SourceRef(kind="Observation", reference=name, display=display)

    def refuse(self, reason: str) -> NotUsed:
        return NotUsed(variable=self.variable, reason=f"{self.name} {self.element}: {reason}", source=self.name)

    def reading(self, value: float | str, unit: str, original: str, category: str, note: str = "") -> Reading:
        label = LABELS.get(self.variable, self.variable)
        shown = f"{label} {original}" + (f" -> {note}" if note else "")
        src = self.source.model_copy(update={"display": shown})
        return Reading(self.variable, value, unit, original, src, self.when, category, note)


def _number(v: Any, element: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise Malformed(f"{element} is not a number ({type(v).__name__})")
    return float(v)


def _quantity(ctx: _Ctx, number: float, unit: str, original: str) -> Reading | NotUsed:
    var = ctx.variable
    if var in CODED:
        return ctx.refuse(f"a number ({original}) where a coded value is expected")
    if var == "menopausal_status":
        return ctx.refuse("a number where a coded value is expected")
    try:
        value, canon = units.normalise(var, number, unit)
    except units.UnitError as exc:
        return ctx.refuse(str(exc))
    why = plausibility.check(var, value, canon)
    if why:
        return ctx.refuse(f"{why} (as sent: {original})")
    if var in ("er", "pr"):
        if canon == "%":
            cat = "positive" if value >= RECEPTOR_PERCENT_POSITIVE else "negative"
            low = " (ER/PR-low positive: 1-10 %)" if cat == "positive" and value <= 10 else ""
            note = f"{cat} by ASCO/CAP (>= {RECEPTOR_PERCENT_POSITIVE:g} % positive nuclei){low}"
            return ctx.reading(value, canon, original, cat, note)
        cat = "positive" if value >= RECEPTOR_FMOL_POSITIVE else "negative"
        return ctx.reading(value, canon, original, cat, f"{cat} (GBSG2 cut-off {RECEPTOR_FMOL_POSITIVE:g} fmol)")
    if var == "her2":
        cat = her2_category(value)
        return ctx.reading(cat, "", f"IHC {value:g}{'+' if value else ''}", cat)
    if var in ("positive_nodes", "nodes_examined", "grade"):
        value = float(int(value))
    return ctx.reading(value, canon, original, f"{value:g}")


def _coded(ctx: _Ctx, text: str, tokens: set[str], original: str) -> Reading | NotUsed:
    try:
        return _coded_value(ctx, text, tokens, original)
    except Ambiguous as exc:
        return ctx.refuse(f"coded value {original!r} is ambiguous: {exc}")


def _coded_value(ctx: _Ctx, text: str, tokens: set[str], original: str) -> Reading | NotUsed:
    var = ctx.variable
    if var in ("er", "pr", "her2_ish"):
        cat = posneg(text, tokens)
        return ctx.reading(cat, "", original, cat) if cat else ctx.refuse(f"coded value {original!r} not understood")
    if var == "her2":
        found = _her2_coded(text, tokens)
        return ctx.reading(found[0], "", original, found[0]) if found else ctx.refuse(
            f"coded value {original!r} not understood (expected IHC 0, 1+, 2+, 3+ or positive/negative)")
    if var == "grade":
        g = _grade_coded(text)
        return ctx.reading(g, "{score}", original, f"{g:g}") if g else ctx.refuse(
            f"coded value {original!r} not understood as a Nottingham grade 1-3")
    if var == "menopausal_status":
        m = _menopause(text, tokens)
        return ctx.reading(m, "", original, m) if m else ctx.refuse(f"coded value {original!r} not understood")
    if var == "stage_group":
        return ctx.reading(original, "", original, original) if original else ctx.refuse("empty stage")
    return ctx.refuse(f"a coded value ({original!r}) where a number with a unit is expected")


def _string_value(ctx: _Ctx, s: str) -> Reading | NotUsed:
    m = re.fullmatch(r"\s*(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)\s*(\S.*?)?\s*", s)
    if m and ctx.variable not in CODED:
        unit = (m.group(2) or "").strip()
        return _quantity(ctx, float(m.group(1)), units.ALIASES.get(unit.lower(), unit), s.strip())
    return _coded(ctx, s, set(), s.strip())


def read_value(ctx: _Ctx, element: dict[str, Any]) -> Reading | NotUsed | None:
    """The value[x] of an Observation or component for ``ctx.variable`` (None: no value)."""
    if "valueQuantity" in element:
        q = element["valueQuantity"]
        if not isinstance(q, dict):
            raise Malformed("valueQuantity is not an object")
        number = _number(q.get("value"), "valueQuantity.value")
        unit = units.ucum_code(q)
        return _quantity(ctx, number, unit, f"{number:g} {unit}".strip())
    if "valueInteger" in element:
        number = _number(element["valueInteger"], "valueInteger")
        return _quantity(ctx, number, "", f"{number:g}")
    if "valueCodeableConcept" in element:
        cc = element["valueCodeableConcept"]
        if not isinstance(cc, dict):
            raise Malformed("valueCodeableConcept is not an object")
        return _coded(ctx, words_of(cc), codes_of(cc), display_of(cc))
    if "valueString" in element:
        if not isinstance(element["valueString"], str):
            raise Malformed("valueString is not a string")
        return _string_value(ctx, element["valueString"])
    if "valueBoolean" in element:
        if not isinstance(element["valueBoolean"], bool):
            raise Malformed("valueBoolean is not a boolean")
        word = "positive" if element["valueBoolean"] else "negative"
        return _coded(ctx, word, set(), word)
    return None


def read_observation(obs: dict[str, Any], name: str, table: dict[str, list[str]]) -> list[Reading | NotUsed]:
    """Every reading (or refusal) one Observation gives for the variables of ``table``."""
    out: list[Reading | NotUsed] = []
    when = when_of(obs)
    display = text_of(obs.get("code")) or "Observation"
    tokens = codes_of(obs.get("code"))
    comps = obs.get("component") if isinstance(obs.get("component"), list) else []
    for var, wanted in table.items():
        ctx = _Ctx(var, name, "value[x]", when, display)
        got_component = False
        for i, comp in enumerate(comps):
            if isinstance(comp, dict) and codes_of(comp.get("code")) & set(wanted):
                cctx = _Ctx(var, name, f"component[{i}]", when, display)
                out.append(_safe(cctx, comp))
                got_component = True
        if not tokens & set(wanted) or got_component:
            continue
        out.append(_safe(ctx, obs, missing=f"no value (and no component coded {wanted[:2]})"))
    return out


def _safe(ctx: _Ctx, element: dict[str, Any], missing: str = "no value") -> Reading | NotUsed:
    try:
        got = read_value(ctx, element)
    except (Malformed, TypeError, ValueError, AttributeError, KeyError) as exc:
        return ctx.refuse(f"malformed ({exc})")
    return got if got is not None else ctx.refuse(missing)
