"""`fit`: train a registered architecture on a dataset and save the run.

`fit` reads as its stages: the run's plan (`kerascnn.training.plan.make_plan`:
the configuration, its data and everything resolved from them), the run
folder (or the run it resumes), the model, the callbacks, training
(`train`), and the files of the finished run (`finish`).
"""

import dataclasses
import sys
import uuid
from pathlib import Path

import numpy as np

from kerascnn.config.choices import SCHEDULE_DEFAULTS
from kerascnn.config.options import FitConfig
from kerascnn.config.spelling import spell, spell_set
from kerascnn.data.loader import model_inputs
from kerascnn.errors import KerasCNNError
from kerascnn.optim.optimizers import make_optimizer
from kerascnn.runs import storage
from kerascnn.runtime.distribution import (is_chief, reduce_scalars_across_workers, run_scope,
                                           symbolic_build_locally)
from kerascnn.training.plan import make_plan
from kerascnn.runs.files import RunFiles, checkpoint_state, finished_record, mismatches, record


@dataclasses.dataclass
class FitResult:
    """What `fit` returns: the trained model, its history, its test figures
    and where it was saved; `run` is the saved run as `evaluate`,
    `visualize` and reports read it (a `kerascnn.runs.saved.Run`)."""

    model: object
    history: list
    test_loss: float
    test_accuracy: float
    model_path: Path
    record: dict  # the run's record, as written to <name>.run.json
    settings: FitConfig = None  # the configuration as resolved
    chief: bool = True  # False on a multi-worker run's other workers, which write nothing

    @property
    def config(self):
        """The run's record (`record`; this older name stays for existing code)."""
        return self.record

    @property
    def run(self):
        """The saved run (None on a multi-worker run's other workers)."""
        if not self.chief:
            return None
        from kerascnn.runs.saved import Run

        return Run(self.model_path, self.record, self.history)

    @property
    def paths(self):
        """The files of the run that exist (RunFiles.existing; none on a
        worker other than the chief)."""
        return RunFiles.of(self.model_path).existing() if self.chief else []


def fit(config=None, dataset=None, *, callbacks=(), verbose="auto", **options):
    """Train a model and save the run to `<output>/<name>.*`.

    `config` is an architecture name ("lenet"), a FitConfig, or the path of a
    configuration to replay (a run's `<name>.run.json`, or a .toml/.yaml
    file); `dataset` and keyword `options` (any FitConfig field) override
    it. Replaying into the folder and name of an existing run needs
    `overwrite=True` (or `resume=True`).

    Options left None take the family's or the data's default: see
    `kerascnn.config.options.resolve`. Everything random follows `seed`. The final
    `<name>.keras`, its history (CSV, JSON) and `<name>.run.json` are written
    only when training and the test evaluation have succeeded, each
    atomically; checkpoints live in `<name>.partial/` until then, and
    `resume=True` continues from them (also after a kill -9). Returns a
    FitResult.
    """
    echo = print if verbose else None
    plan = make_plan(config, dataset, options, echo=echo, callbacks=callbacks)
    if not is_chief(plan.settings.distribute):
        return _fit_elsewhere(plan, callbacks, verbose, echo)
    return _fit(Training(plan, open_run_folder(plan.settings, plan.replay), echo=echo, verbose=verbose), callbacks)


def _fit(t, callbacks):
    """The run's model, callbacks, training and final save, in the run's
    distribution scope."""
    t.record = run_record(t.plan, t.folder)
    check_resume(t.folder, t.record, t.echo)
    with run_scope(t.settings, t.echo) as replicas:
        import keras

        t.record.update(replicas=replicas, dtype_policy=keras.config.dtype_policy().name)
        model = t.plan.model(t.folder)
        t.callbacks = make_callbacks(t, callbacks)
        steps = train(t, model)
        return finish(t, model, steps)


