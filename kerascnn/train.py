"""`fit`: train a registered architecture on a dataset and save the run.

`fit` reads as its stages: the configuration (checked before Keras loads),
the data, the resolved defaults, the run folder (or the run it resumes), the
model, the callbacks, training, and the files of the finished run.
"""

import dataclasses
import os
import sys
import uuid
from pathlib import Path

import numpy as np

from kerascnn import io
from kerascnn.choices import JIT_MODES, SCHEDULE_DEFAULTS, STEP_SCHEDULES
from kerascnn.config import FitConfig, OptionError, mismatches, record, resolve, spell, spell_set
from kerascnn.config import image_size as default_image_size
from kerascnn.data import load_dataset, steps_per_epoch, tf_backend
from kerascnn.distribution import (accelerator_available, check_distribute, data_parallel_devices, is_chief,
                                   multi_worker_strategy, reduce_scalars_across_workers, run_scope,
                                   symbolic_build_locally)
from kerascnn.errors import KerasCNNError
from kerascnn.optimizers import make_optimizer
from kerascnn.pipelines import eval_pipeline, input_shape, input_transform, prepared, training_pipeline
from kerascnn.run import RunFiles

CONFIG_SUFFIXES = (".json", ".toml", ".yaml", ".yml")


@dataclasses.dataclass
class FitResult:
    """What `fit` returns: the trained model, its history, its test figures
    and where it was saved; `run` is the saved run as `evaluate`,
    `visualize` and reports read it (a `kerascnn.run.Run`)."""

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
        from kerascnn.run import Run

        return Run(self.model_path, self.record, self.history)

    @property
    def paths(self):
        """The files of the run that exist (RunFiles.existing; none on a
        worker other than the chief)."""
        return RunFiles.of(self.model_path).existing() if self.chief else []


def resolve_image_size(spec, image_size, data_size, echo=None):
    """The square input size to train `spec` at: `image_size` if given,
    else config.image_size's default, said in one line when a missing GPU
    makes it the family's smallest size."""
    if image_size is not None:
        image_size = int(image_size)
        if image_size < spec.min_size:
            raise OptionError(f"{spec.name} needs images of at least {spec.min_size}x{spec.min_size}; "
                              f"{spell('image_size')} {image_size} is too small")
        return image_size
    accelerator = spec.default_size is not None and accelerator_available()
    size = default_image_size(spec, data_size, accelerator)
    if echo and spec.default_size is not None and not accelerator:
        echo(f"image size {size}: no GPU visible, so {spec.name} trains at the smallest size it takes, "
             f"not its textbook {spec.default_size} ({spell_set('image_size', spec.default_size)} to insist)")
    return size


def resolve_jit(jit):
    """XLA for `model.compile(jit_compile=...)`. "auto" compiles on GPUs and
    TPUs and always under JAX (whose training step is jax.jit-ed), and not
    on a CPU with TensorFlow or torch: see benchmarks/jit.py for the CPU
    measurement behind that choice."""
    import keras

    if jit not in JIT_MODES:
        raise OptionError(f"{spell('jit')}: unknown jit mode {jit!r}; choose one of: {', '.join(JIT_MODES)}")
    if jit != "auto":
        return jit == "on"
    backend = keras.backend.backend()
    if backend == "jax":
        return True
    return backend == "tensorflow" and accelerator_available()


MAX_STEPS_PER_EXECUTION = 16


def divisors(n, up_to):
    """The divisors of `n` from 1 to `up_to`, ascending."""
    return [k for k in range(1, min(up_to, n) + 1) if n % k == 0]


