"""Mammography-pathology alignment: a shared encoder with one adapter per modality, aligned by
patient-level contrastive learning on paired phantoms. At runtime only the mammography branch
runs, to find similar patches in a reference pathology bank shipped with the card."""
