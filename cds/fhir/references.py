"""FHIR references as they come: relative (``Patient/1``), absolute (``https://x/fhir/Patient/1``,
with or without ``_history``) and ``urn:uuid:`` (resolved through a Bundle entry's fullUrl).

:class:`ReferenceIndex` holds resources by every name they can be referred to with, so a
reference of any of these forms finds the same resource.
"""

from __future__ import annotations

from typing import Any


def type_and_id(ref: str) -> str | None:
    """``Type/id`` of a relative or absolute reference (``_history/n`` dropped), else None."""
    if not isinstance(ref, str) or not ref or ref.startswith(("urn:", "#")):
        return None
    parts = [p for p in ref.split("?")[0].split("/") if p]
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) >= 2 and parts[-2][:1].isupper():
        return f"{parts[-2]}/{parts[-1]}"
    return None


def resource_name(res: dict[str, Any], full_url: str = "") -> str:
    """How results name a resource: ``Type/id``, else its fullUrl (urn:uuid), else ``Type``."""
    rtype = str(res.get("resourceType", "Resource"))
    rid = res.get("id")
    if isinstance(rid, str) and rid:
        return f"{rtype}/{rid}"
    return full_url or rtype


class ReferenceIndex:
    """Resources by ``Type/id`` and by fullUrl; :meth:`resolve` accepts any reference form."""

    def __init__(self) -> None:
        self.by_name: dict[str, dict[str, Any]] = {}
        self.names: dict[int, set[str]] = {}

    def add(self, res: dict[str, Any], full_url: str = "") -> None:
        names = {resource_name(res, full_url)}
        if isinstance(full_url, str) and full_url:
            names.add(full_url)
            tid = type_and_id(full_url)
            if tid:
                names.add(tid)
        for n in names:
            self.by_name.setdefault(n, res)
        self.names.setdefault(id(res), set()).update(names)

    def resolve(self, ref: Any) -> dict[str, Any] | None:
        if not isinstance(ref, str) or not ref:
            return None
        found = self.by_name.get(ref)
        if found is None:
            tid = type_and_id(ref)
            found = self.by_name.get(tid) if tid else None
        return found

    def refers_to(self, ref: Any, target: dict[str, Any]) -> bool:
        """Whether ``ref`` (a reference string) names ``target``."""
        if not isinstance(ref, str) or not ref:
            return False
        if self.resolve(ref) is target:
            return True
        tid = type_and_id(ref)
        return bool(tid) and tid in self.names.get(id(target), set())


def subject_reference(res: dict[str, Any]) -> str:
    """The reference string of a resource's subject (or patient) element, "" when absent."""
    for element in ("subject", "patient"):
        ref = res.get(element)
        if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
            return ref["reference"]
    return ""