def resolve_steps_per_execution(requested, steps, backend, distribute=None, batch_hooks=False):
    """Training steps per call into the backend's compiled function. Keras
    runs a call's steps back to back and calls the batch callbacks after
    it; fit's pipeline is one stream over the epochs, so a call must not
    run past an epoch's end: the value divides the `steps` of an epoch.
    None (auto) is the largest divisor of `steps` up to
    MAX_STEPS_PER_EXECUTION on tensorflow, where a call's steps run in one
    tf.while_loop and give the same weights as one step a call (LeNet on a
    CPU: see docs/performance.md); 1 on jax (a Python loop over jitted
    steps, which changes the last bits), on torch (Keras refuses more),
    under --distribute, and with `batch_hooks` (a callback acting on every
    batch: a per-epoch schedule's warm-up, a user's callback). Values other
    than 1 are refused where auto gives 1 for the backend or strategy."""
    if requested is None:
        if backend != "tensorflow" or distribute or batch_hooks:
            return 1
        return divisors(steps, MAX_STEPS_PER_EXECUTION)[-1]
    if requested > 1 and backend != "tensorflow":
        raise OptionError(f"{spell('steps_per_execution')} must be 1 on the {backend} backend (only tensorflow runs "
                          f"a call's steps in one compiled loop), got {requested}")
    if requested > 1 and distribute:
        raise OptionError(f"{spell('steps_per_execution')} must be 1 with {spell('distribute')}, got {requested}")
    if steps % requested:
        several = divisors(steps, 64)[1:7]
        raise OptionError(f"{spell('steps_per_execution')} {requested} does not divide the {steps} steps of an epoch, "
                          f"so a call would run past the epoch's end; choose "
                          + (f"one of {', '.join(map(str, several))}" if several else "1")
                          + f", or another {spell('batch_size')}")
    return requested


def static_shapes_for_torch_compile():
    """Make torch.compile (Keras' `jit_compile=True` on torch) compile each
    batch shape it meets, as XLA does, instead of turning the batch size
    symbolic once a second shape appears: with a symbolic batch Inductor
    fails on ResNet-18 ("cannot determine truth value of Relational"; the
    class of pytorch/pytorch#164102), with one graph per shape it trains."""
    import torch._dynamo

    torch._dynamo.config.automatic_dynamic_shapes = False


def compile_model(model, optimizer, jit_compile=None, steps_per_execution=1):
    """Compile for integer labels and logits; `jit_compile` None is
    resolve_jit("auto")."""
    import keras

    if jit_compile is None:
        jit_compile = resolve_jit("auto")
    if jit_compile and keras.backend.backend() == "torch":
        static_shapes_for_torch_compile()
    # "mean_with_sample_weight": under data-parallel an evaluation's padding (weight 0) does not count
    reduction = "mean_with_sample_weight" if keras.distribution.distribution() is not None else "sum_over_batch_size"
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=reduction),
        metrics=["accuracy"],
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution,
    )


@dataclasses.dataclass
class RunFolder:
    """Where a run writes (`files`: the final model's path and the folder of
    the run in progress) and the checkpoint, with its state, that a resumed
    run continues."""

    files: RunFiles
    state: dict = None
    resume_from: Path = None
    new_id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)

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


def make_config(config=None, dataset=None, options=None):
    """The run's configuration as given, from an arch name, a FitConfig or a
    configuration file, with `dataset` and `options` overriding it.
    Returns (config, whether it replays a file)."""
    options = dict(options or {})
    if dataset is not None:
        options["dataset"] = dataset
    replay = isinstance(config, Path) or isinstance(config, str) and config.endswith(CONFIG_SUFFIXES)
    if replay:
        base = FitConfig.from_file(config)
    elif isinstance(config, FitConfig):
        base = config
    else:
        if config is not None and "arch" in options:
            raise OptionError(f"the architecture is given twice: {config!r} and arch={options['arch']!r}")
        base = FitConfig(arch=options.pop("arch", config or "lenet"))
    return base.replace(**options), replay


def load_data(given):
    """The data of a run: its dataset, split and subset as `given`."""
    return load_dataset(given.dataset, given.data_dir, val_size=given.val_size, train_size=given.train_size,
                        seed=given.seed)


