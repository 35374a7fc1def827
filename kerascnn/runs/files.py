"""The files of runs and studies, in one place: `RunFiles` names a run's
files and decides whether it is done; `record` builds its record
(`<name>.run.json`) and `checkpoint_state` the training state inside its
checkpoints; `StudyFolder` owns a study's folder (study.json, failed.json)
and one rule for a run's status. The readers check each file's outline, so
a damaged file is one clear error.

A run is the files `fit` writes under one name: `<name>.keras`, its
checkpoints (`<name>.best.keras`, `<name>.last.keras`,
`<name>.epoch-NNN.keras`), `<name>.run.json`, `<name>.history.json` and
`.csv`, `<name>.activations.npz` and `<name>.steps.csv`; while it trains
they live in `<name>.partial/`.
"""

import dataclasses
import json
import math
import re
from pathlib import Path

from kerascnn.runs import storage
from kerascnn.config.options import FIELDS, RUN_FORMAT, upgrade, with_added
from kerascnn.config.spelling import spell
from kerascnn.errors import KerasCNNError


STUDY_FORMAT = 1  # of study.json


# <name>.best.keras, <name>.last.keras, <name>.epoch-005.keras
CHECKPOINT = re.compile(r"^(?P<name>.+)\.(best|last|epoch-\d+)$")


@dataclasses.dataclass(frozen=True)
class RunFiles:
    """The files of the run `name` in `folder`, and the one rule for whether
    it is done. `fit` writes a run in progress into `<name>.partial/`
    (`best.keras`, `epoch-NNN.keras`, `last.keras` with the training state,
    `activations.npz`, `steps.csv`); its final save writes `<name>.keras` (holding the
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
        return cls(model_path.parent, model_path.name[: -len(storage.MODEL_SUFFIX)])

    def sidecar(self, kind):
        """<folder>/<name>.<kind>."""
        return self.folder / f"{self.name}.{kind}"

    @property
    def model(self):
        return self.sidecar(storage.MODEL_SUFFIX[1:])

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

    @property
    def steps_csv(self):
        """The training loss and accuracy every N steps (fit --log-every)."""
        return self.sidecar("steps.csv")

    def checkpoint(self, kind):
        """A finished run's checkpoint: "best", "last" or "epoch-NNN"."""
        return self.sidecar(f"{kind}{storage.MODEL_SUFFIX}")

    def epoch_checkpoints(self):
        return sorted(self.folder.glob(f"{self.name}.epoch-*{storage.MODEL_SUFFIX}"))

    @property
    def partial(self):
        """The folder of the run in progress."""
        return self.sidecar("partial")

    def in_progress(self, kind):
        """A file of the run in progress: "best", "last", "epoch-NNN" (models), "activations" or "steps"."""
        recordings = {"activations": "activations.npz", "steps": "steps.csv"}
        return self.partial / recordings.get(kind, f"{kind}{storage.MODEL_SUFFIX}")

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
                 self.checkpoint("last"), *self.epoch_checkpoints(), self.activations, self.steps_csv]
        return [p for p in found if p.is_file()]

    def done(self):
        """Whether the run's final save completed: its model, history and
        record exist, and the record is of that model (the same run id) with
        a test accuracy."""
        if not (self.model.is_file() and self.history_json.is_file() and self.record.is_file()):
            return False
        try:
            record = storage.read_json(self.record)
            model_id = (storage.read_state(self.model) or {}).get("run_id")
        except (OSError, ValueError, RecursionError, KerasCNNError):
            return False
        return isinstance(record, dict) and record.get("test_accuracy") is not None \
            and model_id is not None and record.get("run_id") == model_id

    def interrupted(self):
        """Whether a run in progress can be resumed (its last checkpoint exists)."""
        return self.in_progress("last").is_file()

    def status(self):
        """"done", "interrupted" (resumable) or "none"."""
        if self.done():
            return "done"
        return "interrupted" if self.interrupted() else "none"


class StudyFolder:
    """A study's folder and its files: `study.json` (the study, its variants
    and runs), each run's files (`RunFiles` in `<folder>/<run folder>/`) and
    its `failed.json` (the error of its last attempt, one line). `run_status`
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
            record = storage.read_json(path)
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
        storage.write_json(storage.ensure_dir(self.path) / self.STUDY_FILE, record)

    def run_files(self, folder, name):
        """The files of the run `name` in the study's `folder` (relative)."""
        return RunFiles(self.path / folder, name)

    def failed_path(self, folder):
        return self.path / folder / self.FAILED_FILE

    def run_status(self, folder, name):
        """"done" (its final save completed), "interrupted" (resumable),
        "failed" (its last attempt wrote failed.json) or "pending"."""
        status = self.run_files(folder, name).status()
        if status != "none":
            return status
        return "failed" if self.failed_path(folder).is_file() else "pending"

    def failure(self, folder):
        """The error a failed run's failed.json holds, on one line."""
        path = self.failed_path(folder)
        try:
            error = storage.read_json(path).get("error")
        except (OSError, ValueError, AttributeError, RecursionError):
            error = f"{path} is unreadable"
        return " ".join(str(error or "no error recorded").split())

    def mark_failed(self, folder, label, seed, error):
        storage.write_json(storage.ensure_dir(self.path / folder) / self.FAILED_FILE, {"label": label, "seed": seed, "error": error})

    def clear_failed(self, folder):
        self.failed_path(folder).unlink(missing_ok=True)


def read_record(path):
    """A run record (run.json), its outline checked as checked_record does."""
    try:
        record = storage.read_json(path)
    except (OSError, ValueError, RecursionError) as e:
        raise KerasCNNError(f"cannot read {path}: {e}") from None
    return checked_record(record, path)


