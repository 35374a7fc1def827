"""Saved runs and their files: `Run` is what evaluate, visualize, compare and
reports read; `RunFiles` owns the names of a run's files and decides whether
it is done; `StudyFolder` owns a study's folder (study.json, failed.json).

A run is the files `fit` wrote under one name: `<name>.keras`, its
checkpoints (`<name>.best.keras`, `<name>.last.keras`,
`<name>.epoch-NNN.keras`), `<name>.run.json`, `<name>.history.json` and
`<name>.activations.npz`. Whichever of its model files you point at, the Run
finds the rest; a checkpoint of an unfinished run carries the record in its
own state. Like keras-hub's task with its preprocessor, whoever loads a Run
also has what the model was trained with: its configuration, class names,
normalization and data.
"""

import dataclasses
import json
import os
import re
from pathlib import Path

from kerascnn import io
from kerascnn.config import FIELDS, FitConfig, OptionError, spell, upgrade
from kerascnn.errors import KerasCNNError

STUDY_FORMAT = 1  # of study.json
# <name>.best.keras, <name>.last.keras, <name>.epoch-005.keras
CHECKPOINT = re.compile(r"^(?P<name>.+)\.(best|last|epoch-\d+)$")


@dataclasses.dataclass(frozen=True)
class RunFiles:
    """The files of the run `name` in `folder`, and the one rule for whether
    it is done. `fit` writes a run in progress into `<name>.partial/`
    (`best.keras`, `epoch-NNN.keras`, `last.keras` with the training state,
    `activations.npz`); its final save writes `<name>.keras` (holding the
    run's id), `<name>.history.csv`, `<name>.history.json`, `<name>.run.json`
    (last), then moves the checkpoints beside them as `<name>.best.keras`,
    ... A kill at any point of that save leaves a run that is not `done()`
    and that `--resume` finishes."""

    folder: Path
    name: str

    @classmethod
    def of(cls, model_path):
        """The files of the run whose final model is `model_path`."""
        model_path = Path(model_path)
        return cls(model_path.parent, model_path.name[: -len(io.MODEL_SUFFIX)])

    def sidecar(self, kind):
        """<folder>/<name>.<kind>."""
        return self.folder / f"{self.name}.{kind}"

    @property
    def model(self):
        return self.sidecar(io.MODEL_SUFFIX[1:])

    @property
    def record(self):
        return self.sidecar("run.json")

    @property
    def history_json(self):
        return self.sidecar("history.json")

    @property
    def history_csv(self):
        return self.sidecar("history.csv")

    @property
    def activations(self):
        return self.sidecar("activations.npz")

    def checkpoint(self, kind):
        """A finished run's checkpoint: "best", "last" or "epoch-NNN"."""
        return self.sidecar(f"{kind}{io.MODEL_SUFFIX}")

    def epoch_checkpoints(self):
        return sorted(self.folder.glob(f"{self.name}.epoch-*{io.MODEL_SUFFIX}"))

    @property
    def partial(self):
        """The folder of the run in progress."""
        return self.sidecar("partial")

    def in_progress(self, kind):
        """A file of the run in progress: "best", "last", "epoch-NNN" (models) or "activations"."""
        return self.partial / ("activations.npz" if kind == "activations" else f"{kind}{io.MODEL_SUFFIX}")

    @staticmethod
    def epoch_kind(epoch):
        return f"epoch-{epoch:03d}"

    def finished_name(self, path):
        """Where a file of the run in progress goes when the run is done:
        <name>.partial/best.keras -> <name>.best.keras."""
        return self.sidecar(Path(path).name)

    def existing(self):
        """The run's files that exist, in the order fit writes them: the
        model, its history and record, then its checkpoints and recordings."""
        found = [self.model, self.history_csv, self.history_json, self.record, self.checkpoint("best"),
                 self.checkpoint("last"), *self.epoch_checkpoints(), self.activations]
        return [p for p in found if p.is_file()]

    def done(self):
        """Whether the run's final save completed: its model, history and
        record exist, and the record is of that model (the same run id) with
        a test accuracy."""
        if not (self.model.is_file() and self.history_json.is_file() and self.record.is_file()):
            return False
        try:
            record = io.read_json(self.record)
            model_id = (io.read_state(self.model) or {}).get("run_id")
        except (OSError, ValueError, RecursionError, KerasCNNError):
            return False
        return isinstance(record, dict) and record.get("test_accuracy") is not None \
            and model_id is not None and record.get("run_id") == model_id

    def interrupted(self):
        """Whether a run in progress can be resumed (its last checkpoint exists)."""
        return self.in_progress("last").is_file()

    def state(self):
        """"done", "interrupted" (resumable) or "none"."""
        if self.done():
            return "done"
        return "interrupted" if self.interrupted() else "none"