@dataclasses.dataclass
class Prepared:
    """A run's first stages, shared by fit, lr_find and show_batch: the
    configuration as given, its data, the settings resolved from both; the
    model and the training batches made from them on request."""

    given: FitConfig
    settings: FitConfig
    data: object  # a kerascnn.data.Dataset
    replay: bool = False  # the configuration came from a file (fit then protects an existing run)

    @property
    def input_shape(self):
        return input_shape(self.settings, self.data)

    def transform(self):
        """The device side of the input path (jax, torch), None on tensorflow."""
        return None if tf_backend() else input_transform(self.settings, self.data)

    def model(self, jit_compile, run=None):
        """The model that trains, with its optimizer (build_or_resume; under run_scope)."""
        return build_or_resume(self.settings, self.data.num_classes, list(self.input_shape), jit_compile,
                               steps_per_epoch(len(self.data.x_train), self.settings.batch_size), self.transform(),
                               run=run)

    def batches(self, initial_epoch=0):
        """(training batches, steps per epoch): training_pipeline."""
        return training_pipeline(self.settings, self.data, initial_epoch)


def prepare(config=None, dataset=None, options=None, *, echo=None, callbacks=()):
    """The configuration (make_config), its data (load_data) and the
    resolved settings (resolve_settings), as a Prepared."""
    given, replay = make_config(config, dataset, options)
    data = load_data(given)
    return Prepared(given, resolve_settings(given, data, echo, callbacks), data, replay)


def open_run_folder(config, replay=False, elsewhere=None):
    """The run folder, made clean, and the state to resume from (if any).
    An unfinished run is never discarded without `overwrite`; a replayed
    configuration never replaces a finished run without it. With
    `elsewhere` (a multi-worker run's other workers) the run folder is only
    read, and this process writes into `elsewhere` instead."""
    import shutil

    files = RunFiles(Path(config.output), config.name)
    model_path, run_dir, last = files.model, files.partial, files.in_progress("last")
    writes = RunFiles(Path(elsewhere), config.name) if elsewhere else files
    if config.resume:
        for checkpoint in (last, files.checkpoint("last")):  # unfinished, else finished: extend it
            if checkpoint.exists():
                return RunFolder(writes, io.read_state(checkpoint), checkpoint)
        raise KerasCNNError(f"{spell('resume')}: no checkpoint to continue from: neither {last} nor "
                            f"{files.checkpoint('last')} exists")
    if last.exists() and not config.overwrite:
        old = io.read_state(last) or {}
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
    io.check_writable(config.output)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    return RunFolder(files)


def has_batch_hooks(callbacks):
    """Whether any of `callbacks` acts on single batches of training."""
    import keras

    base = keras.callbacks.Callback
    return any(getattr(type(c), hook) is not getattr(base, hook) for c in callbacks
               for hook in ("on_train_batch_begin", "on_train_batch_end"))


def resolve_settings(given, data, echo=None, callbacks=()):
    """The configuration with the family's and the data's defaults filled in,
    said in a line with the backend. `callbacks`: the caller's, for
    resolve_steps_per_execution."""
    import keras

    if echo:
        echo(f"backend: {keras.backend.backend()} (Keras {keras.__version__})")
    if given.distribute:
        check_distribute(given.distribute, keras.backend.backend())
        devices = data_parallel_devices(given)
        if given.batch_size is not None and given.batch_size % devices:
            raise OptionError(f"{spell('batch_size')} {given.batch_size} does not split over the {devices} devices of "
                              f"{spell('distribute')} data-parallel; choose a multiple of {devices}")
    size = resolve_image_size(given.family, given.image_size, data.image_shape[0], echo=echo)
    if given.resize == "pad" and size < max(data.image_shape[:2]):
        raise OptionError(f"{spell_set('resize', 'pad')} needs {spell('image_size')} at least the data's "
                          f"{data.image_shape[0]}x{data.image_shape[1]}, got {size}; pad only enlarges, "
                          f"{spell_set('resize', 'resize')} shrinks")
    accelerator = accelerator_available()
    if given.mixed_precision and not accelerator and echo:
        echo(f"warning: {spell('mixed_precision')} needs a GPU; training in float32 on this CPU")
    local = data.source.startswith("local:")
    settings = resolve(given, image_size=size, accelerator=accelerator,
                       data_dir=os.path.dirname(os.path.abspath(data.source[len("local:"):])) if local else None)
    steps = steps_per_epoch(len(data.x_train), settings.batch_size)
    warmup_per_batch = bool(settings.warmup) and settings.schedule not in STEP_SCHEDULES  # callbacks.Warmup
    if warmup_per_batch and (settings.steps_per_execution or 1) > 1:
        raise OptionError(f"{spell('steps_per_execution')} must be 1 with {spell('warmup')} and a per-epoch "
                          f"schedule (the warm-up sets the rate every batch)")
    settings = settings.replace(steps_per_execution=resolve_steps_per_execution(
        settings.steps_per_execution, steps, keras.backend.backend(), settings.distribute,
        batch_hooks=warmup_per_batch or has_batch_hooks(callbacks)))
    if echo:
        echo(settings.describe())
    return settings


