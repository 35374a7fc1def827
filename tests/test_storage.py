"""kerascnn.runs.storage: an interrupted or failed save keeps the old file; a bad
model file gets one clear error, and loading runs no code from it."""

import importlib.util
import json
import os
import zipfile
from pathlib import Path

import pytest

from kerascnn.runs import storage
from kerascnn.errors import KerasCNNError
from tests.conftest import REPO


def test_interrupted_save_keeps_the_old_file(tmp_path):
    target = tmp_path / "m.keras"
    target.write_bytes(b"old model")

    class Failing:
        def save(self, path):
            with open(path, "wb") as f:
                f.write(b"half")
            raise OSError("disk full")

    with pytest.raises(OSError):
        storage.save_model(Failing(), target)
    assert target.read_bytes() == b"old model"
    assert os.listdir(tmp_path) == ["m.keras"]


def test_atomic_save_keeps_the_old_file_when_saving_fails(tmp_path):
    import keras

    from kerascnn.models import build_model

    model = build_model("lenet", input_shape=(28, 28, 1), num_classes=10)
    path = tmp_path / "m.keras"
    storage.save_model(model, path, state={"epoch": 1})
    before = path.read_bytes()

    class Broken(keras.Model):
        def save(self, filepath, **kwargs):
            with open(filepath, "wb") as f:
                f.write(b"half a zip")
            raise OSError("disk full")

    with pytest.raises(OSError):
        storage.save_model(Broken(), path, state={"epoch": 2})
    assert path.read_bytes() == before
    assert storage.read_state(path) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.keras"]


# --- loading a .keras file safely: every bad file gets one KerasCNNError

def rezip(src, dst, change=None, drop=()):
    """Copy the archive `src` to `dst`, entries changed (change(name, data) -> data) or dropped; CRCs valid."""
    with zipfile.ZipFile(src) as z, zipfile.ZipFile(dst, "w") as out:
        for info in z.infolist():
            if info.filename not in drop:
                data = z.read(info.filename)
                out.writestr(info, change(info.filename, data) if change else data)
    return Path(dst)


def edit_config(src, dst, edit):
    """Copy a .keras file with its config.json changed in place by edit(config)."""
    def change(name, data):
        if name != "config.json":
            return data
        config = json.loads(data)
        edit(config)
        return json.dumps(config).encode()
    return rezip(src, dst, change)


