"""Why an assessment was refused: the HTTP layer answers 404 or 422 with the message."""

from __future__ import annotations


class ReviewError(ValueError):
    """An assessment that cannot be recorded; the message names what was wrong and what was expected."""


class ResultNotFound(ReviewError):
    """No stored result has that id (HTTP 404)."""


class InvalidReview(ReviewError):
    """The result exists but the assessment does not fit it (HTTP 422)."""