def run_record(given, settings, data, run, jit_compile):
    """The record of the run (run.json) as far as it is known before training."""
    import keras

    mean, std = data.stats()
    optimizer = make_optimizer(settings.optimizer, settings.lr, momentum=settings.momentum, beta1=settings.beta1,
                               beta2=settings.beta2, weight_decay=settings.weight_decay)
    return record(
        given, settings,
        input_shape=[settings.image_size, settings.image_size, data.image_shape[2]], num_classes=data.num_classes,
        data_source=data.source, class_names=data.class_names, mean=mean, std=std,
        train_images=len(data.x_train), val_images=len(data.x_val),
        optimizer_config={k: v for k, v in optimizer.get_config().items()
                          if isinstance(v, (int, float, str, bool, type(None)))},
        jit_compile=jit_compile, backend=keras.backend.backend(), keras_version=keras.__version__,
        run_id=run.run_id)


def check_resume(run, current, echo=None):
    """Refuse to resume a run with other settings than it was started with."""
    if run.state is None:
        if run.resume_from is not None:
            raise KerasCNNError(f"{run.resume_from} holds no training state to resume")
        return
    differ = mismatches(run.state["config"], current)
    if differ:
        raise KerasCNNError(f"{spell('resume')}: this command differs from the run in {run.resume_from} in: "
                            f"{', '.join(differ)}; repeat the original options")
    if run.initial_epoch > current["epochs"]:
        raise KerasCNNError(f"{spell('resume')}: {run.resume_from} has already trained {run.initial_epoch} epochs, "
                            f"more than {spell('epochs')} {current['epochs']}")
    if echo:
        echo(f"resuming {run.resume_from} after epoch {run.initial_epoch} of {current['epochs']}")


def run_optimizer(settings, steps_per_epoch=None):
    """The optimizer of a run. Its learning rate is `settings.lr`, which the
    per-epoch schedules' callbacks set, or for a per-step schedule
    (onecycle) a schedule of its step count over the run's epochs of
    `steps_per_epoch` (kerascnn.schedules.learning_rate)."""
    from kerascnn.schedules import learning_rate

    return make_optimizer(settings.optimizer, learning_rate(settings, steps_per_epoch), momentum=settings.momentum,
                          beta1=settings.beta1, beta2=settings.beta2, weight_decay=settings.weight_decay)


