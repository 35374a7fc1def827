"""Saved runs: `Run` is what evaluate, visualize, compare and reports read.

A run is the files `fit` wrote under one name (kerascnn.runs.files names
them): `<name>.keras`, its checkpoints, `<name>.run.json`, its history and
its recordings. Whichever of its model files you point at, the Run
finds the rest; a checkpoint of an unfinished run carries the record in its
own state. Like keras-hub's task with its preprocessor, whoever loads a Run
also has what the model was trained with: its configuration, class names,
normalization and data, and (`Run.inputs`, a `RunInputs`) its model with
that data converted as training converted it.
"""

import dataclasses
import os
import sys
from pathlib import Path

from kerascnn.runs import storage
from kerascnn.config.choices import TEST_SIZE, dataset_label, is_decoded, is_folder, is_tfds
from kerascnn.config.options import FIELDS, FitConfig, replayed, upgrade
from kerascnn.config.spelling import OptionError, spell, spell_set
from kerascnn.errors import KerasCNNError
from kerascnn.runs.files import (CHECKPOINT, RunFiles, checked_history, read_checkpoint_state, read_history,
                                read_record, read_steps, record_bases)


class Run:
    """A saved run, read from one of its model files.

    `record` is the run's run.json (upgraded to the current format; None
    for a bare model that kerascnn did not train), `history` its rows per
    epoch. The model itself loads on first use (`model`).
    """

    def __init__(self, model_path, record=None, history=None, history_path=None):
        self.model_path = Path(model_path)
        self.record = upgrade(record) if record is not None else None
        self._history, self._history_from = history, history_path
        self._steps = None
        self._model = None
        self.unsafe = False

    @classmethod
    def load(cls, path, unsafe=False):
        """The run of a model file (a final model or any of its checkpoints),
        the file checked first (storage.model_file, storage.check_archive). `unsafe`
        lets `model()` load a model that holds code (a Lambda layer): only
        for files you trust."""
        path = storage.model_file(path)
        storage.check_archive(path)
        run = cls._of(path)
        run.unsafe = unsafe
        return run

    @classmethod
    def _of(cls, path):
        state = read_checkpoint_state(path)  # a checkpoint's own: its run's record as of that epoch
        for base in record_bases(path):
            files = RunFiles.of(base)
            record_path = files.record
            if record_path.is_file():
                record = read_record(record_path)
                if "config" in state and state.get("run_id") != record.get("run_id"):
                    break  # a stale checkpoint of an earlier run of that name
                if "run_id" in state and "config" not in state and state["run_id"] != record.get("run_id"):
                    raise KerasCNNError(f"{path} and {record_path.name} come from different runs (was the run "
                                        f"stopped while it saved?); train it again")
                history = files.history_json
                return cls(path, record, history_path=history if history.is_file() else None)
        if "config" in state:
            rows = state.get("callbacks", {}).get("history", {}).get("rows")
            return cls(path, state["config"], checked_history(rows, f"inside {path}"))
        return cls(path)

    @classmethod
    def newest(cls, folder="saved_models", unsafe=False):
        """The run of the most recently written model in `folder`."""
        return cls.load(storage.newest_model(folder), unsafe=unsafe)

    def __repr__(self):
        return f"Run({str(self.model_path)!r}, dataset={self.dataset!r})"

    # --- what the run was trained with

    @property
    def history(self):
        """The rows per epoch ([] when none was saved), read on first use: a
        history file that is not what `fit` writes is an error naming it."""
        if self._history is None:
            self._history = read_history(self._history_from) if self._history_from else []
        return self._history

    @property
    def steps(self):
        """The rows of its steps.csv (fit --log-every; [] without one, or when
        the run logged none: a file left by an earlier run of its name), read
        on first use: a damaged file is an error naming it (runfiles.read_steps)."""
        if self._steps is None:
            path = self.files.steps_csv
            logged = self.record and self.record.get("log_every") and path.is_file()
            self._steps = read_steps(path) if logged else []
        return self._steps

    @property
    def steps_per_epoch(self):
        """Training steps an epoch (from a finished run's record), or None."""
        return (self.record or {}).get("steps_per_epoch")

    @property
    def stem(self):
        """The model file's name without .keras: "lenet.best" for a checkpoint."""
        return self.model_path.name[: -len(storage.MODEL_SUFFIX)]

    @property
    def name(self):
        """The run's name: "lenet" for lenet.keras and all its checkpoints."""
        if self.record and self.record.get("name"):
            return self.record["name"]
        match = CHECKPOINT.match(self.stem)
        return match["name"] if match else self.stem

    @property
    def dataset(self):
        return self.record.get("dataset") if self.record else None

    @property
    def settings(self):
        """The configuration as resolved (a FitConfig), or None for a bare model."""
        if not self.record:
            return None
        return self._config({k: v for k, v in self.record.items() if k in FIELDS})

    @property
    def given(self):
        """The configuration as given (a FitConfig): what `fit --config` replays."""
        return self._config(replayed(self.record)) if self.record else None

    def _config(self, options):
        """A FitConfig of the record's options; a bad value is the record's
        fault here, not a usage error (OptionError)."""
        if not isinstance(options, dict):
            raise KerasCNNError(f"the run record of {self.model_path} is damaged: its options are missing")
        try:
            return FitConfig.from_dict(options)
        except OptionError as e:
            raise KerasCNNError(f"the run record of {self.model_path} is damaged: {e}") from None

    @property
    def class_names(self):
        return self.record.get("class_names") if self.record else None

    def normalization(self, dataset=None):
        """(mean, std) the model was trained with, or None when unknown or
        when `dataset` is another dataset than the run's."""
        if not self.record or "mean" not in self.record or (dataset or self.dataset) != self.dataset:
            return None
        return self.record["mean"], self.record["std"]

    def stats_for(self, data):
        """The (mean, std) to feed `data` to the model with: the run's own for
        its dataset, else `data`'s."""
        return self.normalization(data.name) or data.stats()

    @property
    def resize(self):
        """How images were fitted to the model's size: "resize" or "pad" (the
        run's `resize` option; "resize" for a bare model and older runs)."""
        return (self.record or {}).get("resize", "resize")

    def model(self):
        """The Keras model (loaded once, in safe mode unless `unsafe`)."""
        if self._model is None:
            self._model = storage.load_model(self.model_path, unsafe=self.unsafe)
        return self._model

    # --- its data

    def data_dirs(self):
        """Folders where this run's data may be, most likely first: the one
        it was trained from, the path as typed (from here, from the run's
        folder, and from the folder the run was made in)."""
        if not self.record:
            return []
        typed = self.record.get("given", {}).get("data_dir")
        found = [self.record.get("data_dir")]
        if typed:
            found += [typed, self.model_path.parent / typed]
            origin = _origin(self.model_path.parent, self.record.get("given", {}).get("output"))
            if origin is not None:
                found.append(origin / typed)
        return list(dict.fromkeys(str(Path(p)) for p in found if p))

    def load_data(self, dataset=None, data_dir=None):
        """The run's dataset (or `dataset`), split as in training, from
        `data_dir` if given, else the first of `data_dirs()` that holds it,
        else $KERASCNN_DATA_DIR and the usual sources (see load_dataset).
        A folder of images is the one the record names (an absolute path),
        stored as in training, and must be unchanged (its fingerprint)."""
        from kerascnn.data.datasets import load_dataset
        from kerascnn.data.folders import folder_path

        dataset = dataset or self.dataset
        if dataset is None:
            raise KerasCNNError(f"{self.model_path} has no run.json beside it (nor a training state inside); "
                                f"say which data with {spell('dataset')}")
        folder = is_folder(dataset)
        dataset = folder_path(dataset) if folder else dataset
        same = dataset == self.dataset or folder and self._moved_to(dataset)
        if same and folder and not Path(dataset).exists():
            raise KerasCNNError(f"the folder {self.model_path.name} was trained on, {dataset}, is not there; if you "
                                f"moved it, give its new place with {spell_set('dataset', 'DIR')}")
        split = {"val_size": self.record.get("val_size", 0.1), "seed": self.record.get("seed", 0)} if same else {}
        if same and is_decoded(dataset):
            split.update(test_size=self.record.get("test_size", TEST_SIZE), resize=self.resize,
                         image_size=(self.record.get("given") or {}).get("image_size"),
                         fingerprint=self.record.get("data_fingerprint"))
        if data_dir is None and is_tfds(dataset):  # the TFDS data folder it was trained from, else tfds' own
            data_dir = next((d for d in self.data_dirs() if Path(d).is_dir()), None)
        elif data_dir is None and not folder:
            data_dir = next((d for d in self.data_dirs() if (Path(d) / dataset).is_dir()), None)
        return load_dataset(dataset, data_dir, **split)

    def _moved_to(self, folder):
        """Whether `folder` holds the very images this run trained on (its
        fingerprint: names, sizes and times, which a move keeps)."""
        from kerascnn.data.folders import folder_fingerprint

        recorded = self.record.get("data_fingerprint") if self.record else None
        return bool(recorded) and Path(folder).is_dir() and folder_fingerprint(folder) == recorded

    def inputs(self, dataset=None, data_dir=None):
        """The model with its data (`dataset` and `data_dir` as in
        load_data), checked to fit it (check_fits), and the conversion its
        training used: a RunInputs. What every command that reads a saved
        run's data opens it with."""
        model = self.model()
        data = self.load_data(dataset, data_dir)
        check_fits(self, data, model.output_shape[-1])
        mean, std = self.stats_for(data)
        return RunInputs(model, data, mean, std, self.resize, _input_shape(model))

    def image_inputs(self):
        """The model and the conversion its training used, from the record
        alone: a RunInputs without data (none is loaded or downloaded), for
        images of the run's own kind. A run without a record (no
        normalization known) is an error."""
        stats = self.normalization()
        if stats is None:
            raise KerasCNNError(f"{self.model_path} has no run.json beside it (nor a training state inside): "
                                f"images for it need the normalization the model was trained with")
        model = self.model()
        return RunInputs(model, None, *stats, self.resize, _input_shape(model))

    # --- its files

    @property
    def files(self):
        """The run's files (RunFiles)."""
        return RunFiles(self.model_path.parent, self.name)

    def output_base(self, output=None, dataset=None):
        """Where to write files about this model: `<output>/<stem>` (the model's
        folder by default), with `.<dataset>` added when it is another dataset
        than the run's, so the model's own files stay as they were."""
        folder = storage.ensure_dir(output or self.model_path.parent)
        suffix = f".{dataset_label(dataset)}" if dataset and dataset != self.dataset else ""
        return folder / f"{self.stem}{suffix}{storage.MODEL_SUFFIX}"

    @property
    def paths(self):
        """The run's files that exist: models, records, history, recordings."""
        return self.files.existing()


