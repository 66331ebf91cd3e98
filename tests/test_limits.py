"""The documented resource limits and the training caps enforced in the core (issue 8)."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from tests.conftest import REPO
from utkface_core import limits
from utkface_core.config import TrainConfig
from utkface_core.limits import LimitError, clamp_train_config, job_quota_problem


def test_defaults_match_the_issue():
    assert limits.get("max_image_pixels") == 40_000_000
    assert limits.get("predict_cache_mb") == 256
    assert limits.get("max_archive_bytes") == 2 * 1024**3
    assert limits.get("max_compression_ratio") == 100
    assert limits.get("app_data_budget_mb") == 5 * 1024
    assert limits.get("max_train_min_public") == 5


def test_each_limit_is_overridable_by_its_variable(monkeypatch):
    for limit in limits.LIMITS.values():
        value = int(limit.minimum) + 70
        monkeypatch.setenv(limit.env, str(value))
        assert limits.get(limit.name) == value


@pytest.mark.parametrize("raw", ["lots", "-1", "nan", "0"])
def test_bad_override_is_reported_with_its_variable(monkeypatch, raw):
    monkeypatch.setenv("UTKFACE_MAX_IMAGE_PIXELS", raw)
    with pytest.raises(LimitError, match="UTKFACE_MAX_IMAGE_PIXELS"):
        limits.get("max_image_pixels")


def test_unknown_limit_raises():
    with pytest.raises(KeyError):
        limits.get("max_fun")


def test_security_doc_lists_every_limit():
    doc = (REPO / "docs" / "SECURITY.md").read_text(encoding="utf-8")
    missing = [limit.env for limit in limits.LIMITS.values() if limit.env not in doc]
    assert not missing, f"docs/SECURITY.md does not document {missing}"


def test_describe_shows_current_values(monkeypatch):
    monkeypatch.setenv("UTKFACE_PREDICT_CACHE_MB", "64")
    row = next(r for r in limits.describe() if r["name"] == "predict_cache_mb")
    assert row["current"] == 64 and row["default"] == 256 and row["env"] == "UTKFACE_PREDICT_CACHE_MB"


# --- training --------------------------------------------------------------------------------------


def test_public_mode_clamps_a_100000_minute_training():
    config, notes = clamp_train_config(TrainConfig(time_budget_s=100_000 * 60.0), "public")
    assert config.time_budget_s == 5 * 60
    assert any("5 minutes" in note for note in notes)
    config.validate()


def test_public_mode_gives_every_run_a_budget():
    config, notes = clamp_train_config(TrainConfig(epochs=200, time_budget_s=None), "public")
    assert config.time_budget_s == 5 * 60 and notes


def test_operator_can_change_the_public_minutes(monkeypatch):
    monkeypatch.setenv("UTKFACE_MAX_TRAIN_MIN", "2.5")
    config, _ = clamp_train_config(TrainConfig(time_budget_s=3600.0), "public")
    assert config.time_budget_s == 150.0


def test_private_mode_keeps_a_reasonable_run_and_clamps_absurd_values():
    ok = TrainConfig(time_budget_s=600.0, epochs=30, image_size=64, batch_size=64)
    assert clamp_train_config(ok, "private") == (ok, [])
    huge = TrainConfig(time_budget_s=1e12, epochs=10**6, image_size=4096, batch_size=100_000)
    config, notes = clamp_train_config(huge, "private")
    assert config.time_budget_s == 24 * 3600
    assert (config.epochs, config.image_size, config.batch_size) == (500, 256, 512)
    assert len(notes) == 4
    config.validate()


def test_tiny_image_and_batch_sizes_are_raised():
    config, _ = clamp_train_config(TrainConfig(image_size=2, batch_size=0), "private")
    assert (config.image_size, config.batch_size) == (16, 1)


def test_clamp_rejects_non_configs():
    with pytest.raises(TypeError):
        clamp_train_config({"epochs": 3}, "public")
    with pytest.raises(ValueError):
        clamp_train_config(TrainConfig(), "open")


def job(owner, active=True):
    return SimpleNamespace(owner=owner, active=active)


def test_one_job_per_visitor_in_public_mode():
    assert job_quota_problem("a", [job("b"), job("a", active=False)], "public") is None
    message = job_quota_problem("a", [job("a")], "public")
    assert message and re.search(r"limit per visitor is 1", message)


def test_global_job_cap_in_public_mode(monkeypatch):
    monkeypatch.setenv("UTKFACE_MAX_ACTIVE_JOBS", "2")
    assert "shared server" in job_quota_problem("c", [job("a"), job("b")], "public")
    assert job_quota_problem("c", [job("a"), job("b")], "private") is None
