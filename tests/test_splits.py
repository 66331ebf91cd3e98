import numpy as np
import pandas as pd
import pytest

from utkface_core.data.splits import filter_frame, split_frame


@pytest.fixture
def frame():
    rng = np.random.default_rng(0)
    n = 1000
    return pd.DataFrame(
        {
            "path": [f"/x/{i}.jpg" for i in range(n)],
            "file": [f"{i}.jpg" for i in range(n)],
            "age": rng.integers(1, 100, n),
            "gender": rng.integers(0, 2, n),
            "race": rng.choice(5, n, p=[0.45, 0.2, 0.15, 0.15, 0.05]),
        }
    )


def test_filter_by_age_gender_and_race(frame):
    out = filter_frame(frame, 10, 65, genders=["female"], races=[0, "Asian"])
    assert out["age"].between(10, 65).all()
    assert set(out["gender"]) == {1}
    assert set(out["race"]) <= {0, 2}


def test_filter_rejects_unknown_names_and_inverted_range(frame):
    with pytest.raises(ValueError, match="unknown race"):
        filter_frame(frame, races=["Martian"])
    with pytest.raises(ValueError, match="above max_age"):
        filter_frame(frame, 60, 10)


def test_tutorial_split_is_70_30_then_70_30(frame):
    counts = split_frame(frame, seed=1).value_counts()
    assert counts["test"] == 300
    assert counts["valid"] == 210
    assert counts["train"] == 490


def test_split_is_reproducible_by_seed(frame):
    assert split_frame(frame, seed=3).equals(split_frame(frame, seed=3))
    assert not split_frame(frame, seed=3).equals(split_frame(frame, seed=4))


def test_stratified_split_keeps_the_race_mix(frame):
    split = split_frame(frame, seed=0, method="stratified")
    overall = frame["race"].value_counts(normalize=True)
    test_mix = frame[split == "test"]["race"].value_counts(normalize=True)
    assert (test_mix - overall).abs().max() < 0.02


def test_final_split_is_stratified_85_5_10_and_the_same_partition_as_select(frame):
    final = split_frame(frame, seed=2, method="final")
    counts = final.value_counts()
    assert (counts["train"], counts["valid"], counts["test"]) == (850, 50, 100)
    assert final.equals(split_frame(frame, seed=2, method="select"))
    overall = frame["race"].value_counts(normalize=True)
    test_mix = frame[final == "test"]["race"].value_counts(normalize=True)
    assert (test_mix - overall).abs().max() < 0.03
    assert not final.equals(split_frame(frame, seed=3, method="final"))


def test_tutorial_split_is_unchanged_by_the_new_methods(frame):
    # The tutorial split reproduces earlier runs: the same rows as 70/30 then 70/30 with sklearn directly.
    from sklearn.model_selection import train_test_split

    rest, test = train_test_split(np.asarray(frame.index), test_size=0.3, random_state=4)
    train, valid = train_test_split(rest, test_size=0.3, random_state=4)
    split = split_frame(frame, seed=4)
    assert set(split[split == "test"].index) == set(test)
    assert set(split[split == "valid"].index) == set(valid)


def test_final_split_of_a_tiny_frame_still_has_every_part(frame):
    split = split_frame(frame.head(12), seed=0, method="final")
    assert set(split) == {"train", "valid", "test"}


def test_split_rejects_unknown_method_and_tiny_frames(frame):
    with pytest.raises(ValueError, match="unknown split method"):
        split_frame(frame, method="random")
    with pytest.raises(ValueError, match="at least 10"):
        split_frame(frame.head(5))
