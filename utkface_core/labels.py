"""Label vocabulary of UTKFace: class names and value ranges."""

from __future__ import annotations

# The model's three heads, in this order everywhere (outputs, loss weights, logs, charts).
HEADS: tuple[str, ...] = ("age", "gender", "race")
GENDERS: tuple[str, ...] = ("male", "female")
RACES: tuple[str, ...] = ("White", "Black", "Asian", "Indian", "Others")
MIN_AGE = 0
MAX_AGE = 116
# The tutorial trains on ages 10-65.
DEFAULT_AGE_RANGE: tuple[int, int] = (10, 65)
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def gender_name(code: int) -> str:
    """Return the class name of a gender code (0 male, 1 female)."""
    return GENDERS[code]


def race_name(code: int) -> str:
    """Return the class name of a race code (0-4)."""
    return RACES[code]
