"""The patient's clinical context for the recurrence model, from FHIR (server or offline folder).

Finds the Patient by identifier (DICOM Patient ID, with Issuer of Patient ID mapped to an
identifier system by ``settings.fhir_issuer_systems``, else ``fhir_patient_identifier_system``),
then reads the final Observations of the variables in ``settings.loinc`` (mCODE STU3 forms, each
value with its UCUM unit, checked for plausibility, see :mod:`cds.fhir.reader`) and the latest
ultrasound DiagnosticReport (its conclusion, else its text/plain presentedForm). Values are
normalised to the keys and units the recurrence model reads (see :data:`KEYS`), each with the
SourceRef it came from; values found and not used are listed with the reason. With neither a server nor an offline folder configured, the context is
empty and the recurrence model reports the inputs as missing.
"""

from __future__ import annotations

import logging
from datetime import date

from cds.contracts.domain import ClinicalContext, PatientRef
from cds.contracts.errors import PeerUnreachable, PermanentError
from cds.contracts.settings import Settings
from cds.fhir.reader import ServerSource, Source, read_context

log = logging.getLogger(__name__)

KEYS = ("age_years", "tumour_size_mm", "positive_nodes", "grade", "er", "pr", "her2", "ki67",
        "menopausal_status")
# The reading logic lives in cds.fhir.reader (mCODE forms, units, plausibility, references).
_ServerSource = ServerSource


def clinical_context_from(source: Source, settings: Settings, patient: PatientRef,
                          today: date | None = None) -> ClinicalContext:
    """The context logic, independent of where the resources come from."""
    return read_context(source, settings, patient, today)


def fetch_clinical_context(settings: Settings, patient: PatientRef) -> ClinicalContext:
    """Server when ``fhir_base_url`` is set, else ``fhir_offline_dir``, else an empty context."""
    if settings.fhir_base_url:
        from cds.fhir.client import FhirClient, FhirError

        with FhirClient(settings) as client:
            try:
                return clinical_context_from(_ServerSource(client), settings, patient)
            except FhirError as exc:  # an outage is retried (and woken when the server answers)
                if exc.permanent:
                    raise PermanentError(f"clinical context: {exc}") from exc
                raise PeerUnreachable("fhir", f"clinical context: {exc}") from exc
    if settings.fhir_offline_dir:
        from cds.fhir.offline import OfflineFhirSource

        return clinical_context_from(OfflineFhirSource(settings.fhir_offline_dir), settings, patient)
    return ClinicalContext()