def build_or_resume(settings, num_classes, input_shape, jit_compile, steps_per_epoch=None, transform=None, run=None):
    """The model to train: loaded from the checkpoint a resumed run continues
    (with its optimizer state and random generators), else built and
    compiled afresh with `run_optimizer`. With `transform` (jax, torch:
    `input_transform`) an `inputs.TrainingModel` around it, sharing its
    optimizer, is what trains; `inputs.network` gives the network back.
    Call it inside the distribution scope: the optimizer's variables must be
    created there."""
    from kerascnn import callbacks as cb
    from kerascnn.models import build_model
    from kerascnn.models.common import apply_l2

    if run is not None and run.state is not None:
        model = io.load_model(run.resume_from)
        if model.optimizer is None:
            raise KerasCNNError(f"{run.resume_from} has no optimizer state to resume")
        cb.set_seed_generator_states(model, run.state["seed_generators"])
        model.steps_per_execution = settings.steps_per_execution or 1
    else:
        model = build_model(settings.arch, input_shape=input_shape, num_classes=num_classes,
                            **settings.builder_options())
        apply_l2(model, settings.l2)
        compile_model(model, run_optimizer(settings, steps_per_epoch), jit_compile, settings.steps_per_execution or 1)
    if transform is None:
        return model
    from kerascnn.inputs import TrainingModel

    trainer = TrainingModel(model, transform)
    compile_model(trainer, model.optimizer, jit_compile)  # one optimizer: saving `model` saves its state
    return trainer


@dataclasses.dataclass
class RunCallbacks:
    """The callbacks of a run: `all` for model.fit, and those whose state a
    checkpoint keeps (`stateful`) or that fit reads afterwards."""

    all: list
    stateful: dict
    history: object
    guard: object
    early_stop: object = None


def make_callbacks(settings, run, data, record_dict, extra=()):
    """History, learning-rate schedule, divergence guard, activation recorder, early
    stopping, checkpoints and TensorBoard, restored to a resumed run's state."""
    import keras

    from kerascnn import callbacks as cb
    from kerascnn.inputs import network

    has_val = len(data.x_val) > 0
    monitor = "val_loss" if has_val else "loss"
    history = cb.HistoryRecorder()
    stateful = {"history": history}
    if settings.schedule == "plateau":
        rate, after = SCHEDULE_DEFAULTS["plateau"]
        stateful["plateau"] = cb.ReduceOnPlateau(
            monitor, factor=rate if settings.decay_rate is None else settings.decay_rate,
            patience=after if settings.decay_after is None else max(1, settings.decay_after))
        schedule = stateful["plateau"]
    elif settings.schedule in STEP_SCHEDULES:
        schedule = None  # the optimizer's own schedule, warm-up included (run_optimizer)
    else:
        schedule = cb.EpochSchedule(cb.schedule_function(settings.schedule, settings.lr, settings.epochs,
                                                         decay_rate=settings.decay_rate,
                                                         decay_after=settings.decay_after))
    stateful["guard"] = guard = cb.DivergenceGuard(settings.batch_size, len(data.x_train))
    callbacks = [c for c in (history, schedule, guard) if c is not None]
    if settings.warmup and schedule is not None:
        base = None if settings.schedule == "plateau" else schedule.fn
        callbacks.insert(1, cb.Warmup(settings.warmup, base))
    if settings.record_layers:
        callbacks.append(activation_recorder(settings, run, data))
    if settings.patience:
        stateful["early_stop"] = cb.EarlyStop(monitor, settings.patience)
        callbacks.append(stateful["early_stop"])

    def run_state(epoch):
        return {"version": 1, "run_id": run.run_id, "status": "running", "epoch": epoch, "config": record_dict,
                "callbacks": {k: c.get_state() for k, c in stateful.items()},
                "seed_generators": cb.seed_generator_states(network(history.model))}

    stateful["checkpoint"] = cb.Checkpointer(run.files, run_state, monitor="val_accuracy" if has_val else "accuracy",
                                             save_every=settings.save_every, guard=guard)
    callbacks.append(stateful["checkpoint"])
    if settings.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(settings.tensorboard)) if tf_backend()
                         else cb.ScalarBoard(settings.tensorboard))
    for key, c in stateful.items():
        if run.state is not None and key in run.state["callbacks"]:
            c.set_state(run.state["callbacks"][key])
    return RunCallbacks(callbacks + list(extra), stateful, history, guard, stateful.get("early_stop"))


