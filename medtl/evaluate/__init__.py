"""Evaluation: per-case overlap and surface metrics, and paired comparisons of arms."""
