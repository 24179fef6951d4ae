"""Dataset fingerprint → preprocessing plan; per-case reorient, resample, crop, normalise."""
