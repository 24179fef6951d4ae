"""Cross-validation folds grouped by patient, written once and reused by every arm."""
