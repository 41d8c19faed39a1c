"""Synthetic radiographs with lung and lesion masks."""
