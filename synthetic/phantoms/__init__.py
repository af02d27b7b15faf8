"""Seeded synthetic phantoms (mammograms, slides, ultrasound) written as valid DICOM.

No real images can be obtained here, so every imaging model trains and is tested on these.
"""
