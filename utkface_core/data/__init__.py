"""Data layer: file names and labels, the indexed frame, splits, decoded-image cache, demo set, archives, sources.

Imports only the top-level foundation modules (labels, config, paths, limits, access); never training,
evaluation or inference.
"""
