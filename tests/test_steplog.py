"""kerascnn.training.steplog: the training loss and accuracy every N steps (fit --log-every), recovered from Keras'
running means, checked against each batch's own loss, and continued exactly by a resumed run."""

import numpy as np
import pytest

from kerascnn.errors import KerasCNNError
from kerascnn.runs.files import read_steps
from kerascnn.training.steplog import StepLog


def feed(log, epochs, *, batch_size, samples, calls=1, first_epoch=0):
    """Give `log` the running means Keras would log for these per-batch (loss, accuracy) pairs, one list per
    epoch, reported once every `calls` batches."""
    sizes = [batch_size] * (len(epochs[0]) - 1) + [samples - batch_size * (len(epochs[0]) - 1)]
    log.params = {"steps": len(epochs[0])}
    for e, pairs in enumerate(epochs, start=first_epoch):
        log.on_epoch_begin(e)
        for b in range(calls - 1, len(pairs), calls):
            means = {k: float(np.float32(np.dot([p[i] for p in pairs[:b + 1]], sizes[:b + 1]) / sum(sizes[:b + 1])))
                     for i, k in enumerate(("loss", "accuracy"))}
            log.on_train_batch_end(b, means)
    return sizes


def expected_rows(epochs, sizes, every):
    """The rows by their definition: each image-weighted mean over the `every` steps up to its step."""
    flat = [(e + 1, b + 1, size, pair) for e, pairs in enumerate(epochs) for b, (size, pair) in
            enumerate(zip(sizes, pairs))]
    rows = []
    for step in range(every, len(flat) + 1, every):
        window = flat[step - every:step]
        weights = [size for _, _, size, _ in window]
        epoch, batch = window[-1][:2]
        rows.append({"step": step, "epoch": epoch, "batch": batch, "seen": sum(sizes[:batch]),
                     "loss": np.average([p[0] for *_, p in window], weights=weights),
                     "accuracy": np.average([p[1] for *_, p in window], weights=weights)})
    return rows


def same_rows(got, want):
    assert [{k: r[k] for k in ("step", "epoch", "batch", "seen")} for r in got] == \
        [{k: r[k] for k in ("step", "epoch", "batch", "seen")} for r in want]
    for g, w in zip(got, want):
        assert g["loss"] == pytest.approx(w["loss"], rel=1e-6) and g["accuracy"] == pytest.approx(w["accuracy"],
                                                                                                  abs=1e-6)


RNG = np.random.default_rng(0)
EPOCHS = [[(float(RNG.uniform(0.2, 3.0)), float(RNG.uniform(0, 1))) for _ in range(6)] for _ in range(3)]


@pytest.mark.parametrize("every, calls", [(1, 1), (4, 1), (4, 2), (6, 3)])
def test_rows_are_the_means_of_their_steps(tmp_path, every, calls):
    """Six batches an epoch, the last short (35 images of 20 each, 5 of the last), three epochs: each row is
    the image-weighted mean of its steps, across epoch ends too; several steps a call report once per call."""
    log = StepLog(tmp_path / "steps.csv", every, 20, 105)
    sizes = feed(log, EPOCHS, batch_size=20, samples=105, calls=calls)
    rows = read_steps(tmp_path / "steps.csv")
    same_rows(rows, expected_rows(EPOCHS, sizes, every))
    assert [r["step"] for r in rows] == list(range(every, 19, every))


def test_the_lecture_line_for_each_row(tmp_path):
    lines = []
    log = StepLog(tmp_path / "steps.csv", 2, 20, 105, echo=lines.append)
    feed(log, EPOCHS[:1], batch_size=20, samples=105)
    loss = np.average([p[0] for p in EPOCHS[0][4:]], weights=[20, 5])
    assert lines[0] == f"loss: {np.mean([p[0] for p in EPOCHS[0][:2]]):.6f}  [   40/  105]"
    assert lines[2] == f"loss: {loss:.6f}  [  105/  105]" and len(lines) == 3