def _fit_elsewhere(plan, callbacks, verbose, echo):
    """A multi-worker run's other workers, and a multi-process data-parallel
    run's processes but 0: the same steps as the chief (the collectives need
    every process in each), writing into a temporary folder that is removed
    afterwards. Returns the FitResult with `model_path` where the chief
    writes and nothing in `paths`."""
    import shutil
    import tempfile

    settings = plan.settings
    scratch = tempfile.mkdtemp(prefix="kerascnn-worker-")
    try:
        folder = open_run_folder(settings, plan.replay, elsewhere=scratch)
        local = plan.with_settings(tensorboard=str(Path(scratch) / "tensorboard") if settings.tensorboard else None)
        result = _fit(Training(local, folder, verbose=verbose), callbacks)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    chief_path = RunFiles(Path(settings.output), settings.name).model
    if echo:
        echo(f"test accuracy: {result.test_accuracy:.4f} (loss {result.test_loss:.4f}); this worker writes nothing, "
             f"the chief writes the run to {chief_path}")
    return dataclasses.replace(result, model_path=chief_path, chief=False, settings=settings)


@dataclasses.dataclass
class RunFolder:
    """Where a run writes (`files`: the final model's path and the folder of
    the run in progress) and the checkpoint, with its state, that a resumed
    run continues."""

    files: RunFiles
    state: dict = None
    resume_from: Path = None
    new_id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)
    resumes: RunFiles = None  # the files of the run it resumes: the chief's where this process writes elsewhere

    @property
    def model_path(self):
        return self.files.model

    @property
    def run_dir(self):
        return self.files.partial

    @property
    def initial_epoch(self):
        return self.state["epoch"] if self.state else 0

    @property
    def run_id(self):
        return self.state["run_id"] if self.state else self.new_id

    def recording(self, kind):
        """The resumed run's recording `kind` ("steps", "activations"): in
        its run in progress, else beside the finished run it extends."""
        files = self.resumes or self.files
        path = files.in_progress(kind)
        return path if self.resume_from.parent == files.partial else files.finished_name(path)


@dataclasses.dataclass
class Training:
    """A run being trained, as its stages share it: its plan (`plan`), its
    folder (`folder`), its record as far as known (`record`), its callbacks
    once made, and how it reports (`echo` for lines, `verbose` for Keras)."""

    plan: object  # a kerascnn.training.plan.Plan
    folder: RunFolder
    record: dict = None
    callbacks: object = None  # RunCallbacks
    echo: object = None
    verbose: object = "auto"

    @property
    def settings(self):
        return self.plan.settings

    @property
    def data(self):
        return self.plan.data


def open_run_folder(config, replay=False, elsewhere=None):
    """The run folder, made clean, and the state to resume from (if any).
    A finished run whose checkpoints a kill left in `<name>.partial/` has
    them moved out first. An unfinished run is never discarded without
    `overwrite`; a replayed
    configuration never replaces a finished run without it. With
    `elsewhere` (a multi-worker run's other workers) the run folder is only
    read, and this process writes into `elsewhere` instead."""
    import shutil

    files = RunFiles(Path(config.output), config.name)
    model_path, run_dir, last = files.model, files.partial, files.in_progress("last")
    if not elsewhere and run_dir.is_dir() and files.done():  # killed while its checkpoints moved: finish that
        _promote(files)
    writes = RunFiles(Path(elsewhere), config.name) if elsewhere else files
    if config.resume:
        for checkpoint in (last, files.checkpoint("last")):  # unfinished, else finished: extend it
            if checkpoint.exists():
                return RunFolder(writes, storage.read_state(checkpoint), checkpoint, resumes=files)
        raise KerasCNNError(f"{spell('resume')}: no checkpoint to continue from: neither {last} nor "
                            f"{files.checkpoint('last')} exists")
    if last.exists() and not config.overwrite:
        old = storage.read_state(last) or {}
        if old.get("status") == "running":
            raise KerasCNNError(f"{run_dir}/ holds an unfinished run (epoch {old.get('epoch')} of "
                                f"{old.get('config', {}).get('epochs')}); add {spell_set('resume')} to continue it, "
                                f"or {spell_set('overwrite')} to start over")
    if replay and model_path.exists() and not config.overwrite:
        raise KerasCNNError(f"{model_path} already holds a run; to replay a configuration into it add "
                            f"{spell_set('overwrite')} (or {spell_set('resume')} to train it further), or choose "
                            f"another {spell('output')} or {spell('name')}")
    if elsewhere:
        return RunFolder(writes)
    storage.check_writable(config.output)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    return RunFolder(files)


