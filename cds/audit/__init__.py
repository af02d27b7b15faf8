"""The audit trail: every receipt, query, disclosure and read of patient data as an IHE BALP
AuditEvent in a hash-chained, fsynced, owner-only JSON-lines log (``<data_dir>/audit/``),
optionally forwarded as RFC 5424 syslog toward an ATNA repository.

The stages call :func:`cds.audit.trail.audit_receipt`, ``audit_query``, ``audit_disclosure`` and
``audit_read``. Records that describe a store state change are not written directly but staged in
that change's transaction (:mod:`cds.store.audit_outbox`: an output's delivery, a job's FHIR
queries held by :func:`cds.audit.trail.holding`) and appended by :mod:`cds.audit.drain`.
``cds audit verify`` checks the chain (:func:`cds.audit.chain.verify`). Records
name patients by their keyed patient key, never by name, ID or birth date.
"""
