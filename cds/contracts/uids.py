"""The one UID rule (DICOM PS3.5 section 9.1), used by every stage before a UID names a path,
a row or a log line.

A valid UID is a single value of at most 64 characters made of components separated by ``.``;
each component is one or more digits ``0-9`` without a leading zero (``0`` alone is allowed).
Such a string can never hold ``/``, ``..``, a space, a backslash (a second value) or anything a
shell or a filesystem would read specially, so a validated UID may name a file under a fixed folder.
"""

from __future__ import annotations

import re

from cds.contracts.errors import InputError

UID_MAX_LENGTH = 64
_UID_RE = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*")


class InvalidUid(InputError):
    """A UID that breaks PS3.5 9.1; the message names the attribute and the rule, never the value."""

    def __init__(self, attribute: str, problem: str) -> None:
        super().__init__(f"{attribute} is not a valid UID: {problem}")
        self.attribute = attribute
        self.problem = problem


def uid_problem(value: object) -> str | None:
    """Why ``value`` is not a valid UID (a short phrase without the value), or None if it is."""
    if not isinstance(value, str):
        return f"expected one text value, got {type(value).__name__}"
    if value == "":
        return "empty"
    if "\\" in value:
        return "holds several values (backslash)"
    if len(value) > UID_MAX_LENGTH:
        return f"{len(value)} characters (at most {UID_MAX_LENGTH})"
    if not value.isascii() or not _UID_RE.fullmatch(value):
        if any(c not in "0123456789." for c in value):
            return "holds characters other than 0-9 and '.'"
        if value.startswith(".") or value.endswith(".") or ".." in value:
            return "has an empty component"
        return "has a component with a leading zero"
    return None


def is_valid_uid(value: object) -> bool:
    """Whether ``value`` is a single PS3.5-conformant UID."""
    return uid_problem(value) is None


def require_uid(value: object, attribute: str) -> str:
    """Return ``value`` if it is a valid UID, else raise :class:`InvalidUid` naming ``attribute``."""
    problem = uid_problem(value)
    if problem is not None:
        raise InvalidUid(attribute, problem)
    assert isinstance(value, str)
    return value