def run_record(plan, folder):
    """The record of the run (run.json) as far as it is known before training."""
    import keras

    from kerascnn.data.sampling import EPOCH_ORDER

    given, settings, data = plan.given, plan.settings, plan.data
    mean, std = data.stats()
    optimizer = make_optimizer(settings.optimizer, settings.lr, momentum=settings.momentum, beta1=settings.beta1,
                               beta2=settings.beta2, weight_decay=settings.weight_decay)
    return record(
        given, settings,
        input_shape=list(plan.input_shape), num_classes=data.num_classes,
        data_source=data.source, class_names=data.class_names, mean=mean, std=std,
        train_images=len(data.x_train), val_images=len(data.x_val),
        optimizer_config={k: v for k, v in optimizer.get_config().items()
                          if isinstance(v, (int, float, str, bool, type(None)))},
        jit_compile=plan.jit_compile, backend=plan.backend, keras_version=keras.__version__,
        epoch_order=EPOCH_ORDER, run_id=folder.run_id,
        **({"data_fingerprint": data.fingerprint} if data.fingerprint else {}))


def check_resume(folder, current, echo=None):
    """Refuse to resume a run with other settings than it was started with."""
    if folder.state is None:
        if folder.resume_from is not None:
            raise KerasCNNError(f"{folder.resume_from} holds no training state to resume")
        return
    differ = mismatches(folder.state["config"], current)
    if differ:
        raise KerasCNNError(f"{spell('resume')}: this command differs from the run in {folder.resume_from} in: "
                            f"{', '.join(differ)}; repeat the original options")
    started_on = folder.state["config"].get("data_fingerprint")
    if started_on and started_on != current.get("data_fingerprint"):
        raise KerasCNNError(f"{spell('resume')}: {current['dataset']} changed since the run in {folder.resume_from} "
                            f"started on it (images added, removed or modified); restore it, or start over")
    check_epoch_order(folder, current)
    if folder.initial_epoch > current["epochs"]:
        raise KerasCNNError(f"{spell('resume')}: {folder.resume_from} has already trained {folder.initial_epoch} "
                            f"epochs, more than {spell('epochs')} {current['epochs']}")
    if echo:
        echo(f"resuming {folder.resume_from} after epoch {folder.initial_epoch} of {current['epochs']}")


def check_epoch_order(folder, current):
    """Refuse to resume, where it could not continue exactly, a run that
    tensorflow trained before every backend took one epoch order
    (data.sampling.EPOCH_ORDER)."""
    saved = folder.state["config"]
    if (saved.get("epoch_order", 1) < current["epoch_order"] and saved.get("backend") == "tensorflow"
            and saved.get("sampling", "shuffle") != "sequential"):
        raise KerasCNNError(f"{spell('resume')}: {folder.resume_from} was trained on tensorflow by an earlier kerascnn, "
                            f"whose epoch order this one no longer draws, so it cannot continue exactly; start it "
                            f"again with {spell_set('overwrite')}, or resume it with the kerascnn that saved it")


@dataclasses.dataclass
class RunCallbacks:
    """The callbacks of a run: `all` for model.fit, and those whose state a
    checkpoint keeps (`stateful`) or that fit reads afterwards."""

    all: list
    stateful: dict
    history: object
    guard: object
    early_stop: object = None
    steps: object = None  # steplog.StepLog, with --log-every


