"""kerascnn.studies.study and kerascnn.studies.presets: variants from --vary (grid and
one-at-a-time), study files and presets; the runner's seeds, failures,
resuming and shards."""

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from kerascnn.cli.commands import cli
from kerascnn.config.spelling import OptionError
from kerascnn.errors import KerasCNNError
from kerascnn.runs.files import StudyFolder
from kerascnn.studies.study import Study, Variant, make_study, parse_shard, parse_vary, run_study
from tests.conftest import REPO

TINY = dict(dataset="digits", epochs=1, train_size=128, batch_size=64)


def labels(study):
    return [v.label for v in study.variants]


def run_status(folder, run):
    return StudyFolder(folder).run_status(run.folder, run.name)


def test_parse_vary_reads_values_as_fit_does():
    assert parse_vary("pool=avg,max") == ("pool", ["avg", "max"])
    assert parse_vary("channels=6/16,16/32") == ("channels", [(6, 16), (16, 32)])
    assert parse_vary("lr=1e-3,0.01") == ("lr", [0.001, 0.01])
    assert parse_vary("--batch-size=32,64") == ("batch_size", [32, 64])
    assert parse_vary("batchnorm=true,false") == ("batchnorm", [True, False])
    for text, message in [("pool", "expects OPTION=VALUE,VALUE"), ("colour=red", "'colour' is not an option"),
                          ("seed=1,2", "'seed' is not an option a study can vary"),
                          ("pool=avg,mean", "unknown pooling 'mean'"), ("channels=6/16/32", "expects 2 values")]:
        with pytest.raises(OptionError, match=message):
            parse_vary(text)


def test_grid_is_every_combination():
    s = make_study(vary=["activation=sigmoid,relu", "pool=avg,max"], **TINY)
    assert labels(s) == ["activation=sigmoid, pool=avg", "activation=sigmoid, pool=max",
                         "activation=relu, pool=avg", "activation=relu, pool=max"]
    assert s.variants[1].options == {"activation": "sigmoid", "pool": "max"}
    assert s.baseline == TINY and s.seeds == (0,) and s.name == "study"
    assert [(r.label, r.seed, r.folder, r.name) for r in make_study(vary=["pool=avg,max"], seeds=2, seed=5).runs()] == [
        ("pool=avg", 5, "runs/pool=avg-s5", "lenet"), ("pool=avg", 6, "runs/pool=avg-s6", "lenet"),
        ("pool=max", 5, "runs/pool=max-s5", "lenet"), ("pool=max", 6, "runs/pool=max-s6", "lenet")]


def test_ablation_changes_one_option_at_a_time_against_the_baseline():
    # LeNet's own defaults are sigmoid, avg, kernel 5: those values are the baseline, not variants
    s = make_study(vary=["activation=sigmoid,relu", "pool=avg,max", "kernel=5,7"], ablate=True, **TINY)
    assert [(v.label, v.options) for v in s.variants] == [
        ("baseline", {}), ("activation=relu", {"activation": "relu"}), ("pool=max", {"pool": "max"}),
        ("kernel=7", {"kernel": 7})]
    # a baseline given on the command line
    s = make_study(vary=["pool=avg,max"], ablate=True, pool="max", **TINY)
    assert [(v.label, v.options) for v in s.variants] == [("baseline", {}), ("pool=avg", {"pool": "avg"})]
    with pytest.raises(OptionError, match="ablate=True needs vary"):
        make_study(ablate=True)


@pytest.mark.parametrize("suffix, text", [
    (".toml", """
        name = "pools"
        [baseline]
        dataset = "digits"
        activation = "relu"
        epochs = 2
        [[variants]]
        label = "average"
        pool = "avg"
        [[variants]]
        label = "max, wide"
        options = { pool = "max", channels = [16, 32] }
        """),
    (".yaml", """
        name: pools
        baseline: {dataset: digits, activation: relu, epochs: 2}
        variants:
          - {label: average, pool: avg}
          - label: max, wide
            options: {pool: max, channels: [16, 32]}
        """)])