def test_a_resumed_log_keeps_its_rows_to_the_checkpoint_and_goes_on_exactly(tmp_path):
    """After epoch 1 a row is half done (steps 5-6 of 8); a kill in epoch 2 leaves rows past the checkpoint
    and half a line. The resumed log drops them, carries the half row in its state and ends as one whole."""
    whole = StepLog(tmp_path / "whole.csv", 4, 20, 105)
    feed(whole, EPOCHS, batch_size=20, samples=105)
    cut = StepLog(tmp_path / "cut.csv", 4, 20, 105)
    feed(cut, EPOCHS[:1], batch_size=20, samples=105)
    state = cut.get_state()
    assert state["carry"]["images"] == 25
    feed(cut, [EPOCHS[1][:4]], batch_size=20, samples=105, first_epoch=1)  # killed after step 10 ...
    with open(tmp_path / "cut.csv", "a") as f:
        f.write("12,2,6,10")  # ... and in a line
    resumed = StepLog(tmp_path / "cut.csv", 4, 20, 105)
    resumed.set_state(state)
    resumed.resume_from(1, tmp_path / "cut.csv")
    resumed.params = {"steps": 6}
    resumed.on_train_begin()
    assert [r["step"] for r in read_steps(tmp_path / "cut.csv")] == [4]
    feed(resumed, EPOCHS[1:], batch_size=20, samples=105, first_epoch=1)
    assert read_steps(tmp_path / "cut.csv") == read_steps(tmp_path / "whole.csv")


def test_a_resume_without_the_rows_it_needs_is_an_error(tmp_path):
    log = StepLog(tmp_path / "steps.csv", 4, 20, 105)
    log.params = {"steps": 6}
    log.resume_from(2, tmp_path / "gone.csv")
    with pytest.raises(KerasCNNError, match=r"gone.csv is missing: resuming after epoch 2 needs its first 3 rows "
                                            r"\(to step 12\); start over with overwrite=True"):
        log.on_train_begin()
    (tmp_path / "short.csv").write_text("step,epoch,batch,seen,loss,accuracy\n4,1,4,80,1.0,0.5\n")
    log.resume_from(2, tmp_path / "short.csv")
    with pytest.raises(KerasCNNError, match="short.csv does not match its checkpoint"):
        log.on_train_begin()


def batch_losses(options, epochs):
    """(images, loss, accuracy) of every training batch, in order, from train_on_batch on the model, optimizer
    and batches fit starts from: the losses computed without Keras' running means."""
    from kerascnn.runtime.distribution import run_scope
    from kerascnn.training.plan import make_plan

    plan = make_plan("lenet", options={**options, "steps_per_execution": 1, "log_every": 0})
    with run_scope(plan.settings):
        model = plan.model()
        steps = plan.steps_per_epoch
        found = []
        for _, (x, y) in zip(range(steps * epochs), plan.loader("train")):
            logs = model.train_on_batch(x, y, return_dict=True)
            found.append((len(y), float(logs["loss"]), float(logs["accuracy"])))
    return found, steps


