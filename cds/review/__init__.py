"""Clinicians' assessments of AI results: recorded in the store, sent as a DICOM SR to the PACS
and as FHIR status changes with a Provenance to the EHR (IHE AI Result Assessment).

``assess(settings, store, result_id, request, principal) -> ReviewRow``; refusals raise
:class:`ResultNotFound` (HTTP 404) or :class:`InvalidReview` (HTTP 422)."""

from cds.review.assess import assess
from cds.review.errors import InvalidReview, ResultNotFound, ReviewError

__all__ = ["InvalidReview", "ResultNotFound", "ReviewError", "assess"]
