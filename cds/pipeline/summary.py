"""One-line summaries of results, for `cds status` and the result rows."""

from __future__ import annotations

from cds.contracts.domain import RecurrenceResult, StudyAnalysis


def summarize(analysis: StudyAnalysis) -> str:
    """What the model said, with its calibrated decision."""
    if analysis.mammography:
        m = analysis.mammography.exam_malignancy
        n = sum(len(i.lesions) for i in analysis.mammography.images)
        return (f"malignancy p={m.probability:.3f} ({'positive' if m.positive else 'negative'} at "
                f"{m.threshold:.2f}); {n} lesion(s)")
    if analysis.slide:
        s = analysis.slide
        return (f"metastasis p={s.metastasis.probability:.3f} "
                f"({'positive' if s.metastasis.positive else 'negative'}); "
                f"{s.tiles_stage2}/{s.tiles_stage1} tiles at high magnification")
    if analysis.ultrasound:
        u = analysis.ultrasound
        return f"ultrasound features: {len(u.radiomics)} radiomics, box from {u.box_source}"
    return "no findings"


def summarize_recurrence(result: RecurrenceResult) -> str:
    return (f"risk group {result.risk_group}; 5-year risk "
            f"{result.absolute_risk.get(5, float('nan')):.2f}; missing: "
            f"{', '.join(result.modalities_missing) or 'none'}")