def checked_record(record, source):
    """`record` if it is an object with an integer format (what upgrade reads); else an error naming `source`."""
    if not isinstance(record, dict) or type(record.get("format", 1)) is not int:
        raise KerasCNNError(f"the run record {source} is damaged: not a run record as `kerascnn fit` writes it")
    return record


HISTORY_NUMBERS = ("loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds")


def read_history(path):
    """The rows of a <name>.history.json, checked as checked_history does."""
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
    return checked_history(rows, path)


def checked_history(rows, source):
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


STEP_COLUMNS = ("step", "epoch", "batch", "seen", "loss", "accuracy")  # <name>.steps.csv (training.steplog.StepLog)
STEP_INTS = ("step", "epoch", "batch", "seen")


def step_line(row):
    """A row of <name>.steps.csv as its line (floats as repr: they read back exactly)."""
    return ",".join(str(int(row[k]) if k in STEP_INTS else float(row[k])) for k in STEP_COLUMNS) + "\n"


def steps_text(rows):
    """A whole <name>.steps.csv: its header and a line per row."""
    return ",".join(STEP_COLUMNS) + "\n" + "".join(step_line(row) for row in rows)


def read_steps(path):
    """The rows of a <name>.steps.csv, checked as parse_steps does."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise KerasCNNError(f"cannot read the per-step log {path}: {getattr(e, 'strerror', None) or e}") from None
    return parse_steps(text.splitlines(), path)


def parse_steps(lines, source):
    """Rows from the lines of a steps.csv, its header first, if they are as
    `fit` writes them: the columns STEP_COLUMNS, whole numbers for step,
    epoch, batch and seen, numbers for loss and accuracy, the steps rising;
    else an error naming `source`."""
    def fail(reason):
        raise KerasCNNError(f"cannot use the per-step log {source}: {reason}")

    if not lines:
        fail("the file is empty")
    if lines[0].strip().split(",") != list(STEP_COLUMNS):
        fail(f"its first line is not {','.join(STEP_COLUMNS)}, as `kerascnn fit --log-every` writes")
    rows = []
    for n, line in enumerate(lines[1:], 2):
        cells = line.strip().split(",")
        try:
            if len(cells) != len(STEP_COLUMNS):
                raise ValueError
            row = {k: int(v) if k in STEP_INTS else float(v) for k, v in zip(STEP_COLUMNS, cells)}
        except ValueError:
            fail(f"line {n} is not {len(STEP_COLUMNS)} numbers: {line[:60]!r}")
        if rows and row["step"] <= rows[-1]["step"]:
            fail(f"line {n}: step {row['step']} does not follow step {rows[-1]['step']}")
        rows.append(row)
    return rows


def read_checkpoint_state(path):
    """The training state inside a checkpoint ({} for a final model), the
    parts a Run reads checked: a damaged one is an error."""
    state = storage.read_state(path) or {}
    callbacks = state.get("callbacks", {})
    history = callbacks.get("history", {}) if isinstance(callbacks, dict) else {}
    for what, part in (("config", state.get("config", {})), ("callbacks", callbacks), ("history", history)):
        if not isinstance(part, dict):
            raise KerasCNNError(f"the training state in {path} is damaged: its {what} is not an object")
    if "config" in state:
        checked_record(state["config"], f"inside {path}")
    return state


def record_bases(path):
    """Model paths whose run.json may describe `path`: itself, then for a
    checkpoint its run's final model. (In <name>.partial/ a run is still
    going: its checkpoints' own state is its record.)"""
    if path.parent.name.endswith(".partial"):  # RunFiles.partial
        return
    yield path
    match = CHECKPOINT.match(path.name[: -len(storage.MODEL_SUFFIX)])
    if match:
        yield path.with_name(match["name"] + storage.MODEL_SUFFIX)


def record(given, resolved, **facts):
    """A run's record, as `<name>.run.json` and the checkpoints' state keep it."""
    return {"format": RUN_FORMAT, **resolved.to_dict(), "model_options": given.model_options(), **facts,
            "given": given.to_dict()}


def finished_record(record, history, test, *, steps_per_epoch, resumed_from=None):
    """The record of a finished run: `record` with what training (`history`'s
    rows) and the test evaluation (`test`: loss, accuracy) found."""
    return {**record, "epochs_run": len(history), "resumed_from": resumed_from or None,
            "steps_per_epoch": steps_per_epoch, "train_seconds": round(sum(r["seconds"] for r in history), 2),
            "test_loss": float(test["loss"]), "test_accuracy": float(test["accuracy"])}


def checkpoint_state(run_id, epoch, record, callbacks, seed_generators, status="running"):
    """The training state a checkpoint keeps beside its model (what `--resume`
    continues from): the run's id and record, the epochs done, the callbacks'
    states and the model's random generators."""
    return {"version": 1, "run_id": run_id, "status": status, "epoch": epoch, "config": record,
            "callbacks": callbacks, "seed_generators": seed_generators}


def mismatches(saved, current):
    """The options (as the user spells them) a resumed run does not share
    with the run it continues; both arguments are run records."""
    saved, current = upgrade(saved), with_added(current)
    differ = []
    for name, field in FIELDS.items():
        key = "input_shape" if name == "image_size" else name
        if field.metadata["match"] and not _same(saved.get(key), current.get(key)):
            differ.append(spell(name))
    if current.get("schedule") in ("cosine", "onecycle") and saved.get("epochs") != current.get("epochs"):
        differ.append(f"{spell('epochs')} (the {current['schedule']} schedule spans them)")
    return differ


def _same(a, b):
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-6)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b
