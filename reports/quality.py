"""How sure a result is, in words: training domain and operating point (for the PDF, SR and FHIR).

An input outside the model's training domain (:class:`DomainCheck`) gets no plain decision in any
output: the decision is replaced by :data:`OUT_OF_DOMAIN` and the reasons are listed. The operating
point (:class:`OperatingPoint`) names the threshold in use and its expected sensitivity and
specificity on the card's held-out data.
"""

from __future__ import annotations

from cds.contracts.domain import Calibrated, DomainCheck, OperatingPoint, StudyAnalysis

OUT_OF_DOMAIN = "out of training domain: no decision (result unreliable)"


def operating_point_text(cal: Calibrated) -> str:
    """``operating point sensitivity_0.90 (threshold 0.362; expected sensitivity 0.91, ...)``."""
    op = cal.operating_point
    if op is None:
        return f"operating point {cal.threshold_name} (threshold {cal.threshold:.3f}; expected rates not known)"
    return f"operating point {op.name} (threshold {op.threshold:.3f}; {rates_text(op)})"


def rates_text(op: OperatingPoint) -> str:
    if op.source == "site":
        return "threshold set by this site; expected sensitivity/specificity not known"
    parts = []
    if op.expected_sensitivity is not None:
        parts.append(f"expected sensitivity {op.expected_sensitivity:.2f}")
    if op.expected_specificity is not None:
        parts.append(f"expected specificity {op.expected_specificity:.2f}")
    return (", ".join(parts) + " on held-out data") if parts else "expected rates not known"


def out_of_domain(domain: DomainCheck | None) -> bool:
    return domain is not None and not domain.in_domain


def domain_text(domain: DomainCheck | None) -> str:
    """One sentence: in domain, or out of it and why."""
    if domain is None:
        return "training domain not checked (the model card describes none)"
    score = ""
    if domain.score is not None and domain.threshold is not None:
        score = f" (embedding distance {domain.score:.1f}, threshold {domain.threshold:.1f})"
    if domain.in_domain:
        return f"within the training domain{score}"
    return "OUT OF TRAINING DOMAIN: " + "; ".join(domain.reasons) + score


def analysis_domain(analysis: StudyAnalysis) -> DomainCheck | None:
    """The study-level check: a mammography exam is out of domain when any of its images is."""
    if analysis.slide is not None:
        return analysis.slide.domain
    if analysis.mammography is None:
        return None
    checks = [img.domain for img in analysis.mammography.images if img.domain is not None]
    if not checks:
        return None
    bad = [c for c in checks if not c.in_domain]
    scores = [c.score for c in checks if c.score is not None]
    return DomainCheck(in_domain=not bad, score=max(scores) if scores else None,
                       threshold=checks[0].threshold,
                       reasons=list(dict.fromkeys(r for c in bad for r in c.reasons)))


def decision_text(cal: Calibrated, domain: DomainCheck | None, positive: str, negative: str) -> str:
    if out_of_domain(domain):
        return OUT_OF_DOMAIN
    return positive if cal.positive else negative