def make_callbacks(t, extra=()):
    """History, the plateau schedule (and its warm-up), divergence guard,
    per-step log, activation recorder, early stopping, checkpoints and
    TensorBoard, restored to a resumed run's state."""
    import keras

    from kerascnn.training import callbacks as cb
    from kerascnn.training.trainer import network

    settings, folder, data = t.settings, t.folder, t.data
    has_val = len(data.x_val) > 0
    monitor = "val_loss" if has_val else "loss"
    history = cb.HistoryRecorder()
    stateful = {"history": history}
    stateful["guard"] = guard = cb.DivergenceGuard(settings.batch_size, t.plan.epoch_images)
    callbacks = [history, guard]
    if settings.log_every:
        callbacks.append(step_log(t))
        stateful["steps"] = callbacks[-1]
    if settings.schedule == "plateau":  # every other schedule is the optimizer's own (kerascnn.optim.schedules)
        rate, after = SCHEDULE_DEFAULTS["plateau"]
        stateful["plateau"] = cb.ReduceOnPlateau(
            monitor, factor=rate if settings.decay_rate is None else settings.decay_rate,
            patience=after if settings.decay_after is None else max(1, settings.decay_after))
        callbacks[1:1] = [cb.Warmup(settings.warmup)] * bool(settings.warmup) + [stateful["plateau"]]
    if settings.record_layers:
        callbacks.append(activation_recorder(t))
    if settings.patience:
        stateful["early_stop"] = cb.EarlyStop(monitor, settings.patience)
        callbacks.append(stateful["early_stop"])

    def checkpoint_state_at(epoch):
        return checkpoint_state(folder.run_id, epoch, t.record, {k: c.get_state() for k, c in stateful.items()},
                                cb.seed_generator_states(network(history.model)))

    stateful["checkpoint"] = cb.Checkpointer(folder.files, checkpoint_state_at,
                                             monitor="val_accuracy" if has_val else "accuracy",
                                             save_every=settings.save_every, guard=guard)
    callbacks.append(stateful["checkpoint"])
    if settings.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(settings.tensorboard)) if t.plan.backend == "tensorflow"
                         else cb.ScalarBoard(settings.tensorboard))
    for key, c in stateful.items():
        if folder.state is not None and key in folder.state["callbacks"]:
            c.set_state(folder.state["callbacks"][key])
    return RunCallbacks(callbacks + list(extra), stateful, history, guard, stateful.get("early_stop"),
                        stateful.get("steps"))


def step_log(t):
    """The per-step log (--log-every) into the run in progress, continuing a
    resumed run's file (in progress, or beside a finished run it extends)."""
    from kerascnn.training.steplog import StepLog

    settings, folder = t.settings, t.folder
    log = StepLog(folder.files.in_progress("steps"), settings.log_every, settings.batch_size,
                  t.plan.epoch_images)
    if folder.state is not None:
        log.resume_from(folder.initial_epoch, folder.recording("steps"))
    return log


def activation_recorder(t):
    """Records `settings.record_layers` on the first test images every epoch,
    keeping a resumed run's records up to where it stopped."""
    from kerascnn.training import callbacks as cb

    settings, folder, data = t.settings, t.folder, t.data
    index = np.arange(min(settings.probe_size, len(data.x_test)))
    probe = model_inputs(t.plan, data.x_test[index])
    recorder = cb.ActivationRecorder(folder.files.in_progress("activations"), settings.record_layers, probe,
                                     data.y_test[index], index)
    if folder.state is not None:
        recorder.resume_from(folder.initial_epoch, folder.recording("activations"))
    return recorder


def train(t, model):
    """model.fit from the run's first epoch to its last. A Ctrl-C says how to
    resume; a diverging loss marks the checkpoint as diverged and is an error.
    Returns the steps of an epoch."""
    from kerascnn.training.callbacks import EpochLog

    settings, folder, data, callbacks, verbose = t.settings, t.folder, t.data, t.callbacks, t.verbose
    loader = t.plan.loader("train", initial_epoch=folder.initial_epoch)
    if settings.distribute == "multi-worker":
        reduce_scalars_across_workers()
        symbolic_build_locally(model, loader.batches)
    if callbacks.guard.first_loss is None and t.plan.steps_per_execution > 1:
        callbacks.guard.first_loss = first_batch_loss(model, t.plan, folder.initial_epoch)
    extra = []
    # No progress bar into a log file, CI or a pipe: one line an epoch (a notebook keeps Keras' bar).
    if verbose == "auto" and not sys.stdout.isatty() and "ipykernel" not in sys.modules:
        verbose, extra = 0, [EpochLog(callbacks.history)]
        if callbacks.steps is not None:  # and the lecture's `loss: ... [seen/total]` every --log-every steps
            callbacks.steps.echo = t.echo
    if folder.initial_epoch < settings.epochs:
        validation = t.plan.loader("val").batches if len(data.x_val) else None
        try:
            model.fit(loader.for_fit(), steps_per_epoch=loader.steps, validation_data=validation, epochs=settings.epochs,
                      initial_epoch=folder.initial_epoch, callbacks=callbacks.all + extra, verbose=verbose,
                      shuffle=False)
        except KeyboardInterrupt:
            last = folder.files.in_progress("last")
            done = (storage.read_state(last) or {}).get("epoch", 0) if last.exists() else 0
            raise KerasCNNError(f"interrupted after epoch {done}; the same command with {spell_set('resume')} "
                                f"continues from there ({folder.run_dir}/)") from None
    guard = callbacks.guard
    if guard.diverged_epoch is not None:
        last = folder.files.in_progress("last")
        if last.exists() and (storage.read_state(last) or {}).get("run_id") == folder.run_id:
            storage.update_state(last, status="diverged")
        raise KerasCNNError(f"training diverged in epoch {guard.diverged_epoch}: {guard.reason}; lower the learning "
                            f"rate ({spell('lr')} {settings.lr:g} now). The final model was not saved")
    return loader.steps


