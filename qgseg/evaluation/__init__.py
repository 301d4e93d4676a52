"""Metrics, inference at original resolution, and the evaluation runner."""
