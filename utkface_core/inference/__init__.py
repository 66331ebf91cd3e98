"""Inference layer: one path from an image to predictions (prediction), face detection, Grad-CAM and model export.

Imports the foundation and ``data``; never training or evaluation.
"""
