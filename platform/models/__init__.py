"""Learned models: the image copy-detection descriptor, its edits, training and registry."""
