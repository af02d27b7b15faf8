"""The audit trail: every receipt, query, disclosure and read of patient data as an IHE BALP
AuditEvent in a hash-chained, fsynced, owner-only JSON-lines log (``<data_dir>/audit/``),
optionally forwarded as RFC 5424 syslog toward an ATNA repository.

The stages call :func:`cds.audit.trail.audit_receipt`, ``audit_query``, ``audit_disclosure`` and
``audit_read``; ``cds audit verify`` checks the chain (:func:`cds.audit.chain.verify`). Records
name patients by their keyed patient key, never by name, ID or birth date.
"""
