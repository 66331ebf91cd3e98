import pytest

from utkface_core.data.names import NameRejected, parse_name


def test_strict_name_parses_without_warning():
    parsed = parse_name("25_1_3_20170116174525125.jpg.chip.jpg")
    assert (parsed.age, parsed.gender, parsed.race, parsed.warning) == (25, 1, 3, None)


@pytest.mark.parametrize(
    "name, warning",
    [
        ("28_1_2_201701161846515488.jpg.chip.jpg", "18-digit time stamp"),
        ("28_1_2_2017011618465154.jpg.chip.jpg", "16-digit time stamp"),
        ("24_0_1_20170116220224657 .jpg.chip.jpg", "space before '.jpg'"),
        ("55_0_0_20170116232725357jpg.chip.jpg", "no dot before 'jpg'"),
    ],
)
def test_known_defects_are_recovered_with_a_warning(name, warning):
    parsed = parse_name(name)
    assert warning in parsed.warning
    assert 0 <= parsed.race <= 4


def test_recovered_labels_are_the_named_ones():
    parsed = parse_name("55_0_0_20170116232725357jpg.chip.jpg")
    assert (parsed.age, parsed.gender, parsed.race) == (55, 0, 0)


def test_missing_race_field_is_rejected():
    with pytest.raises(NameRejected, match="no race field"):
        parse_name("39_1_20170116174525125.jpg.chip.jpg")


@pytest.mark.parametrize(
    "name, reason",
    [
        ("25_2_0_20170116174525125.jpg.chip.jpg", "gender 2"),
        ("25_0_7_20170116174525125.jpg.chip.jpg", "race 7"),
        ("150_0_0_20170116174525125.jpg.chip.jpg", "age 150"),
        ("holiday.jpg", "does not follow"),
        ("25_0_0_1.jpg.chip.jpg", "time stamp has 1 digits"),
    ],
)
def test_unusable_names_are_rejected_with_a_reason(name, reason):
    with pytest.raises(NameRejected, match=reason):
        parse_name(name)
