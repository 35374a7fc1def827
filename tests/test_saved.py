"""Run: a saved run read back from any of its model files, from anywhere,
with its record, history, normalization and data, and its inputs (RunInputs)."""

import json
import os
import shutil

import numpy as np
import pytest

from kerascnn.runs import storage
from kerascnn.errors import KerasCNNError
from kerascnn.runs.saved import Run

CHECKPOINTS = ("lenet.keras", "lenet.best.keras", "lenet.last.keras", "lenet.epoch-001.keras")


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory):
    """A run trained on IDX files under a relative --data-dir, with every kind of checkpoint."""
    from kerascnn.training.fit import fit
    from tests.conftest import make_images, write_idx

    root = tmp_path_factory.mktemp("project")
    folder = root / "data" / "mnist"
    folder.mkdir(parents=True)
    for stem, (x, y) in {"train": make_images(200, seed=1), "t10k": make_images(50, seed=2)}.items():
        write_idx(folder / f"{stem}-images-idx3-ubyte", x[..., 0])
        write_idx(folder / f"{stem}-labels-idx1-ubyte", y)
    cwd = os.getcwd()
    os.chdir(root)
    try:
        fit("lenet", "mnist", data_dir="data", epochs=2, batch_size=32, activation="relu", pool="max",
            save_every=1, output="runs", verbose=0)
    finally:
        os.chdir(cwd)
    return root


def test_every_model_file_finds_its_run(mnist_run):
    for name in CHECKPOINTS:
        run = Run.load(mnist_run / "runs" / name)
        assert run.name == "lenet" and run.stem == name[: -len(".keras")]
        assert run.dataset == "mnist" and run.class_names == [str(i) for i in range(10)]
        assert len(run.history) == 2 and run.record["test_accuracy"] > 0
        assert run.settings.batch_size == 32 and run.given.batch_size == 32 and run.given.optimizer is None
        assert run.normalization() == (run.record["mean"], run.record["std"])
        assert run.normalization("digits") is None
    assert [p.name for p in Run.load(mnist_run / "runs" / "lenet.keras").paths] == [  # the order fit writes them
        "lenet.keras", "lenet.history.csv", "lenet.history.json", "lenet.run.json", "lenet.best.keras",
        "lenet.last.keras", "lenet.epoch-001.keras", "lenet.epoch-002.keras"]


def test_data_dir_typed_and_resolved(mnist_run):
    record = json.loads((mnist_run / "runs" / "lenet.run.json").read_text())
    assert record["given"]["data_dir"] == "data"  # as typed
    assert record["data_dir"] == str(mnist_run / "data")  # where it was found


def test_a_moved_run_finds_its_data_from_anywhere(mnist_run, tmp_path, monkeypatch):
    moved = tmp_path / "elsewhere"
    shutil.copytree(mnist_run, moved)
    shutil.move(mnist_run / "data", tmp_path / "hidden")  # the folder the run was trained from is gone
    try:
        monkeypatch.chdir(tmp_path)
        monkeypatch.delenv("KERASCNN_DATA_DIR", raising=False)
        run = Run.load(moved / "runs" / "lenet.best.keras")
        data = run.load_data()  # found as typed, relative to the folder the run was made in
        assert data.source == f"local:{moved / 'data' / 'mnist'}" and len(data.x_test) == 50
        shutil.rmtree(moved / "data")
        monkeypatch.setattr("kerascnn.data.sources.network_available", lambda *args, **kwargs: False)
        with pytest.raises(KerasCNNError, match="cannot download mnist"):
            run.load_data()
        monkeypatch.setenv("KERASCNN_DATA_DIR", str(tmp_path / "hidden"))
        assert run.load_data().source == f"local:{tmp_path / 'hidden' / 'mnist'}"
    finally:
        shutil.move(tmp_path / "hidden", mnist_run / "data")


