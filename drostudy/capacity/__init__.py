"""Capacity axis of issue #25: each stage's plan at higher capacity (notebook 06)."""
