"""Mammography training: data, network, loop, evaluation, LOVO and export (torch, scikit-learn)."""
