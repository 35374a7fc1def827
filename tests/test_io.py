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
