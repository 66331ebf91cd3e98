"""Evaluation layer: metrics and tables of a trained run, their figures, the model card and sweep comparisons.

Imports the foundation, ``data`` and ``inference``; never training.
"""
