"""kerascnn.runs.files: a run's file names, whether its final save completed, and what a resumed run must
share with the run it continues."""

import json
import re

import numpy as np

from kerascnn.runs import storage
from kerascnn.config.options import RUN_FORMAT
from kerascnn.config.spelling import cli_spelling
import pytest

from kerascnn.errors import KerasCNNError
from kerascnn.runs.files import RunFiles, mismatches, read_steps, step_line


def fake_model(path, run_id):
    """A .keras file with only the training state entry (all RunFiles.done reads of a model)."""
    import zipfile

    with zipfile.ZipFile(path, "w") as z:
        z.writestr(storage.STATE_ENTRY, json.dumps({"run_id": run_id}))


def test_run_files_names_every_file_of_a_run(tmp_path):
    files = RunFiles.of(tmp_path / "lenet.keras")
    assert (files.folder, files.name) == (tmp_path, "lenet")
    assert [p.name for p in (files.model, files.record, files.history_json, files.history_csv, files.activations,
                             files.checkpoint("best"), files.checkpoint(files.epoch_kind(7)))] == [
        "lenet.keras", "lenet.run.json", "lenet.history.json", "lenet.history.csv", "lenet.activations.npz",
        "lenet.best.keras", "lenet.epoch-007.keras"]
    assert files.partial == tmp_path / "lenet.partial"
    assert files.in_progress("last") == tmp_path / "lenet.partial" / "last.keras"
    assert files.in_progress("activations") == tmp_path / "lenet.partial" / "activations.npz"
    assert files.finished_name(files.in_progress("best")) == files.checkpoint("best")
    assert files.finished_name(files.in_progress("steps")) == files.steps_csv == tmp_path / "lenet.steps.csv"
    assert files.existing() == [] and files.status() == "none"


def test_a_run_is_done_only_when_its_final_save_completed(tmp_path):
    files = RunFiles(tmp_path, "lenet")
    files.partial.mkdir()
    fake_model(files.in_progress("last"), "new")
    assert files.status() == "interrupted"
    fake_model(files.model, "new")  # the model saved, then a kill
    assert files.status() == "interrupted"
    files.history_json.write_text("[]")
    files.record.write_text(json.dumps({"run_id": "old", "test_accuracy": 0.5}))  # an earlier run's record
    assert files.status() == "interrupted"
    files.record.write_text(json.dumps({"run_id": "new", "test_accuracy": None}))
    assert not files.done()
    files.record.write_text(json.dumps({"run_id": "new", "test_accuracy": 0.5}))
    assert files.status() == "done"  # also before its checkpoints are moved out of <name>.partial/
    files.record.write_text("{damaged")
    assert not files.done() and files.status() == "interrupted"
    assert [p.name for p in files.existing()] == ["lenet.keras", "lenet.history.json", "lenet.run.json"]


def test_resume_names_what_differs():
    saved = {"arch": "lenet", "batch_size": 64, "lr": 1e-3, "activation": "relu", "input_shape": [28, 28, 1],
             "format": RUN_FORMAT, "given": {}}
    current = {**saved, "batch_size": 32, "lr": float(np.float32(1e-3)), "activation": "tanh"}
    assert mismatches(saved, current) == ["activation", "batch_size"]
    with cli_spelling():
        assert mismatches(saved, {**current, "input_shape": [32, 32, 1]}) == \
            ["--activation", "--image-size", "--batch-size"]


HEADER = "step,epoch,batch,seen,loss,accuracy\n"


def test_steps_csv_reads_back_exactly_what_was_written(tmp_path):
    rows = [{"step": 3, "epoch": 1, "batch": 3, "seen": 192, "loss": 2.2949817180633545, "accuracy": 0.171875},
            {"step": 6, "epoch": 2, "batch": 1, "seen": 64, "loss": 1 / 3, "accuracy": 0.3023255810488102}]
    (tmp_path / "ok.csv").write_text(HEADER + "".join(map(step_line, rows)))
    assert read_steps(tmp_path / "ok.csv") == rows


@pytest.mark.parametrize("text, reason", [
    ("", "the file is empty"),
    ("epoch,loss\n1,2.0\n", "its first line is not step,epoch,batch,seen,loss,accuracy"),
    (HEADER + "3,1,3,192,2.2\n", "line 2 is not 6 numbers: '3,1,3,192,2.2'"),
    (HEADER + "3,1,3,192,2.2,x\n", "line 2 is not 6 numbers"),
    (HEADER + "3.5,1,3,192,2.2,0.5\n", "line 2 is not 6 numbers"),
    (HEADER + "6,2,1,64,2.0,0.5\n3,1,3,192,2.2,0.5\n", "line 3: step 3 does not follow step 6"),
])
def test_a_damaged_steps_csv_is_one_clear_error(tmp_path, text, reason):
    (tmp_path / "lenet.steps.csv").write_text(text)
    with pytest.raises(KerasCNNError, match=re.escape(f"cannot use the per-step log {tmp_path}/lenet.steps.csv: "
                                                      f"{reason}")):
        read_steps(tmp_path / "lenet.steps.csv")
    with pytest.raises(KerasCNNError, match="cannot read the per-step log .*nowhere.csv: No such file"):
        read_steps(tmp_path / "nowhere.csv")
