"""UI-free core of the UTKFace multi-task dashboard: data, training, evaluation, prediction."""

__version__ = "0.1.0"