def make_bad_models(folder):
    """{kind: path} of the model files a user may be handed, made here with Keras."""
    import keras

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    inputs = keras.Input((4,))
    good = folder / "good.keras"
    keras.Model(inputs, keras.layers.Dense(2, name="dense")(inputs)).save(good)
    keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2, name="double")(inputs)).save(folder / "lambda.keras")

    class Unregistered(keras.layers.Layer):
        def call(self, x):
            return x * 2

    keras.Model(inputs, Unregistered()(inputs)).save(folder / "unregistered.keras")
    data = good.read_bytes()
    (folder / "empty").mkdir(exist_ok=True)
    (folder / "page.keras").write_bytes(b"<html>404 not found</html>")
    (folder / "empty.keras").write_bytes(b"")
    (folder / "truncated.keras").write_bytes(data[: len(data) // 2])
    damaged = bytearray(data)
    damaged[data.find(storage.HDF5_SIGNATURE) + 200] ^= 0xFF  # inside the stored weights
    (folder / "crc.keras").write_bytes(bytes(damaged))
    rezip(good, folder / "noweights.keras", drop=("model.weights.h5",))
    rezip(good, folder / "badjson.keras", lambda n, d: b'{"class_name": ' if n == "config.json" else d)
    rezip(good, folder / "nothdf5.keras", lambda n, d: b"\0" * len(d) if n == "model.weights.h5" else d)
    return {kind: folder / name for kind, name in (
        ("missing", "nowhere.keras"), ("folder", "empty"), ("not a zip", "page.keras"), ("empty", "empty.keras"),
        ("truncated", "truncated.keras"), ("bad crc", "crc.keras"), ("no weights", "noweights.keras"),
        ("config not json", "badjson.keras"), ("weights not hdf5", "nothdf5.keras"), ("lambda", "lambda.keras"),
        ("unregistered", "unregistered.keras"), ("good", "good.keras"))}


# What the user reads for each, after the path (the CLI says --unsafe where Python says unsafe=True).
BAD_MODEL_MESSAGES = {
    "missing": "no model file at {path}",
    "folder": "{path} is a folder, not a model file; it holds no .keras model",
    "not a zip": "{path} is not a Keras model file: a .keras file is a zip archive, this is not one",
    "empty": "{path} is empty; save or copy the model again",
    "truncated": "{path} is truncated or damaged: a zip archive whose end is missing or broken; "
                 "save or copy the model again",
    "bad crc": "{path} is not a usable Keras model: its entry model.weights.h5 is corrupt (its CRC does not "
               "match); save or copy it again",
    "no weights": "{path} is not a usable Keras model: it lacks model.weights.h5; save or copy it again",
    "config not json": "{path} is not a usable Keras model: its config.json is not valid JSON",
    "weights not hdf5": "{path} is not a usable Keras model: its model.weights.h5 is not an HDF5 file; "
                        "save or copy it again",
    "lambda": "{path} holds Python code (Lambda layer 'double'), which safe loading never runs; "
              "if you trust the file, load it with {unsafe}",
    "unregistered": "{path} needs the class 'Unregistered' (from tests.test_storage), which is neither part of Keras "
                    "nor registered: it was saved with custom code, which must be imported",
}


@pytest.fixture(scope="module")
def bad_models(tmp_path_factory):
    return make_bad_models(tmp_path_factory.mktemp("models"))


@pytest.mark.parametrize("kind", BAD_MODEL_MESSAGES)
def test_each_bad_model_file_gets_its_message(bad_models, kind):
    path = bad_models[kind]
    with pytest.raises(KerasCNNError) as caught:
        storage.load_model(path)
    assert str(caught.value).startswith(BAD_MODEL_MESSAGES[kind].format(path=path, unsafe="unsafe=True"))


def test_unsafe_is_the_one_way_to_load_a_lambda(bad_models):
    import numpy as np

    model = storage.load_model(bad_models["lambda"], unsafe=True)
    assert np.allclose(model.predict(np.ones((1, 4)), verbose=0), 2)
    with pytest.raises(KerasCNNError, match="needs the class 'Unregistered'"):
        storage.load_model(bad_models["unregistered"], unsafe=True)  # the same answer either way
    assert storage.load_model(bad_models["good"]).get_layer("dense").units == 2


def test_a_zip_bomb_is_refused_before_anything_unpacks(bad_models, tmp_path, monkeypatch):
    bomb = tmp_path / "bomb.keras"
    rezip(bad_models["good"], bomb)
    with zipfile.ZipFile(bomb, "a", zipfile.ZIP_DEFLATED) as z:
        z.writestr("assets/zeros", b"\0" * 20_000_000)  # 20 MB in 20 kB
    assert bomb.stat().st_size < 300_000
    monkeypatch.setattr(storage, "MAX_MODEL_BYTES", 10_000_000)
    with pytest.raises(KerasCNNError, match=r"it would unpack to 20.\d MB, more than the 10.0 MB any model here "
                                            r"needs \(a zip bomb\?\)"):
        storage.check_archive(bomb)


def test_a_config_asking_for_more_weights_than_the_file_holds_is_refused_before_keras_allocates(
        bad_models, tmp_path):
    from keras.src.backend.common import global_state

    def huge(config):  # (4 + 1) x 10^8 float32 weights and biases: 2 GB, in a file of a few kB
        config["config"]["layers"][1]["config"]["units"] = 10 ** 8
    path = edit_config(bad_models["good"], tmp_path / "huge.keras", huge)
    with pytest.raises(KerasCNNError, match=r"huge.keras is not a usable Keras model: its config.json asks for "
                                            r"2.0 GB of weights, its model.weights.h5 holds \d+.\d kB"):
        storage.load_model(path)
    assert not global_state.get_global_attribute("uninitialized_variables")  # nothing left for Keras to create


def lambda_gadget(function, arguments):
    """A config edit adding a Lambda layer that calls the Keras function
    `function` ("module.name") with `arguments` as the model loads: the
    gadget of CVE-2025-8747 (keras.utils.get_file) and CVE-2025-9906
    (keras.config.enable_unsafe_deserialization), which Keras 3.11 refuses."""
    module, name = function.rsplit(".", 1)

    def edit(config):
        config["config"]["layers"].insert(1, {
            "module": "keras.layers", "class_name": "Lambda", "registered_name": None, "name": "gadget",
            "config": {"name": "gadget", "arguments": arguments,
                       "function": {"module": module, "class_name": "function", "config": name,
                                    "registered_name": "function"}},
            "build_config": {"input_shape": [None, 1]},
            "inbound_nodes": [{"args": [], "kwargs": {"inputs": "payload.txt"}}]})
    return edit


def test_files_crafted_to_bypass_safe_mode_are_refused_and_run_nothing(bad_models, tmp_path, monkeypatch):
    from keras.src.saving import serialization_lib

    payload, cache = tmp_path / "payload.txt", tmp_path / "cache"
    payload.write_text("downloaded")
    cache.mkdir()
    download = lambda_gadget("keras.utils.get_file", {"origin": payload.as_uri(), "cache_dir": str(cache)})
    crafted = edit_config(bad_models["good"], tmp_path / "getfile.keras", download)
    with pytest.raises(KerasCNNError, match=r"holds Python code \(Lambda layer 'gadget'\)"):
        storage.load_model(crafted)
    with pytest.raises(KerasCNNError, match="asks to call keras.utils.get_file while loading, which no model needs"):
        storage.load_model(crafted, unsafe=True)  # even then: Keras 3.11 refuses the call
    unsafe = edit_config(bad_models["good"], tmp_path / "unsafe.keras",
                         lambda_gadget("keras.config.enable_unsafe_deserialization", {}))
    with pytest.raises(KerasCNNError, match="asks to call keras.config.enable_unsafe_deserialization"):
        storage.load_model(unsafe, unsafe=True)

    def foreign(config):  # CVE-2025-1550: a class from any module
        config["config"]["layers"][1].update(module="subprocess", class_name="Popen")
    with pytest.raises(KerasCNNError, match=r"needs the class 'Popen' \(from subprocess\), which is neither"):
        storage.load_model(edit_config(bad_models["good"], tmp_path / "foreign.keras", foreign), unsafe=True)
    assert not list(cache.rglob("*"))

    # A Keras without the fix is refused before it reads the file...
    monkeypatch.setattr("keras.__version__", "3.10.0")
    with pytest.raises(KerasCNNError, match=r"Keras 3.10.0 is installed, but loading a model file safely needs "
                                            r"Keras 3.11 or later: .*CVE-2025-1550, CVE-2025-8747, CVE-2025-9906"):
        storage.load_model(crafted, unsafe=True)
    assert not list(cache.rglob("*"))
    # ...for good reason: without the fix, this file downloads.
    monkeypatch.undo()
    monkeypatch.setattr(serialization_lib, "NON_MODELING_APIS", frozenset())
    storage.load_model(crafted, unsafe=True)
    assert (cache / "datasets" / "payload.txt").read_text() == "downloaded"


def fuzz_loaders():
    spec = importlib.util.spec_from_file_location("fuzz_loaders", REPO / "benchmarks" / "fuzz_loaders.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_fuzzer_counts_a_hang_and_a_crash_and_goes_on(tmp_path):
    import signal
    import threading

    if not hasattr(os, "mkfifo"):
        pytest.skip("needs a named pipe to hang on")
    good, fifo = tmp_path / "good-idx1-ubyte", tmp_path / "fifo-idx1-ubyte"
    good.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 2, 5, 6]))
    os.mkfifo(fifo)  # reading it waits forever
    with open(tmp_path / "worker.log", "w") as log:
        worker = fuzz_loaders().Worker("idx", good, 4 * 1024 ** 3, log)
        try:
            assert worker.ask(fifo, 1) == {"outcome": "timeout", "detail": "no answer within 1 s"}
            assert worker.ask(good, 60) == {"outcome": "loaded"}
            threading.Timer(1, lambda: os.kill(worker.proc.pid, signal.SIGSEGV)).start()
            assert worker.ask(fifo, 60) == {"outcome": "crash", "detail": "the worker died: signal SIGSEGV"}
            assert worker.ask(good, 60) == {"outcome": "loaded"} and worker.restarts == 2
        finally:
            worker.stop()


