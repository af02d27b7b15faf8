"""Training helpers shared by every model (scikit-learn, never imported by a runtime)."""
