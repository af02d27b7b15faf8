"""Ultrasound encoder training on phantoms (torch)."""