def test_an_unfinished_runs_checkpoint_carries_its_record(mnist_run, tmp_path):
    partial = tmp_path / "lenet.partial"
    partial.mkdir()
    shutil.copy(mnist_run / "runs" / "lenet.last.keras", partial / "last.keras")
    run = Run.load(partial / "last.keras")
    assert run.dataset == "mnist" and run.name == "lenet" and len(run.history) == 2
    # a checkpoint beside its run's run.json is described by it...
    shutil.copy(mnist_run / "runs" / "lenet.run.json", tmp_path / "lenet.run.json")
    state = storage.read_state(partial / "last.keras")
    storage.update_state(partial / "last.keras", config={**state["config"], "epochs": 99})
    shutil.copy(partial / "last.keras", tmp_path / "lenet.best.keras")
    assert Run.load(tmp_path / "lenet.best.keras").record["epochs"] == 2
    # ...but a stale one, left by an earlier run of the same name, by its own state
    storage.update_state(tmp_path / "lenet.best.keras", run_id="an earlier run")
    assert Run.load(tmp_path / "lenet.best.keras").record["epochs"] == 99


def test_bare_models_and_bad_paths(tmp_path):
    from kerascnn.models import build_lenet

    path = storage.save_model(build_lenet(), tmp_path / "bare.keras")
    run = Run.load(path)
    assert run.record is None and run.dataset is None and run.history == [] and run.settings is None
    with pytest.raises(KerasCNNError, match="say which data with dataset$"):
        run.load_data()
    assert run.load_data("digits").name == "digits"
    with pytest.raises(KerasCNNError, match="no model file at"):
        Run.load(tmp_path / "none.keras")
    with pytest.raises(KerasCNNError, match="not a .keras model file"):
        Run.load(storage.write_text(tmp_path / "x.h5", "x"))
    with pytest.raises(KerasCNNError, match="no .keras model in"):
        Run.newest(tmp_path / "empty")


def test_output_base_keeps_the_models_own_files(mnist_run, tmp_path):
    run = Run.load(mnist_run / "runs" / "lenet.best.keras")
    assert run.output_base() == mnist_run / "runs" / "lenet.best.keras"
    assert run.output_base(tmp_path, "mnist") == tmp_path / "lenet.best.keras"
    assert run.output_base(tmp_path, "digits") == tmp_path / "lenet.best.digits.keras"


def test_a_folder_a_damaged_state_and_unsafe_loading(tmp_path):
    from kerascnn.models import build_lenet
    from tests.test_storage import make_bad_models

    with pytest.raises(KerasCNNError, match=f"^{tmp_path} is a folder, not a model file; it holds no .keras model$"):
        Run.load(tmp_path)
    storage.save_model(build_lenet(), tmp_path / "b.keras")
    path = storage.save_model(build_lenet(), tmp_path / "a.keras", state={"epoch": 1})
    with pytest.raises(KerasCNNError, match="is a folder, not a model file; pass one of its models: a.keras, b.keras$"):
        Run.load(tmp_path)
    storage.update_state(path, config="lenet")
    with pytest.raises(KerasCNNError, match="the training state in .*a.keras is damaged: its config is not an object"):
        Run.load(path)
    storage.update_state(path, config={"format": "2"})
    with pytest.raises(KerasCNNError, match="the run record inside .*a.keras is damaged"):
        Run.load(path)
    storage.update_state(path, config={"format": 2, "given": {"epochs": "many"}})
    with pytest.raises(KerasCNNError, match="the run record of .*a.keras is damaged: epochs expects a whole number"):
        _ = Run.load(path).given  # a damaged record, not a usage error (exit 2)

    models = make_bad_models(tmp_path / "bad")
    with pytest.raises(KerasCNNError, match="truncated"):
        Run.load(models["truncated"])  # before the model is needed: the CLI answers before Keras starts
    run = Run.load(models["lambda"])
    with pytest.raises(KerasCNNError, match="holds Python code"):
        run.model()
    assert Run.load(models["lambda"], unsafe=True).model().get_layer("double") is not None


