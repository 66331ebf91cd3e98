"""Run directories: creation, atomic JSON, status, robust listing, deletion, history."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from utkface_core import runs
from utkface_core.runs import RunError, create_run_dir, delete_run, list_runs, load_run, read_history, write_status


@pytest.fixture()
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("UTKFACE_APP_DIR", str(tmp_path / "app"))
    monkeypatch.setenv("UTKFACE_RUNS_DIR", str(tmp_path / "runs"))
    return tmp_path / "runs"


def _finished_run(root, name: str, state: str = "completed"):
    run = create_run_dir(root, name)
    runs.write_json_atomic(run / "config.json", {"preset": "fast", "image_size": 64})
    runs.write_json_atomic(run / "metrics.json", {"age_mae": 6.1, "n": 10})
    write_status(run, state, "done")
    return run


def test_create_run_dir_is_unique_and_under_the_runs_root(root):
    first = create_run_dir(name="my run/../x")
    second = create_run_dir(name="my run/../x")
    assert first != second and first.parent == second.parent == root.resolve()
    assert first.name.endswith("-my-run-x")
    with pytest.raises(RunError, match="no usable characters"):
        create_run_dir(name="///")


def test_write_json_atomic_leaves_no_temporary_file(tmp_path):
    path = runs.write_json_atomic(tmp_path / "x.json", {"a": 1, "b": [1.5]})
    assert json.loads(path.read_text()) == {"a": 1, "b": [1.5]}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_write_status_records_process_and_rejects_unknown_states(root):
    run = create_run_dir()
    status = write_status(run, "running", "epoch 1")
    assert status["pid"] == os.getpid() and status["host"]
    with pytest.raises(RunError, match="unknown run state"):
        write_status(run, "paused")


def test_list_runs_reports_finished_runs_with_metrics(root):
    _finished_run(root, "good")
    (info,) = list_runs()
    assert info.state == "completed" and info.metrics["age_mae"] == 6.1
    assert info.config["preset"] == "fast" and info.error is None


@pytest.mark.parametrize(
    "damage",
    [
        lambda run: (run / "config.json").write_text("{not json"),
        lambda run: (run / "status.json").write_text(""),
        lambda run: (run / "status.json").unlink(),
        lambda run: (run / "config.json").write_bytes(b"\xff\xfe\x00"),
        lambda run: (run / "status.json").write_text('{"state": "dancing"}'),
    ],
)
def test_damaged_runs_are_listed_as_broken_not_raised(root, damage):
    run = _finished_run(root, "bad")
    damage(run)
    (info,) = list_runs()
    assert info.state == "broken"
    assert info.error and ("config.json" in info.error or "status.json" in info.error)


def test_failed_run_lists_its_message(root):
    run = _finished_run(root, "nan", state="failed")
    write_status(run, "failed", "training diverged: loss=nan")
    (info,) = list_runs()
    assert info.state == "failed" and "diverged" in info.error


def test_running_run_whose_process_is_gone_is_interrupted(root):
    run = _finished_run(root, "crashed", state="running")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    status = json.loads((run / "status.json").read_text())
    status["pid"] = int(dead.stdout)
    runs.write_json_atomic(run / "status.json", status)
    assert load_run(run).state == "interrupted"


def test_running_run_of_a_live_process_stays_running(root):
    run = _finished_run(root, "live", state="running")
    assert load_run(run).state == "running"


def test_delete_run_removes_a_run_and_refuses_paths_outside_the_root(root, tmp_path):
    run = _finished_run(root, "old")
    outside = tmp_path / "precious"
    outside.mkdir()
    with pytest.raises(RunError, match="refusing"):
        delete_run(outside)
    with pytest.raises(RunError, match="refusing"):
        delete_run(run / ".." / "..")
    with pytest.raises(RunError, match="refusing"):
        delete_run(root)
    delete_run(run)
    assert not run.exists() and outside.exists()
    assert list_runs() == []


def test_read_history_returns_a_frame_or_empty(root):
    run = _finished_run(root, "h")
    assert read_history(run).empty
    pd.DataFrame({"epoch": [1, 2], "loss": [1.0, 0.5]}).to_csv(run / "history.csv", index=False)
    assert list(read_history(run)["loss"]) == [1.0, 0.5]
    (run / "history.csv").write_bytes(b'\x00\x01garbage\n"unterminated')
    assert isinstance(read_history(run), pd.DataFrame)


def test_delete_run_moves_it_to_the_trash_which_is_emptied_after_a_day(root):
    run = _finished_run(root, "old")
    trashed = delete_run(run)
    assert not run.exists() and trashed.is_dir() and (trashed / "config.json").exists()
    assert trashed.parent == root.resolve() / runs.TRASH_DIR
    assert runs.sweep_trash(root) == 0  # kept for now
    assert runs.sweep_trash(root, now=trashed.stat().st_mtime + runs.TRASH_KEEP_S + 1) == 1
    assert not trashed.exists()


def test_stale_temporary_files_and_half_made_folders_are_swept(root):
    run = _finished_run(root, "r")
    stale_file = run / ".model.tmp-123-456.keras"
    stale_file.write_bytes(b"half a model")
    stale_dir = root / ".tmp-20260101-000000-99-abcd"
    stale_dir.mkdir()
    fresh = run / ".history.csv.tmp-1"
    fresh.write_text("in use")
    old = stale_file.stat().st_mtime - runs.TEMP_KEEP_S - 10
    os.utime(stale_file, (old, old))
    os.utime(stale_dir, (old, old))
    assert runs.sweep_temp(root) == 2
    assert not stale_file.exists() and not stale_dir.exists() and fresh.exists()
    assert (run / "config.json").exists()


def test_create_job_dir_appears_with_its_files(root):
    run = runs.create_job_dir(root, "job", {"config.json": {"preset": "fast"}, "status.json": {"state": "preparing"}})
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "status.json"]
    assert not list(root.glob(".tmp-*"))
    assert load_run(run).state in ("preparing", "interrupted")


def test_a_folder_being_set_up_is_preparing_not_broken(root):
    run = create_run_dir(root, "new")
    assert load_run(run).state == "preparing" and load_run(run).error is None


def test_a_running_run_with_a_stale_heartbeat_is_interrupted(root):
    run = _finished_run(root, "frozen", state="running")
    status = json.loads((run / "status.json").read_text())
    status["heartbeat"] -= runs.HEARTBEAT_STALE_S + 5
    runs.write_json_atomic(run / "status.json", status)
    assert load_run(run).state == "interrupted"


@pytest.mark.parametrize(
    "recorded, asking, admin, allowed",
    [
        ("tok-a", "tok-a", False, True),
        ("tok-a", "tok-b", False, False),
        ("tok-a", None, False, False),
        (None, "tok-a", False, False),
        (None, None, True, True),
        ("tok-a", "tok-b", True, True),
    ],
)
def test_can_control_only_the_owner_or_an_admin(recorded, asking, admin, allowed):
    assert runs.can_control({"owner": recorded}, asking, admin) is allowed
    assert (
        runs.can_control(
            runs.RunInfo(path=None, name="r", state="running", created=None, owner=recorded), asking, admin
        )
        is allowed
    )


def test_events_are_appended_and_read_incrementally(tmp_path):
    runs.append_event(tmp_path, {"kind": "epoch", "epoch": 0})
    events, offset = runs.read_events(tmp_path)
    assert [e["kind"] for e in events] == ["epoch"] and "t" in events[0]
    with open(tmp_path / runs.EVENTS_FILE, "a") as handle:
        handle.write('{"kind": "half')  # a line being written right now
    assert runs.read_events(tmp_path, offset) == ([], offset)
    with open(tmp_path / runs.EVENTS_FILE, "a") as handle:
        handle.write(' written"}\nnot json\n')
    events, _ = runs.read_events(tmp_path, offset)
    assert [e["kind"] for e in events] == ["half written"]


def test_run_file_paths_come_from_the_run_folder(root):
    run = _finished_run(root, "r")
    info = load_run(run)
    assert info.model_path == runs.model_path(run) == run / runs.MODEL_FILE
    assert info.split_path == runs.split_path(run) == run / runs.SPLIT_FILE
    assert info.model_mtime_ns() == 0 and not info.has_model
    info.model_path.write_bytes(b"model")
    assert info.model_mtime_ns() == info.model_path.stat().st_mtime_ns > 0


def test_read_config_returns_it_and_names_what_is_wrong(root, tmp_path):
    run = _finished_run(root, "r")
    assert runs.read_config(run, require=("image_size",))["image_size"] == 64
    with pytest.raises(RunError, match="not a training run folder: config.json is missing"):
        runs.read_config(tmp_path / "nowhere")
    with pytest.raises(RunError, match="has no 'seed'.*retrain"):
        runs.read_config(run, require=("seed",))
    runs.config_path(run).write_text("{not json")
    with pytest.raises(RunError, match="cannot read .*config.json.*damaged"):
        runs.read_config(run)
    runs.config_path(run).write_text("[1, 2]")
    with pytest.raises(RunError, match="must hold a JSON object"):
        runs.read_config(run)


def test_read_metrics_is_none_when_missing_or_damaged(root):
    run = _finished_run(root, "r")
    assert runs.read_metrics(run) == {"age_mae": 6.1, "n": 10}
    (run / runs.METRICS_FILE).write_text("{half")
    assert runs.read_metrics(run) is None
    (run / runs.METRICS_FILE).unlink()
    assert runs.read_metrics(run) is None


def test_read_split_checks_the_file_and_its_columns(root):
    run = _finished_run(root, "r")
    with pytest.raises(RunError, match="split.csv is missing"):
        runs.read_split(run)
    runs.split_path(run).write_text("path,age,split\na.jpg,30,test\n")
    assert runs.read_split(run, columns=("path", "split"))["split"].tolist() == ["test"]
    with pytest.raises(RunError, match=r"lacks column\(s\) \['race'\]"):
        runs.read_split(run, columns=("path", "race"))
    runs.split_path(run).write_bytes(b"")
    with pytest.raises(RunError, match="cannot read .*damaged"):
        runs.read_split(run)
