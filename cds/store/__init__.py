"""The store: the single source of truth for instances, studies, cases, jobs, results and outbox.

SQLite in WAL mode with ``synchronous=FULL`` by default, so a committed row survives a power cut:
the listener acknowledges a C-STORE only after its row is committed here. Everything goes through
:class:`Store`. With ``CDS_DATABASE_URL=postgresql://USER@HOST:PORT/DB`` the same facade runs on
PostgreSQL (:mod:`cds.store.pg`, :mod:`cds.store.dialect`): the SQL is written once, in SQLite's
dialect, and translated; claims take ``FOR UPDATE SKIP LOCKED`` so that workers on several hosts
never share a job.

The store is split by concern, one module each, composed here into one facade:

- :mod:`cds.store.schema` — the tables; :mod:`cds.store.db` — connections per thread, ``tx()``
- :mod:`cds.store.instances` — patients, studies, instances, rejections, stable promotion
- :mod:`cds.store.jobs` — the job queue; :mod:`cds.store.results` — model results
- :mod:`cds.store.outbox` — outputs to deliver; :mod:`cds.store.cases` — per-patient case state
- :mod:`cds.store.status` — counts and the listings ``cds status`` shows
- :mod:`cds.store.waiting` — jobs and outputs waiting for a peer that did not answer
- :mod:`cds.store.reviews` — clinicians' assessments of AI results
- :mod:`cds.store.admin` — operator actions (requeue, model switches) and paged API listings

Hand-offs (jobs, results, outbox items) are the typed models of :mod:`cds.contracts.handoffs`;
the store's own listing rows are in :mod:`cds.store.rows`.
"""

from __future__ import annotations

from cds.store.admin import AdminStore
from cds.store.cases import CaseStore
from cds.store.instances import InstanceStore
from cds.store.jobs import JobStore, worker_name
from cds.store.outbox import OutboxStore
from cds.store.results import ResultStore
from cds.store.reviews import ReviewStore
from cds.store.rows import CaseOverviewRow, InstanceRow, RejectionRow, StudyRow
from cds.store.status import StatusStore
from cds.store.waiting import WaitingStore

__all__ = ["CaseOverviewRow", "InstanceRow", "RejectionRow", "Store", "StudyRow", "worker_name"]


class Store(InstanceStore, JobStore, ResultStore, OutboxStore, CaseStore, StatusStore, WaitingStore,
            ReviewStore, AdminStore):
    """The store (SQLite or PostgreSQL). One instance per process; thread-safe through per-thread connections.

    ``Store(url, synchronous="FULL")``: ``sqlite:///PATH`` or ``postgresql://USER@HOST:PORT/DB``.
    """
