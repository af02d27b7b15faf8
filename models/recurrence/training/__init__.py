"""Recurrence model training: the GBSG2 cohort, the MRRP network, selection and export (torch, lifelines, scikit-learn)."""
