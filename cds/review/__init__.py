"""Clinicians' assessments of AI results: recorded in the store, sent as a DICOM SR to the PACS
and as FHIR status changes with a Provenance to the EHR (IHE AI Result Assessment)."""