@pytest.mark.core
@pytest.mark.parametrize("every", [1, 4])
def test_fit_logs_each_batchs_own_loss(tmp_path, every):
    """350 digits in batches of 64: 6 steps an epoch, the last of 30 images. Each row of a real run equals
    the image-weighted mean of the losses and accuracies train_on_batch finds for its batches, replayed from
    the same start; with every=4 tensorflow runs 2 steps a call."""
    from kerascnn.training.fit import fit

    options = dict(dataset="digits", batch_size=64, train_size=350, activation="relu", pool="max", epochs=2,
                   seed=1)
    r = fit("lenet", **options, log_every=every, output=tmp_path, verbose=0)
    found, steps = batch_losses(options, 2)
    assert steps == 6 and [n for n, _, _ in found[:6]] == [64] * 5 + [30]
    if every == 4 and r.record["backend"] == "tensorflow":
        assert r.settings.steps_per_execution == 2
    rows = read_steps(tmp_path / "lenet.steps.csv")
    assert [(row["step"], row["epoch"], row["batch"], row["seen"]) for row in rows] == [
        (s, (s - 1) // 6 + 1, (s - 1) % 6 + 1, min(350, 64 * ((s - 1) % 6 + 1))) for s in range(every, 13, every)]
    for row in rows:
        n, loss, accuracy = (np.array(v) for v in zip(*found[row["step"] - every:row["step"]]))
        assert row["loss"] == pytest.approx(np.average(loss, weights=n), rel=1e-5)
        assert row["accuracy"] == pytest.approx(np.average(accuracy, weights=n), abs=1e-6)
    assert rows[-1]["loss"] < rows[0]["loss"]


def test_extending_a_finished_run_continues_its_log(tmp_path):
    """--resume with more --epochs continues <name>.steps.csv from the finished run's rows: the same rows as
    a run that trained all its epochs at once."""
    from kerascnn.training.fit import fit

    options = dict(dataset="digits", batch_size=64, train_size=350, activation="relu", pool="max", log_every=4,
                   verbose=0)
    fit("lenet", epochs=2, output=tmp_path / "whole", **options)
    fit("lenet", epochs=1, output=tmp_path / "cut", **options)
    fit("lenet", epochs=2, output=tmp_path / "cut", resume=True, **options)
    cut, whole = (read_steps(tmp_path / folder / "lenet.steps.csv") for folder in ("cut", "whole"))
    same_rows(cut, whole)
    assert [row["step"] for row in cut] == [4, 8, 12]


def test_calls_are_read_in_the_order_they_began_however_their_threads_finish(tmp_path):
    """Keras' callback threads may hand a BatchLogReader its calls' logs out of order: each waits for the
    calls begun before it. Calls of 2 steps (ends 1, 3, 5, 7) finishing as 3, 1, 7, 5 are read as 1, 3, 5, 7;
    a reader driven without on_train_batch_begin reads each at once."""
    from kerascnn.training.steplog import BatchLogReader

    class Reader(BatchLogReader):
        def __init__(self):
            super().__init__()
            self.read = []

        def on_batch_logs(self, batch, logs):
            self.read.append((batch, logs["loss"]))

    reader = Reader()
    reader.on_epoch_begin(0)
    for begin in (0, 2, 4, 6):
        reader.on_train_batch_begin(begin)
    for end in (3, 1):
        reader.on_train_batch_end(end, {"loss": float(end)})
    assert reader.read == [(1, 1.0), (3, 3.0)]
    reader.on_train_batch_end(7, {"loss": 7.0})
    assert len(reader.read) == 2  # 5 is still running
    reader.on_train_batch_end(5, {"loss": 5.0})
    assert [b for b, _ in reader.read] == [1, 3, 5, 7]
    by_hand = Reader()
    by_hand.on_epoch_begin(0)
    by_hand.on_train_batch_end(3, {"loss": 3.0})
    assert by_hand.read == [(3, 3.0)]


def test_the_loop_waits_once_it_is_ahead_of_the_reading():
    """A training loop AHEAD steps past the last call read waits in on_train_batch_begin (the device still has
    those steps queued) until a call is read, so that a stop asked for by a reader comes within that many
    steps."""
    import threading

    from kerascnn.training.steplog import BatchLogReader

    class Reader(BatchLogReader):
        AHEAD = 2

        def on_batch_logs(self, batch, logs):
            pass

    reader = Reader()
    reader.on_epoch_begin(0)
    for begin in (0, 1, 2):  # the two ahead of call 0 start at once
        reader.on_train_batch_begin(begin)
    loop = threading.Thread(target=reader.on_train_batch_begin, args=(3,))
    loop.start()
    loop.join(0.3)
    assert loop.is_alive()  # a third ahead waits ...
    reader.on_train_batch_end(0, {"loss": 1.0})
    loop.join(5)
    assert not loop.is_alive()  # ... until call 0 is read


@pytest.mark.core
def test_fit_waits_for_the_device_at_the_epochs_end_only(tmp_path):
    """Keras' conversions of tensor logs to floats on the training thread (each a wait for the device), per
    training step of a run with the per-step log, the divergence guard, the activation recorder and the
    progress bar: on jax and torch every kerascnn batch callback is async-safe, so only the epoch's end and
    its validation convert (2 in 60 steps; 1 a step before); tensorflow's Keras converts every batch's logs
    itself (its backend is not thread-safe), kerascnn adds none."""
    from kerascnn.training.callbacks import count_log_syncs
    from kerascnn.training.fit import fit

    with count_log_syncs() as syncs:
        r = fit("lenet", epochs=1, dataset="digits", batch_size=8, train_size=480, activation="relu", pool="max",
                log_every=5, record_layers=["conv1"], verbose=1, output=tmp_path)
    steps = r.record["steps_per_epoch"]
    assert steps == 60 and len(read_steps(tmp_path / "lenet.steps.csv")) == 12
    if r.record["backend"] == "tensorflow":
        assert syncs.conversions <= steps + 2
    else:
        assert syncs.per_step(steps) <= 0.1
