"""UTKFace file-name parsing: the strict pattern plus lenient recovery of the set's known defects."""

from __future__ import annotations

import re
from dataclasses import dataclass

from utkface_core.labels import GENDERS, MAX_AGE, RACES

STRICT = re.compile(r"^(\d{1,3})_([01])_([0-4])_(\d{17})\.jpg\.chip\.jpg$")
# Captures every numeric field and the separator before "jpg", so each known defect can be named.
LENIENT = re.compile(r"^(?P<fields>\d+(?:_\d+)*)(?P<space>\s*)(?P<dot>\.?)jpg\.chip\.jpg$", re.IGNORECASE)
# The in-the-wild part of the set and some mirrors drop ".chip.jpg".
PLAIN = re.compile(r"^(?P<fields>\d+(?:_\d+)*)(?P<space>\s*)(?P<dot>\.)(?:jpe?g|png)$", re.IGNORECASE)
EXPECTED = "[age]_[gender]_[race]_[yyyymmddHHMMSSFFF].jpg.chip.jpg"


@dataclass(frozen=True)
class ParsedName:
    """Labels read from a file name, with a warning when a known defect was recovered."""

    age: int
    gender: int
    race: int
    timestamp: str
    warning: str | None = None


class NameRejected(ValueError):
    """A file name that cannot give all three labels, or gives out-of-range ones."""


def parse_name(name: str) -> ParsedName:
    """Parse a UTKFace file name; raise NameRejected with the reason when it cannot be used."""
    match = STRICT.match(name)
    if match:
        age, gender, race, stamp = match.groups()
        return _checked(int(age), int(gender), int(race), stamp, None)
    match = LENIENT.match(name) or PLAIN.match(name)
    if not match:
        raise NameRejected(f"name does not follow {EXPECTED}")
    fields = match["fields"].split("_")
    problems: list[str] = []
    if len(fields) == 3 and len(fields[2]) >= 14:
        raise NameRejected("no race field: only age, gender and time stamp are present")
    if len(fields) != 4:
        raise NameRejected(f"{len(fields)} numeric fields instead of 4 ({EXPECTED})")
    age, gender, race, stamp = fields
    if len(stamp) != 17:
        if not 14 <= len(stamp) <= 19:
            raise NameRejected(f"time stamp has {len(stamp)} digits; expected 17")
        problems.append(f"{len(stamp)}-digit time stamp (expected 17)")
    if match["space"]:
        problems.append("space before '.jpg'")
    if not match["dot"]:
        problems.append("no dot before 'jpg'")
    if match.re is PLAIN:
        pass  # a plain .jpg name is a known, harmless variant: no warning
    elif name != name.lower() and not problems:
        problems.append("upper-case extension")
    return _checked(int(age), int(gender), int(race), stamp, "; ".join(problems) or None)


def _checked(age: int, gender: int, race: int, stamp: str, warning: str | None) -> ParsedName:
    if not 0 <= age <= MAX_AGE:
        raise NameRejected(f"age {age} is outside 0-{MAX_AGE}")
    if gender >= len(GENDERS):
        raise NameRejected(f"gender {gender} is not 0 (male) or 1 (female)")
    if race >= len(RACES):
        raise NameRejected(f"race {race} is not one of 0-4 ({', '.join(RACES)})")
    return ParsedName(age, gender, race, stamp, warning)