def activation_recorder(settings, run, data):
    """Records `settings.record_layers` on the first test images every epoch,
    keeping a resumed run's records up to where it stopped."""
    from kerascnn import callbacks as cb

    index = np.arange(min(settings.probe_size, len(data.x_test)))
    probe = prepared(settings, data, data.x_test[index])
    recorder = cb.ActivationRecorder(run.files.in_progress("activations"), settings.record_layers, probe,
                                     data.y_test[index], index)
    if run.state is not None:
        recorded = run.files.in_progress("activations") if run.resume_from.parent == run.run_dir \
            else run.files.activations
        recorder.resume_from(run.initial_epoch, recorded)
    return recorder


def first_batch_loss(model, settings, data, epoch):
    """The model's loss on the first batch it will train on: the divergence
    guard's reference when a call runs several steps (the first call's mean
    loss already includes the steps after the first)."""
    first, _ = training_pipeline(settings.replace(steps_per_execution=1, epochs=epoch + 1), data, epoch)
    x, y = next(iter(first))
    return float(model.test_on_batch(x, y, return_dict=True)["loss"])


def train(model, settings, run, data, callbacks, verbose):
    """model.fit from the run's first epoch to its last. A Ctrl-C says how to
    resume; a diverging loss marks the checkpoint as diverged and is an error."""
    from kerascnn.callbacks import EpochLog

    batches, steps = training_pipeline(settings, data, run.initial_epoch)
    if settings.distribute == "multi-worker":
        reduce_scalars_across_workers()
        symbolic_build_locally(model, batches)
    if callbacks.guard.first_loss is None and (settings.steps_per_execution or 1) > 1:
        callbacks.guard.first_loss = first_batch_loss(model, settings, data, run.initial_epoch)
    extra = []
    # No progress bar into a log file, CI or a pipe: one line an epoch (a notebook keeps Keras' bar).
    if verbose == "auto" and not sys.stdout.isatty() and "ipykernel" not in sys.modules:
        verbose, extra = 0, [EpochLog(callbacks.history)]
    if run.initial_epoch < settings.epochs:
        validation = eval_pipeline(settings, data, data.x_val, data.y_val) if len(data.x_val) else None
        if not tf_backend():
            batches = batches.stream()
        try:
            model.fit(batches, steps_per_epoch=steps, validation_data=validation, epochs=settings.epochs,
                      initial_epoch=run.initial_epoch, callbacks=callbacks.all + extra, verbose=verbose,
                      shuffle=False)
        except KeyboardInterrupt:
            last = run.files.in_progress("last")
            done = (io.read_state(last) or {}).get("epoch", 0) if last.exists() else 0
            raise KerasCNNError(f"interrupted after epoch {done}; the same command with {spell_set('resume')} "
                                f"continues from there ({run.run_dir}/)") from None
    guard = callbacks.guard
    if guard.diverged_epoch is not None:
        last = run.files.in_progress("last")
        if last.exists() and (io.read_state(last) or {}).get("run_id") == run.run_id:
            io.update_state(last, status="diverged")
        raise KerasCNNError(f"training diverged in epoch {guard.diverged_epoch}: {guard.reason}; lower the learning "
                            f"rate ({spell('lr')} {settings.lr:g} now). The final model was not saved")
    return steps


def finish(model, settings, run, data, callbacks, record_dict, steps, echo=None):
    """Evaluate on the test set, then write the model, its history and its
    record, and move the checkpoints beside the model. Returns a FitResult."""
    early = callbacks.early_stop
    if echo and early is not None and early.stopped_epoch:
        echo(f"early stopping after epoch {early.stopped_epoch}: {early.monitor} has not improved for "
             f"{settings.patience} epochs")
    test = model.evaluate(eval_pipeline(settings, data, data.x_test, data.y_test), verbose=0, return_dict=True)
    history = callbacks.history.rows
    record_dict = {**record_dict, "epochs_run": len(history), "resumed_from": run.initial_epoch or None,
                   "steps_per_epoch": steps, "train_seconds": round(sum(r["seconds"] for r in history), 2),
                   "test_loss": float(test["loss"]), "test_accuracy": float(test["accuracy"])}
    from kerascnn.inputs import network

    model = network(model)  # the network alone is saved (and returned), not a TrainingModel around it
    # the run's id inside the model and in run.json (written last): a set cut short by a kill is detected
    files = run.files
    io.save_model(model, io.ensure_dir(files.folder) / files.model.name, state={"run_id": run.run_id})
    io.write_csv(files.history_csv, history)
    io.write_json(files.history_json, history)
    io.write_json(files.record, record_dict)
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


