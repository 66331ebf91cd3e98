"""Label vocabulary of UTKFace: heads, class names, value ranges and split names."""

from __future__ import annotations

# The model's three heads, in this order everywhere (outputs, loss weights, logs, charts).
HEADS: tuple[str, ...] = ("age", "gender", "race")
GENDERS: tuple[str, ...] = ("male", "female")
RACES: tuple[str, ...] = ("White", "Black", "Asian", "Indian", "Others")
# The splits a run folder's split.csv assigns each image to.
SPLITS: tuple[str, ...] = ("train", "valid", "test")
MIN_AGE = 0
MAX_AGE = 116
# The tutorial trains on ages 10-65.
DEFAULT_AGE_RANGE: tuple[int, int] = (10, 65)
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