class StudyFolder:
    """A study's folder and its files: `study.json` (the study, its variants
    and runs), each run's files (`RunFiles` in `<folder>/<run folder>/`) and
    its `failed.json` (the error of its last attempt, one line). `state`
    is the one rule the runner and the report follow."""

    STUDY_FILE = "study.json"
    FAILED_FILE = "failed.json"

    def __init__(self, path):
        self.path = Path(path)

    @property
    def record_path(self):
        return self.path / self.STUDY_FILE

    def is_study(self):
        return self.record_path.is_file()

    def read(self):
        """study.json, its outline checked."""
        path = self.record_path
        if not path.is_file():
            raise KerasCNNError(f"{self.path} is not a study folder: it has no {self.STUDY_FILE}")
        try:
            record = io.read_json(path)
        except (OSError, ValueError, RecursionError) as e:
            raise KerasCNNError(f"cannot read {path}: {e}") from None

        def fine(items, **kinds):
            return isinstance(items, list) and all(
                isinstance(item, dict) and all(isinstance(item.get(k), t) for k, t in kinds.items()) for item in items)

        if not isinstance(record, dict) or record.get("format") != STUDY_FORMAT:
            raise KerasCNNError(f"{path} is not a study file of format {STUDY_FORMAT}, as `kerascnn study` writes it")
        if not (fine(record.get("variants"), label=str, options=dict)
                and fine(record.get("runs"), label=str, seed=int, folder=str, name=str)):
            raise KerasCNNError(f"{path} is damaged: its variants or runs are not as `kerascnn study` writes them")
        return record

    def write(self, record):
        io.write_json(io.ensure_dir(self.path) / self.STUDY_FILE, record)

    def run_files(self, folder, name):
        """The files of the run `name` in the study's `folder` (relative)."""
        return RunFiles(self.path / folder, name)

    def failed_path(self, folder):
        return self.path / folder / self.FAILED_FILE

    def state(self, folder, name):
        """"done" (its final save completed), "interrupted" (resumable),
        "failed" (its last attempt wrote failed.json) or "pending"."""
        state = self.run_files(folder, name).state()
        if state != "none":
            return state
        return "failed" if self.failed_path(folder).is_file() else "pending"

    def failure(self, folder):
        """The error a failed run's failed.json holds, on one line."""
        path = self.failed_path(folder)
        try:
            error = io.read_json(path).get("error")
        except (OSError, ValueError, AttributeError, RecursionError):
            error = f"{path} is unreadable"
        return " ".join(str(error or "no error recorded").split())

    def mark_failed(self, folder, label, seed, error):
        io.write_json(io.ensure_dir(self.path / folder) / self.FAILED_FILE, {"label": label, "seed": seed, "error": error})

    def clear_failed(self, folder):
        self.failed_path(folder).unlink(missing_ok=True)


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
        self._model = None
        self.unsafe = False

    @classmethod
    def load(cls, path, unsafe=False):
        """The run of a model file (a final model or any of its checkpoints),
        the file checked first (io.model_file, io.check_archive). `unsafe`
        lets `model()` load a model that holds code (a Lambda layer): only
        for files you trust."""
        path = io.model_file(path)
        io.check_archive(path)
        run = cls._of(path)
        run.unsafe = unsafe
        return run

    @classmethod
    def _of(cls, path):
        state = _state(path)  # a checkpoint's own: its run's record as of that epoch
        for base in _run_bases(path):
            files = RunFiles.of(base)
            record_path = files.record
            if record_path.is_file():
                record = _read(record_path)
                if "config" in state and state.get("run_id") != record.get("run_id"):
                    break  # a stale checkpoint of an earlier run of that name
                if "run_id" in state and "config" not in state and state["run_id"] != record.get("run_id"):
                    raise KerasCNNError(f"{path} and {record_path.name} come from different runs (was the run "
                                        f"stopped while it saved?); train it again")
                history = files.history_json
                return cls(path, record, history_path=history if history.is_file() else None)
        if "config" in state:
            rows = state.get("callbacks", {}).get("history", {}).get("rows")
            return cls(path, state["config"], _checked_history(rows, f"inside {path}"))
        return cls(path)

    @classmethod
    def newest(cls, folder="saved_models", unsafe=False):
        """The run of the most recently written model in `folder`."""
        return cls.load(io.newest_model(folder), unsafe=unsafe)

    def __repr__(self):
        return f"Run({str(self.model_path)!r}, dataset={self.dataset!r})"

    # --- what the run was trained with

    @property
    def history(self):
        """The rows per epoch ([] when none was saved), read on first use: a
        history file that is not what `fit` writes is an error naming it."""
        if self._history is None:
            self._history = _read_history(self._history_from) if self._history_from else []
        return self._history

    @property
    def stem(self):
        """The model file's name without .keras: "lenet.best" for a checkpoint."""
        return self.model_path.name[: -len(io.MODEL_SUFFIX)]

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
        return self._config(self.record.get("given")) if self.record else None

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
            self._model = io.load_model(self.model_path, unsafe=self.unsafe)
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
        else $KERASCNN_DATA_DIR and the usual sources (see load_dataset)."""
        from kerascnn.data import load_dataset

        dataset = dataset or self.dataset
        if dataset is None:
            raise KerasCNNError(f"{self.model_path} has no run.json beside it (nor a training state inside); "
                                f"say which data with {spell('dataset')}")
        same = dataset == self.dataset
        split = {"val_size": self.record.get("val_size", 0.1), "seed": self.record.get("seed", 0)} if same else {}
        if data_dir is None:
            data_dir = next((d for d in self.data_dirs() if (Path(d) / dataset).is_dir()), None)
        return load_dataset(dataset, data_dir, **split)

    # --- its files

    @property
    def files(self):
        """The run's files (RunFiles)."""
        return RunFiles(self.model_path.parent, self.name)

    def output_base(self, output=None, dataset=None):
        """Where to write files about this model: `<output>/<stem>` (the model's
        folder by default), with `.<dataset>` added when it is another dataset
        than the run's, so the model's own files stay as they were."""
        folder = io.ensure_dir(output or self.model_path.parent)
        suffix = f".{dataset}" if dataset and dataset != self.dataset else ""
        return folder / f"{self.stem}{suffix}{io.MODEL_SUFFIX}"

    @property
    def paths(self):
        """The run's files that exist: models, records, history, recordings."""
        return self.files.existing()