def fit(config=None, dataset=None, *, callbacks=(), verbose="auto", **options):
    """Train a model and save the run to `<output>/<name>.*`.

    `config` is an architecture name ("lenet"), a FitConfig, or the path of a
    configuration to replay (a run's `<name>.run.json`, or a .toml/.yaml
    file); `dataset` and keyword `options` (any FitConfig field) override
    it. Replaying into the folder and name of an existing run needs
    `overwrite=True` (or `resume=True`).

    Options left None take the family's or the data's default: see
    `kerascnn.config.resolve`. Everything random follows `seed`. The final
    `<name>.keras`, its history (CSV, JSON) and `<name>.run.json` are written
    only when training and the test evaluation have succeeded, each
    atomically; checkpoints live in `<name>.partial/` until then, and
    `resume=True` continues from them (also after a kill -9). Returns a
    FitResult.
    """
    given, replay = make_config(config, dataset, options)
    if given.distribute == "multi-worker":  # its strategy comes before TensorFlow runs anything
        import keras

        check_distribute(given.distribute, keras.backend.backend())
        multi_worker_strategy()
    echo = print if verbose else None
    prepared = dataclasses.replace(prepare(given, echo=echo, callbacks=callbacks), replay=replay)
    if not is_chief(prepared.settings.distribute):
        return _fit_elsewhere(prepared, callbacks, verbose, echo)
    run = open_run_folder(prepared.settings, prepared.replay)
    return _fit(prepared, run, callbacks, verbose, echo)


def _fit(prepared, run, callbacks, verbose, echo):
    given, settings, data = prepared.given, prepared.settings, prepared.data
    jit_compile = resolve_jit(settings.jit)
    record_dict = run_record(given, settings, data, run, jit_compile)
    check_resume(run, record_dict, echo)
    with run_scope(settings, echo) as replicas:
        import keras

        record_dict.update(replicas=replicas, dtype_policy=keras.config.dtype_policy().name)
        model = prepared.model(jit_compile, run)
        run_callbacks = make_callbacks(settings, run, data, record_dict, callbacks)
        steps = train(model, settings, run, data, run_callbacks, verbose)
        return finish(model, settings, run, data, run_callbacks, record_dict, steps, echo)


def _fit_elsewhere(prepared, callbacks, verbose, echo):
    """A multi-worker run's other workers: the same steps as the chief (the
    strategy's collectives need every worker in each), writing into a
    temporary folder that is removed afterwards. Returns the FitResult with
    `model_path` where the chief writes and nothing in `paths`."""
    import shutil
    import tempfile

    settings = prepared.settings
    folder = tempfile.mkdtemp(prefix="kerascnn-worker-")
    try:
        run = open_run_folder(settings, prepared.replay, elsewhere=folder)
        local = settings.replace(tensorboard=str(Path(folder) / "tensorboard") if settings.tensorboard else None)
        result = _fit(dataclasses.replace(prepared, settings=local), run, callbacks, verbose, None)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    chief_path = RunFiles(Path(settings.output), settings.name).model
    if echo:
        echo(f"test accuracy: {result.test_accuracy:.4f} (loss {result.test_loss:.4f}); this worker writes nothing, "
             f"the chief writes the run to {chief_path}")
    return dataclasses.replace(result, model_path=chief_path, chief=False, settings=settings)


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