def test_study_files(tmp_path, suffix, text):
    path = tmp_path / f"pools{suffix}"
    path.write_text(textwrap.dedent(text))
    s = make_study(file=path, seeds=2, epochs=1)
    assert s.name == "pools" and s.seeds == (0, 1)
    assert s.baseline == {"dataset": "digits", "activation": "relu", "epochs": 1}  # the command line wins
    assert [(v.label, v.options) for v in s.variants] == [
        ("average", {"pool": "avg"}), ("max, wide", {"pool": "max", "channels": (16, 32)})]
    assert s.runs()[2].folder == "runs/max_wide-s0"


@pytest.mark.parametrize("text, message", [
    ("[baseline]\nepochs = 1\n", "a list of `variants`"),
    ("[[variants]]\npool = 'max'\n", "variant 1 needs a label"),
    ("[[variants]]\nlabel = 'a'\ncolour = 'red'\n", "variant 'a': unknown option 'colour'"),
    ("[[variants]]\nlabel = 'a'\nseed = 3\n", "seed is set by the study for each run"),
    ("[[variants]]\nlabel = 'a'\nlr = -1\n", "lr must be positive"),
    ("[[variants]]\nlabel = 'a'\n[[variants]]\nlabel = 'a'\n", "the label 'a' names two variants"),
])
def test_bad_study_files(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(OptionError, match=message):
        make_study(file=path)


def test_presets_expand_to_the_runs_described():
    s = make_study("lenet-ablation", seeds=3)
    assert s.baseline == dict(arch="lenet", dataset="fashion_mnist", activation="sigmoid", pool="avg", kernel=5,
                              channels=(6, 16), batchnorm=False, optimizer="adamw", lr=1e-3, beta1=0.9, beta2=0.999,
                              weight_decay=0.01, batch_size=256, epochs=10)
    assert [v.options for v in s.variants] == [{}, {"activation": "relu"}, {"batchnorm": True}, {"kernel": 7},
                                               {"channels": (16, 32)}, {"pool": "max"}, {"l2": 5e-4}]
    assert len(s.runs()) == 21 and s.preset == "lenet-ablation"

    s = make_study("lenet5-mnist")
    c = s.config(s.variants[0], 0)
    assert (c.dataset, c.activation, c.pool, c.padding, c.image_size, c.resize) == (
        "mnist", "relu", "max", "valid", 32, "pad")
    assert (c.optimizer, c.lr, c.batch_size, c.schedule, c.decay_rate, c.decay_after, c.epochs, c.val_size,
            c.sampling) == ("adam", 1e-3, 200, "step", 0.8, 10, 40, 1000, "sequential")
    assert [v.options for v in s.variants[1:]] == [{"sampling": "bootstrap"}, {"schedule": "constant"}]

    s = make_study("lecture", seeds=3)
    c = s.config(s.variants[0], 2)
    assert (c.dataset, c.activation, c.pool, c.normalize, c.batch_size, c.val_size, c.sampling) == (
        "fashion_mnist", "sigmoid", "avg", "half", 64, 0, "shuffle")
    assert (c.optimizer, c.lr, c.momentum, c.epochs, c.seed) == ("momentum", 0.01, 0.9, 10, 2) and len(s.runs()) == 3

    s = make_study("optimizers")
    configs = [s.config(v, 0) for v in s.variants]
    assert [(c.arch, c.optimizer) for c in configs] == [
        (a, o) for a in ("lenet", "alexnet", "resnet18", "mobilenet", "vgg16") for o in ("momentum", "adagrad")]
    assert {(c.dataset, c.lr, c.momentum) for c in configs} == {("mnist", 0.01, 0.9)}
    assert {(c.activation, c.pool) for c in configs if c.arch == "lenet"} == {("relu", "max")}  # the report's LeNet

    s = make_study("optimizer-sweep")
    configs = [s.config(v, 0) for v in s.variants]
    assert len(configs) == 5 * 2 * 4 and {c.lr for c in configs} == {0.003, 0.01, 0.03, 0.1}
    assert s.variants[0].label == "lenet SGD+momentum lr 0.003" and configs[0].activation == "relu"

    s = make_study("modern-cnns", epochs=1, train_size=500)
    assert [(c.arch, c.dataset, c.epochs, c.train_size, c.image_size) for c in
            (s.config(v, 0) for v in s.variants)] == [
        (a, "fashion_mnist", 1, 500, None) for a in ("vgg11", "nin", "googlenet", "resnet18")]
    with pytest.raises(OptionError, match="unknown preset 'lenet9'; choose one of: lenet-ablation"):
        make_study("lenet9")


def test_parse_shard():
    assert parse_shard("0/4") == (0, 4) and parse_shard(" 3 / 4 ") == (3, 4)
    for text in ("4/4", "1", "a/b", "-1/2"):
        with pytest.raises(OptionError, match="expects I/N with 0 <= I < N"):
            parse_shard(text)


def test_a_failing_variant_is_recorded_and_the_others_run(tmp_path):
    s = Study("s", dict(TINY, activation="relu"), (Variant("ok", {}), Variant("too big", {"kernel": 31})), (0,))
    lines = []
    rows = run_study(s, tmp_path, echo=lines.append)
    assert (tmp_path / "runs/ok-s0/lenet.keras").is_file()
    failed = json.loads((tmp_path / "runs/too_big-s0/failed.json").read_text())
    assert failed["seed"] == 0 and failed["error"].startswith("kernel 31 does not fit a 28x28 input")
    assert lines[0] == "study s: 2 variants x 1 seed = 2 runs in " + str(tmp_path) + "/; 0 done, 2 to run"
    assert lines[1].startswith("[1/2] ok seed 0: test accuracy ") and "left" in lines[1]
    assert lines[2].startswith("[2/2] too big seed 0: failed: kernel 31 does not fit")
    assert [r["label"] for r in rows] == ["ok", "too big"]


def test_rerunning_keeps_finished_runs_and_continues_an_interrupted_one(tmp_path):
    import keras

    from kerascnn.training.fit import fit

    s = Study("s", dict(TINY, epochs=2, activation="relu"), (Variant("a", {}), Variant("b", {"pool": "avg"})), (0,))
    first, second = s.runs()

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise KeyboardInterrupt

    with pytest.raises(KerasCNNError, match="interrupted after epoch 1"):
        fit(s.config(s.variants[1], 0, tmp_path / second.folder), callbacks=[Interrupt()], verbose=0)
    assert run_status(tmp_path, first) == "pending" and run_status(tmp_path, second) == "interrupted"
    lines = []
    run_study(s, tmp_path, echo=lines.append)
    assert lines[0].endswith("0 done, 2 to run")
    record = json.loads((tmp_path / second.folder / "lenet.run.json").read_text())
    assert record["resumed_from"] == 1 and record["epochs_run"] == 2  # continued, not started over
    stamps = {r.folder: (tmp_path / r.folder / "lenet.keras").stat().st_mtime_ns for r in (first, second)}
    lines = []
    run_study(s, tmp_path, echo=lines.append)
    assert lines[0].endswith("2 done, 0 to run") and not [x for x in lines if x.startswith("[")]
    assert {r.folder: (tmp_path / r.folder / "lenet.keras").stat().st_mtime_ns for r in (first, second)} == stamps


class Killed(BaseException):
    """A kill at one point of a run's final save: no handler of the runner catches it."""


# Each point of fit's final save, in order: (what is being written, which call writes it)
SAVE_POINTS = {"model": "save_model", "history.csv": "write_csv", "history.json": "write_json",
               "run.json": "write_json", "promote": "replace"}


@pytest.mark.parametrize("point", list(SAVE_POINTS))
def test_a_run_cut_short_in_its_final_save_is_finished_by_the_next_study(tmp_path, monkeypatch, point):
    from kerascnn.runs import storage
    from kerascnn.studies import report

    s = Study("s", dict(TINY), (Variant("a", {}),), (0,))
    (run,) = s.runs()
    folder = StudyFolder(tmp_path)
    files = folder.run_files(run.folder, run.name)
    target = {"model": files.model, "history.csv": files.history_csv, "history.json": files.history_json,
              "run.json": files.record}.get(point)
    name = SAVE_POINTS[point]
    real = os.replace if name == "replace" else getattr(storage, name)

    def cut(*args, **kwargs):
        path = Path(args[1] if name == "save_model" else args[0])  # save_model(model, path), the others (path, ...)
        promoting = name == "replace" and path.parent == files.partial and Path(args[1]).parent == files.folder
        if promoting or name != "replace" and path == target:
            raise Killed(point)
        return real(*args, **kwargs)

    monkeypatch.setattr(os if name == "replace" else storage, name, cut)
    with pytest.raises(Killed):
        run_study(s, tmp_path, echo=None)
    monkeypatch.undo()
    finished = point == "promote"  # run.json, written last, is there: the run is done, its checkpoints still aside
    entry = {"label": run.label, "seed": run.seed, "folder": run.folder, "name": run.name}
    assert folder.run_status(run.folder, run.name) == ("done" if finished else "interrupted")
    assert report.run_outcome(tmp_path, entry)[0] == ("done" if finished else "pending")

    lines = []
    run_study(s, tmp_path, echo=lines.append)
    assert lines[0].endswith("1 done, 0 to run" if finished else "0 done, 1 to run")
    assert folder.run_status(run.folder, run.name) == "done" and report.run_outcome(tmp_path, entry)[0] == "done"
    record = json.loads(files.record.read_text())
    assert record["epochs_run"] == 1 and record["resumed_from"] == (None if finished else 1)  # finished, not redone


def test_a_folder_holding_another_study_is_refused(tmp_path):
    run_study(Study("one", dict(TINY), (Variant("a", {"activation": "relu"}),)), tmp_path, echo=None)
    with pytest.raises(KerasCNNError, match="holds another study \\('one'"):
        run_study(Study("two", dict(TINY), (Variant("a", {"activation": "tanh"}),)), tmp_path, echo=None)


@pytest.mark.parametrize("text, message", [
    ("{not json", "cannot read .*study.json"),
    ('{"format": 1, "variants": [{"label": 3}], "runs": []}', "study.json is damaged"),
])
def test_a_damaged_study_file_is_refused_as_the_report_refuses_it(tmp_path, text, message):
    from kerascnn.studies.study import open_study

    (tmp_path / "study.json").write_text(text)
    with pytest.raises(KerasCNNError, match=f"{message}.*; remove it to start the study over"):
        open_study(Study("one", dict(TINY), (Variant("a", {"activation": "relu"}),)), tmp_path)


def test_shards_split_the_runs(tmp_path):
    s = Study("s", dict(TINY, activation="relu"), (Variant("a", {}), Variant("b", {"pool": "avg"})), (0, 1))
    run_study(s, tmp_path, shard=(1, 2), echo=None)
    assert [run_status(tmp_path, r) for r in s.runs()] == ["pending", "done", "pending", "done"]
    run_study(s, tmp_path, shard=(0, 2), echo=None)
    assert {run_status(tmp_path, r) for r in s.runs()} == {"done"}


def test_two_shards_in_two_processes_make_one_study(tmp_path):
    """What a SLURM job array or an indexed Kubernetes job does: N processes,
    one study folder, `--shard I/N` each; `kerascnn report` merges."""
    args = ["study", "--vary", "pool=avg,max", "--activation", "relu", "--dataset", "digits", "--epochs", "1",
            "--train-size", "128", "--batch-size", "64", "--seeds", "2", "--output", str(tmp_path / "st")]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3")
    shards = [subprocess.Popen([sys.executable, str(REPO / "cli.py"), *args, "--shard", f"{i}/2"], env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(2)]
    outputs = [p.communicate(timeout=600) for p in shards]
    assert [p.returncode for p in shards] == [0, 0], outputs
    assert all(err == "" for _, err in outputs)
    trained = sorted(line.split(": ")[0].split("] ")[1] for out, _ in outputs for line in out.splitlines()
                     if line.startswith("["))
    assert trained == ["pool=avg seed 0", "pool=avg seed 1", "pool=max seed 0", "pool=max seed 1"]  # each run once, by one shard
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "st")])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((tmp_path / "st/results.csv").open()))
    assert [(r["label"], r["runs_done"], r["runs_pending"]) for r in rows] == [("pool=avg", "2", "0"), ("pool=max", "2", "0")]