def test_fuzzed_model_idx_and_npz_files_load_or_get_the_project_error(tmp_path):
    """benchmarks/fuzz_loaders.py with 20 inputs per format (its campaign runs hundreds)."""
    results = fuzz_loaders().campaign(20, seed=0, work=tmp_path, echo=lambda line: None)
    for fmt, result in results.items():
        assert result["failures"] == [], fmt
        assert sum(result["outcomes"].values()) == 20 and result["outcomes"].get("refused", 0) >= 5, fmt


def test_a_save_flushes_the_file_before_renaming_it(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append("fsync") or real_fsync(fd))
    monkeypatch.setattr(os, "replace", lambda a, b: calls.append("replace") or real_replace(a, b))
    storage.write_json(tmp_path / "r.json", {"k": 1})
    assert calls == ["fsync", "replace"]


def test_the_next_save_removes_what_a_killed_save_left_but_not_a_save_under_way(tmp_path):
    fcntl = pytest.importorskip("fcntl")
    left = tmp_path / ".r.json.abcd1234.tmp"  # by a killed process: nobody holds it
    left.write_text('{"k": ')
    busy = tmp_path / ".r.json.efgh5678.tmp"  # by a save under way, which holds it locked
    busy.write_text('{"k": 2')
    with open(busy) as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        storage.write_json(tmp_path / "r.json", {"k": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == [busy.name, "r.json"]
    assert storage.read_json(tmp_path / "r.json") == {"k": 1}


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