@dataclasses.dataclass(frozen=True)
class RunInputs:
    """A saved run's model and what it reads (Run.inputs, Run.image_inputs):
    `data`, the dataset checked to fit the model (None when none was
    loaded), the `mean` and `std` it is normalized with, `resize` ("resize"
    or "pad") and the model's `input_shape` (H, W, C). Images go to the
    network as training fed them (kerascnn.data.loader) and back for display."""

    model: object
    data: object
    mean: object
    std: object
    resize: str
    input_shape: tuple

    def test_batches(self, batch_size=256):
        """The test set's (images, labels) batches, in order, as training
        saw them (make_pipeline with the run's resize)."""
        from kerascnn.data.loader import make_pipeline

        data = self._data()
        return make_pipeline(data.x_test, data.y_test, input_shape=self.input_shape, mean=self.mean, std=self.std,
                             batch_size=batch_size, resize=self.resize)

    def test_images(self, indices):
        """The test images at `indices` as the network takes them (numpy)."""
        return self.network_input(self._data().x_test[indices])

    def network_input(self, images):
        """uint8 images (N, H, W, C) of the data's channels as the network
        takes them: resized or padded, normalized (preprocess), as numpy."""
        import keras

        from kerascnn.data.loader import preprocess

        return keras.ops.convert_to_numpy(preprocess(images, input_shape=self.input_shape, mean=self.mean,
                                                     std=self.std, resize=self.resize))

    def for_display(self, x):
        """Network inputs back to images in [0, 1] (denormalize)."""
        from kerascnn.data.loader import denormalize

        return denormalize(x, mean=self.mean, std=self.std)

    @property
    def channels(self):
        """The channels of the images it converts: its data's (1 gray, 3 RGB)."""
        return len(self.mean)

    def _data(self):
        if self.data is None:
            raise KerasCNNError("these inputs hold no data (Run.image_inputs); open them with Run.inputs")
        return self.data


def check_fits(run, data, classes):
    """A model scores only a dataset of its class count (an error otherwise);
    one other than its own gets a warning on stderr. Image size and channels
    the pipeline adapts."""
    if classes != data.num_classes:
        trained = (f"it was trained on {run.dataset}: evaluate it there (leave out {spell('dataset')}) or"
                   if run.dataset else "evaluate it")
        raise KerasCNNError(f"the model {run.model_path} has {classes} classes but dataset {data.name} has "
                            f"{data.num_classes}; {trained} on a dataset with {classes} classes")
    if run.dataset and data.name != run.dataset:
        print(f"warning: this model was trained on {run.dataset}; evaluating it on {data.name}", file=sys.stderr)


def _input_shape(model):
    return tuple(int(v) for v in model.input_shape[1:])


def _origin(folder, output):
    """The folder a run was made from: `folder` less the `--output` typed then."""
    if not output or Path(output).is_absolute():
        return None
    parts = Path(os.path.normpath(output)).parts
    if parts and parts != (".",) and folder.resolve().parts[-len(parts):] == parts:
        return Path(*folder.resolve().parts[: -len(parts)])
    return None