def first_batch_loss(model, plan, epoch):
    """The model's loss on the first batch it will train on: the divergence
    guard's reference when a call runs several steps (the first call's mean
    loss already includes the steps after the first)."""
    x, y = next(iter(plan.loader("train", initial_epoch=epoch, epochs=epoch + 1).batches))
    return float(model.test_on_batch(x, y, return_dict=True)["loss"])


def finish(t, model, steps):
    """Evaluate on the test set, then write the model, its history and its
    record, and move the checkpoints beside the model. Returns a FitResult."""
    settings, folder, data, callbacks, echo = t.settings, t.folder, t.data, t.callbacks, t.echo
    early = callbacks.early_stop
    if echo and early is not None and early.stopped_epoch:
        echo(f"early stopping after epoch {early.stopped_epoch}: {early.monitor} has not improved for "
             f"{settings.patience} epochs")
    test = model.evaluate(t.plan.loader("test").batches, verbose=0, return_dict=True)
    history = callbacks.history.rows
    record_dict = finished_record(t.record, history, test, steps_per_epoch=steps, resumed_from=folder.initial_epoch)
    from kerascnn.training.trainer import network

    model = network(model)  # the network alone is saved (and returned), not a TrainingModel around it
    # the run's id inside the model and in run.json (written last): a set cut short by a kill is detected
    files = folder.files
    storage.save_model(model, storage.ensure_dir(files.folder) / files.model.name, state={"run_id": folder.run_id})
    storage.write_csv(files.history_csv, history)
    storage.write_json(files.history_json, history)
    storage.write_json(files.record, record_dict)
    _promote(files)
    if echo:
        echo(f"test accuracy: {record_dict['test_accuracy']:.4f} (loss {record_dict['test_loss']:.4f}) on "
             f"{settings.dataset}, {record_dict['train_seconds']:.1f} s of training")
        hint = near_chance_hint(record_dict["test_accuracy"], data.num_classes, steps, len(history),
                                settings.batch_size, settings.arch, record_dict["model_options"])
        if hint:
            echo(hint)
    return FitResult(model, history, record_dict["test_loss"], record_dict["test_accuracy"], files.model,
                     record_dict, settings)


def _promote(files):
    """Move a finished run's checkpoints and recordings beside its model:
    <name>.partial/best.keras -> <name>.best.keras, ..., then remove the folder."""
    import os

    if not files.partial.is_dir():
        return
    for path in sorted(files.partial.iterdir()):
        if path.name.startswith("."):
            path.unlink()
            continue
        os.replace(path, files.finished_name(path))
    files.partial.rmdir()


def near_chance_hint(accuracy, num_classes, steps, epochs, batch_size, arch, model_options):
    """A line of advice when the test accuracy is within a tenth of the way
    from guessing (1/num_classes) to perfect, else None."""
    chance = 1.0 / num_classes
    if accuracy >= chance + 0.1 * (1 - chance):
        return None
    advice = f"train for more steps (more {spell('epochs')}, a smaller {spell('batch_size')})"
    if arch == "lenet" and model_options.get("activation", "sigmoid") == "sigmoid":
        advice += (f"; the sigmoid LeNet needs a few hundred steps before it learns, "
                   f"{spell_set('activation', 'relu')} {spell_set('pool', 'max')} "
                   "far fewer")
    return (f"note: test accuracy {accuracy:.1%} is near chance ({chance:.0%}) after {epochs * steps} training steps "
            f"({epochs} epoch{'s' * (epochs != 1)} x {steps} batches of {batch_size}): {advice}")
