"""Filters on labels and seeded train/validation/test splits."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from utkface_core.labels import GENDERS, MAX_AGE, RACES

SPLIT_METHODS = ("tutorial", "stratified", "select", "final")
# (test fraction of the whole set, valid fraction of the rest) per method; train gets the rest.
SPLIT_FRACTIONS: dict[str, tuple[float, float]] = {
    "tutorial": (0.3, 0.3),
    "stratified": (0.3, 0.3),
    "select": (0.10, 0.05 / 0.90),
    "final": (0.10, 0.05 / 0.90),
}
# Methods whose training also uses the validation rows (test rows are never trained on).
TRAINS_ON_VALID: frozenset[str] = frozenset({"final"})


def _codes(values: Iterable[int | str] | None, names: tuple[str, ...], what: str) -> list[int] | None:
    if values is None:
        return None
    codes = []
    for value in values:
        if isinstance(value, str):
            if value not in names:
                raise ValueError(f"unknown {what} {value!r}; expected one of {', '.join(names)}")
            codes.append(names.index(value))
        else:
            if not 0 <= int(value) < len(names):
                raise ValueError(f"{what} code {value} is out of range 0-{len(names) - 1}")
            codes.append(int(value))
    return codes


def filter_frame(
    frame: pd.DataFrame,
    min_age: int = 0,
    max_age: int = MAX_AGE,
    genders: Iterable[int | str] | None = None,
    races: Iterable[int | str] | None = None,
) -> pd.DataFrame:
    """Return the rows with ``min_age <= age <= max_age`` and the given genders and races (names or codes)."""
    if min_age > max_age:
        raise ValueError(f"min_age {min_age} is above max_age {max_age}")
    mask = frame["age"].between(min_age, max_age)
    gender_codes = _codes(genders, GENDERS, "gender")
    race_codes = _codes(races, RACES, "race")
    if gender_codes is not None:
        mask &= frame["gender"].isin(gender_codes)
    if race_codes is not None:
        mask &= frame["race"].isin(race_codes)
    return frame[mask]


def _strata(frame: pd.DataFrame) -> pd.Series:
    age_bin = pd.cut(frame["age"], bins=[-1, 19, 29, 39, 49, 59, 200], labels=False)
    key = frame["gender"].astype(str) + "_" + frame["race"].astype(str) + "_" + age_bin.astype(str)
    # Strata too small to split fall back to gender only.
    counts = key.map(key.value_counts())
    return key.where(counts >= 10, frame["gender"].astype(str))


def _split(index: np.ndarray, frame: pd.DataFrame, fraction: float, seed: int, stratify: bool):
    # Imported here: scikit-learn costs the Explore page about 0.8 s of a cold start, and it only filters.
    from sklearn.model_selection import train_test_split

    strata = _strata(frame.loc[index]) if stratify else None
    try:
        return train_test_split(index, test_size=fraction, random_state=seed, stratify=strata)
    except ValueError:
        if strata is None:
            raise
        # A part too small to hold one row per stratum (tiny sets): a seeded random split instead.
        return train_test_split(index, test_size=fraction, random_state=seed)


def split_frame(frame: pd.DataFrame, seed: int = 0, method: str = "tutorial") -> pd.Series:
    """Split rows into train/valid/test.

    ``tutorial``: 70/30 into (train+valid)/test, then 70/30 into train/valid, at random as the tutorial does
    (49/21/30). ``stratified``: the same proportions keeping the gender x race x age-band mix equal across the
    parts. ``select`` and ``final``: the same stratified 85/5/10 partition (identical rows for a seed); ``select``
    trains on train and picks settings on valid, ``final`` then trains on train + valid (see ``TRAINS_ON_VALID``).
    Test rows are never trained on. The same frame, seed and method always give the same split.
    """
    if method not in SPLIT_METHODS:
        raise ValueError(f"unknown split method {method!r}; choose one of {', '.join(SPLIT_METHODS)}")
    if len(frame) < 10:
        raise ValueError(f"only {len(frame)} images: a split needs at least 10; widen the filters")
    index = np.asarray(frame.index)
    stratify = method != "tutorial"
    test_fraction, valid_of_rest = SPLIT_FRACTIONS[method]
    rest, test = _split(index, frame, test_fraction, seed, stratify)
    train, valid = _split(rest, frame, valid_of_rest, seed, stratify)
    split = pd.Series("train", index=frame.index, dtype=object, name="split")
    split.loc[valid] = "valid"
    split.loc[test] = "test"
    return split