@pytest.mark.parametrize("args, message", [
    ((), "a study needs variants: --preset, a study file, or --vary"),
    (("--preset", "nope"), "--preset: unknown preset 'nope'"),
    (("--vary", "pool=avg", "--shard", "2/2"), "--shard expects I/N with 0 <= I < N"),
    (("--vary", "pool=avg", "--seeds", "0"), "--seeds must be at least 1"),
    (("--vary", "pool=avg,mean"), "unknown pooling 'mean'"),
])
def test_study_mistakes_on_the_command_line(args, message, tmp_path):
    result = CliRunner().invoke(cli, ["study", *args, "--output", str(tmp_path / "st")])
    assert result.exit_code == 2 and message in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "st").exists()


def test_missing_data_stops_the_study_before_its_first_run(tmp_path, monkeypatch):
    monkeypatch.delenv("KERASCNN_DATA_DIR", raising=False)
    args = ["study", "--vary", "pool=avg,max", "--dataset", "mnist", "--output", str(tmp_path / "st")]
    result = CliRunner().invoke(cli, [*args, "--data-dir", str(tmp_path / "nowhere")])
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert f"error: data directory {tmp_path / 'nowhere'} does not exist" in result.stderr
    (tmp_path / "data").mkdir()
    result = CliRunner().invoke(cli, [*args, "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 1 and f"no mnist/ folder in {tmp_path / 'data'}" in result.stderr
    assert result.stdout == "" and not (tmp_path / "st").exists()


def test_study_on_the_command_line(tmp_path):
    result = CliRunner().invoke(cli, ["study", "--vary", "activation=relu,tanh", "--dataset", "digits", "--epochs", "1",
                                      "--train-size", "128", "--seeds", "2", "--seed", "3", "--output",
                                      str(tmp_path)])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "study.json").read_text())
    assert record["seeds"] == [3, 4] and record["baseline"] == {"dataset": "digits", "epochs": 1, "train_size": 128}
    assert [v["label"] for v in record["variants"]] == ["activation=relu", "activation=tanh"]
    assert sum(line.startswith("[") for line in result.stdout.splitlines()) == 4
    assert (tmp_path / "results.md").is_file() and (tmp_path / "report.html").is_file()


def test_importing_the_study_modules_loads_no_keras():
    import subprocess
    import sys

    code = "import sys, kerascnn.studies.study, kerascnn.studies.presets; print(any(m in sys.modules for m in ('keras', 'tensorflow')))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_on_a_cpu_a_study_says_which_families_train_small():
    from kerascnn.studies.study import cpu_sizes
    from kerascnn.runtime.distribution import accelerator_available

    if accelerator_available():
        pytest.skip("an accelerator is visible: the families train at their textbook sizes")
    assert cpu_sizes(make_study("modern-cnns")) == (
        "no GPU visible: vgg11, nin, googlenet, resnet18 train at their smallest sizes (32, 67, 32, 32), not their "
        "textbook ones (224, 224, 96, 96); image_size N to insist")
    assert cpu_sizes(make_study("modern-cnns", image_size=96)) is None
    assert cpu_sizes(make_study("lenet-ablation")) is None
