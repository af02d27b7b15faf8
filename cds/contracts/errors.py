"""The one error taxonomy: the class of an exception, not its built-in type, decides a job's fate.

- :class:`PermanentError`: the work can never succeed as it stands (unreadable input, a
  destination that refused the item): dead-letter it now with the reason.
- :class:`TransientError`: a peer or resource is unavailable for now: retry with backoff.
- :class:`InsufficientInput`: a case model lacks the inputs it needs yet; the case is recorded as
  waiting and evaluated again when an input arrives. Not a failure.
- :class:`ModelUnavailable`: a model cannot be loaded here (weights, card or a dependency
  missing); says which and why.

Any other exception escaping a handler is a bug: it is retried with backoff like a transient
error (so nothing is lost) and logged with its traceback.
"""

from __future__ import annotations


class CdsError(Exception):
    """Base of every error the service raises on purpose."""


class PermanentError(CdsError):
    """Cannot succeed as it stands: dead-letter now, never retry automatically."""


class TransientError(CdsError):
    """Temporarily impossible (peer down, timeout, out of resources): retry later."""


class InsufficientInput(CdsError):
    """Not enough input to run yet; the work is re-run when an input changes."""


class ModelUnavailable(CdsError):
    """A model cannot be loaded here (missing weights, card or dependency); says which and why."""


class InvalidWeights(ModelUnavailable):
    """A weight file or card exists but fails validation (checksum, schema, synthetic notice)."""


class InputError(PermanentError):
    """The input cannot be read or used as it is; the message names the file, tag or resource."""


class NothingToAnalyse(InputError):
    """Every input was recognised and deliberately not analysed (tomosynthesis, magnification
    view, ...): the pipeline records a ``not_analysed`` result with the reasons and ends the job;
    nothing is dead-lettered."""


class PeerUnreachable(TransientError):
    """A peer (``"fhir"``, ``"pacs"``) did not answer: retried within ``settings.retry_budget_h``,
    whatever the attempt counts say, and made due at once when the peer answers again.

    The message starts with :func:`peer_marker`, so the job or outbox row's ``last_error`` says
    which peer it waits for (the store finds the waiting rows by it)."""

    def __init__(self, peer: str, message: str) -> None:
        super().__init__(f"{peer_marker(peer)} {message}")
        self.peer = peer


def peer_marker(peer: str) -> str:
    """The tag a waiting row's ``last_error`` carries for ``peer``: ``[peer:fhir]``."""
    return f"[peer:{peer}]"
