"""Slide model training: phantom data, torch networks and loops, export, calibration fitting."""
