"""Sliding-window inference, fold ensembles, and masks written in the original image space."""
