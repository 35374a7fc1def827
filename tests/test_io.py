"""kerascnn.io: an interrupted or failed save keeps the old file."""

import os

import pytest

from kerascnn import io


def test_interrupted_save_keeps_the_old_file(tmp_path):
    target = tmp_path / "m.keras"
    target.write_bytes(b"old model")

    class Failing:
        def save(self, path):
            with open(path, "wb") as f:
                f.write(b"half")
            raise OSError("disk full")

    with pytest.raises(OSError):
        io.save_model(Failing(), target)
    assert target.read_bytes() == b"old model"
    assert os.listdir(tmp_path) == ["m.keras"]


def test_atomic_save_keeps_the_old_file_when_saving_fails(tmp_path):
    import keras

    from kerascnn.models import build_model

    model = build_model("lenet", input_shape=(28, 28, 1), num_classes=10)
    path = tmp_path / "m.keras"
    io.save_model(model, path, state={"epoch": 1})
    before = path.read_bytes()

    class Broken(keras.Model):
        def save(self, filepath, **kwargs):
            with open(filepath, "wb") as f:
                f.write(b"half a zip")
            raise OSError("disk full")

    with pytest.raises(OSError):
        io.save_model(Broken(), path, state={"epoch": 2})
    assert path.read_bytes() == before
    assert io.read_state(path) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.keras"]


def test_a_save_flushes_the_file_before_renaming_it(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append("fsync") or real_fsync(fd))
    monkeypatch.setattr(os, "replace", lambda a, b: calls.append("replace") or real_replace(a, b))
    io.write_json(tmp_path / "r.json", {"k": 1})
    assert calls == ["fsync", "replace"]


def test_the_next_save_removes_what_a_killed_save_left_but_not_a_save_under_way(tmp_path):
    fcntl = pytest.importorskip("fcntl")
    left = tmp_path / ".r.json.abcd1234.tmp"  # by a killed process: nobody holds it
    left.write_text('{"k": ')
    busy = tmp_path / ".r.json.efgh5678.tmp"  # by a save under way, which holds it locked
    busy.write_text('{"k": 2')
    with open(busy) as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        io.write_json(tmp_path / "r.json", {"k": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == [busy.name, "r.json"]
    assert io.read_json(tmp_path / "r.json") == {"k": 1}


def test_a_process_killed_while_saving_leaves_the_old_file_or_the_new_one(tmp_path):
    """benchmarks/kill_during_save.py with 10 kills (its campaign runs hundreds)."""
    import json
    import subprocess
    import sys

    from tests.conftest import REPO

    pytest.importorskip("fcntl")  # the campaign forks its savers
    report = tmp_path / "report.json"
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "kill_during_save.py"), "--kills", "10",
                             "--seed", "0", "--output", str(report)], capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    summary = json.loads(report.read_text())
    assert summary["kills"] == 10 and summary["kills_during_a_save"] >= 5
    assert summary["broken_files"] == 0
    assert summary["loader_picked_a_temp_file"] == 0 and summary["temp_files_after_the_next_save"] == 0