def test_a_model_and_a_record_of_different_runs_are_refused(mnist_run, tmp_path):
    """A kill between writing the final model and its run.json leaves a new
    model beside an earlier run's record: found, not trusted."""
    runs = tmp_path / "runs"
    shutil.copytree(mnist_run / "runs", runs)
    assert Run.load(runs / "lenet.keras").record["run_id"] == storage.read_state(runs / "lenet.keras")["run_id"]
    record = json.loads((runs / "lenet.run.json").read_text())
    (runs / "lenet.run.json").write_text(json.dumps({**record, "run_id": "an earlier run"}))
    with pytest.raises(KerasCNNError, match=r"lenet\.keras and lenet\.run\.json come from different runs"):
        Run.load(runs / "lenet.keras")


def test_a_padded_runs_inputs_are_its_test_images_padded_not_stretched(tmp_path):
    """Run.inputs: the model, its data and the conversion its training used; a `resize="pad"` run's test batches
    are its 28x28 digits centred on a border of black, as it trained on them."""
    from kerascnn.data.loader import preprocess
    from kerascnn.training.fit import fit

    r = fit("lenet", "digits", epochs=1, train_size=200, batch_size=32, image_size=36, resize="pad",
            activation="relu", pool="max", output=tmp_path, verbose=0)
    run = Run.load(r.model_path)
    inputs = run.inputs()
    data, (mean,), (std,) = inputs.data, inputs.mean, inputs.std
    assert data.name == "digits" and inputs.model is run.model() and inputs.input_shape == (36, 36, 1)
    assert (inputs.mean, inputs.std) == run.normalization() and inputs.resize == "pad"
    batches = inputs.test_batches(batch_size=100)
    x = np.concatenate([np.asarray(images) for images, _ in batches])
    labels = np.concatenate([np.asarray(labels) for _, labels in batches])
    assert x.shape == (len(data.x_test), 36, 36, 1) and np.array_equal(labels, data.y_test)
    inside = (data.x_test / 255.0 - mean) / std
    np.testing.assert_allclose(x[:, 4:32, 4:32], inside, atol=1e-5)  # the images themselves, not stretched
    border = np.ones((36, 36), bool)
    border[4:32, 4:32] = False
    np.testing.assert_allclose(x[:, border], -mean / std, atol=1e-6)  # black, normalized
    stretched = preprocess(data.x_test[:5], input_shape=(36, 36, 1), mean=[mean], std=[std], resize="resize")
    assert not np.allclose(x[:5], np.asarray(stretched), atol=1e-2)
    np.testing.assert_array_equal(inputs.test_images([3, 7]), x[[3, 7]])
    padded = np.pad(data.x_test[:5] / 255.0, ((0, 0), (4, 4), (4, 4), (0, 0)))
    np.testing.assert_allclose(inputs.for_display(x[:5]), padded, atol=1e-5)  # the normalization undone
    # images of its kind without its data: the same conversion from the record alone
    own = run.image_inputs()
    assert own.data is None and own.channels == 1
    np.testing.assert_array_equal(own.network_input(data.x_test[[3, 7]]), x[[3, 7]])
    with pytest.raises(KerasCNNError, match="hold no data"):
        own.test_batches()


def test_data_that_does_not_fit_the_model_is_one_error(tmp_path):
    """A model opens only data of its class count; a bare model has no conversion without data."""
    from kerascnn.models import build_lenet

    run = Run.load(storage.save_model(build_lenet(num_classes=3), tmp_path / "three.keras"))
    with pytest.raises(KerasCNNError, match=r"^the model .*three.keras has 3 classes but dataset digits has 10; "
                                            r"evaluate it on a dataset with 3 classes$"):
        run.inputs("digits")
    with pytest.raises(KerasCNNError, match="has no run.json beside it .*: images for it need the normalization"):
        run.image_inputs()