def _read(path):
    """A run record (run.json), its outline checked as _checked_record does."""
    try:
        record = io.read_json(path)
    except (OSError, ValueError, RecursionError) as e:
        raise KerasCNNError(f"cannot read {path}: {e}") from None
    return _checked_record(record, path)


def _checked_record(record, source):
    """`record` if it is an object with an integer format (what upgrade reads); else an error naming `source`."""
    if not isinstance(record, dict) or type(record.get("format", 1)) is not int:
        raise KerasCNNError(f"the run record {source} is damaged: not a run record as `kerascnn fit` writes it")
    return record


HISTORY_NUMBERS = ("loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds")


def _read_history(path):
    """The rows of a <name>.history.json, checked as _checked_history does."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise KerasCNNError(f"cannot read the training history {path}: {e.strerror}") from None
    if not data.strip():
        raise KerasCNNError(f"cannot use the training history {path}: the file is empty")
    try:
        rows = json.loads(data)
    except ValueError as e:  # UnicodeDecodeError included
        raise KerasCNNError(f"cannot use the training history {path}: not JSON ({e})") from None
    return _checked_history(rows, path)


def _checked_history(rows, source):
    """`rows` if they are a history as `fit` writes it: a list of objects,
    each with an integer epoch and numbers for loss and accuracy (and for
    the other metrics it has); else an error naming `source`."""
    def fail(reason):
        raise KerasCNNError(f"cannot use the training history {source}: {reason}")

    if rows is None:
        return []
    if not isinstance(rows, list):
        fail("not a list of epochs, as `kerascnn fit` writes")
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            fail(f"row {n} is not an object")
        if type(row.get("epoch")) is not int:
            fail(f"row {n} has no integer epoch")
        for key in HISTORY_NUMBERS:
            value = row.get(key)
            if (key in row or key in ("loss", "accuracy")) and not isinstance(value, (int, float)) \
                    or isinstance(value, bool):
                fail(f"epoch {row['epoch']} has no number for {key!r}")
    return rows


def _state(path):
    """The training state inside a checkpoint ({} for a final model), the
    parts a Run reads checked: a damaged one is an error."""
    state = io.read_state(path) or {}
    callbacks = state.get("callbacks", {})
    history = callbacks.get("history", {}) if isinstance(callbacks, dict) else {}
    for what, part in (("config", state.get("config", {})), ("callbacks", callbacks), ("history", history)):
        if not isinstance(part, dict):
            raise KerasCNNError(f"the training state in {path} is damaged: its {what} is not an object")
    if "config" in state:
        _checked_record(state["config"], f"inside {path}")
    return state


def _run_bases(path):
    """Model paths whose run.json may describe `path`: itself, then for a
    checkpoint its run's final model. (In <name>.partial/ a run is still
    going: its checkpoints' own state is its record.)"""
    if path.parent.name.endswith(".partial"):  # RunFiles.partial
        return
    yield path
    match = CHECKPOINT.match(path.name[: -len(io.MODEL_SUFFIX)])
    if match:
        yield path.with_name(match["name"] + io.MODEL_SUFFIX)


def _origin(folder, output):
    """The folder a run was made from: `folder` less the `--output` typed then."""
    if not output or Path(output).is_absolute():
        return None
    parts = Path(os.path.normpath(output)).parts
    if parts and parts != (".",) and folder.resolve().parts[-len(parts):] == parts:
        return Path(*folder.resolve().parts[: -len(parts)])
    return None

