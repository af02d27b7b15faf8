"""How the clinical values of one case were encoded for the recurrence model, in words.

The model was trained on GBSG2, whose ER and PR are biochemical receptor concentrations (fmol,
cut-off 10). Results reported today are IHC percentages of positive nuclei or a presence
(positive/negative). The mapping (stated in the model card as well):

* ER/PR in fmol: fed as reported (the training scale).
* ER/PR in % or as presence: positive by ASCO/CAP (>= 1 % positive nuclei, 1-10 % "low
  positive") is fed as :data:`RECEPTOR_POSITIVE_FMOL` (60 fmol/l), negative (< 1 %) as
  :data:`RECEPTOR_NEGATIVE_FMOL` (3 fmol/l): a representative value on either side of the cut-off.
  The percentage itself is not fed; 5 % and 90 % give the same input.

These lines go into the result, the RiskAssessment and the PDF, so a reader sees what the model
was given for this patient.
"""

from __future__ import annotations

from cds.contracts.domain import ClinicalContext
from models.recurrence.clinical import RECEPTOR_CUTOFF_FMOL, RECEPTOR_NEGATIVE_FMOL, RECEPTOR_POSITIVE_FMOL

LABELS = {"er": "ER", "pr": "PR", "her2": "HER2", "ki67": "Ki-67", "tumour_size_mm": "tumour size",
          "positive_nodes": "positive nodes", "grade": "grade", "age_years": "age",
          "menopausal_status": "menopausal status"}


def describe_encoding(clinical: ClinicalContext) -> list[str]:
    lines = []
    for key, label in LABELS.items():
        cv = clinical.measured.get(key)
        if cv is None or key not in clinical.values:
            continue
        fed = clinical.values[key]
        if key in ("er", "pr"):
            if isinstance(fed, str):
                fmol = RECEPTOR_POSITIVE_FMOL if fed == "positive" else RECEPTOR_NEGATIVE_FMOL
                how = "IHC % positive nuclei" if cv.unit == "%" else "presence"
                lines.append(f"{label} {cv.original} ({how}) -> {fed} (ASCO/CAP: >= 1 % positive) -> fed as "
                             f"{fmol:g} fmol/l on the GBSG2 scale (cut-off {RECEPTOR_CUTOFF_FMOL:g} fmol/l)")
            else:
                side = "positive" if float(fed) >= RECEPTOR_CUTOFF_FMOL else "negative"
                lines.append(f"{label} {cv.original} (biochemical) -> fed as {float(fed):g} fmol/l, the training "
                             f"scale ({side}; cut-off {RECEPTOR_CUTOFF_FMOL:g} fmol/l)")
        elif cv.unit and cv.original and cv.original != f"{fed} {cv.unit}":
            lines.append(f"{label} {cv.original} -> fed as {fed:g} {cv.unit}" if isinstance(fed, float)
                         else f"{label} {cv.original} -> fed as {fed}")
    return lines
