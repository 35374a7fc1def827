"""`fit`: train a registered architecture on a dataset and save the run.

`fit` reads as its stages: the configuration (checked before Keras loads),
the data, the resolved defaults, the run folder (or the run it resumes), the
model, the callbacks, training, and the files of the finished run.
"""

import contextlib
import dataclasses
import os
import sys
import uuid
from pathlib import Path

import numpy as np

from kerascnn import io
from kerascnn.choices import DISTRIBUTE, JIT_MODES, SCHEDULE_DEFAULTS, STEP_SCHEDULES
from kerascnn.config import FitConfig, OptionError, mismatches, record, resolve, spell, spell_set
from kerascnn.config import image_size as default_image_size
from kerascnn.data import load_dataset, make_pipeline, steps_per_epoch, tf_backend
from kerascnn.errors import KerasCNNError
from kerascnn.optimizers import make_optimizer

CONFIG_SUFFIXES = (".json", ".toml", ".yaml", ".yml")


@dataclasses.dataclass
class FitResult:
    model: object
    history: list
    test_loss: float
    test_accuracy: float
    model_path: Path
    config: dict  # the run's record, as written to <name>.run.json
    settings: FitConfig = None  # the configuration as resolved
    chief: bool = True  # False on a multi-worker run's other workers, which write nothing

    @property
    def paths(self):
        """The files of the run: model, history, configuration, then the
        checkpoints and recorded activations that exist (none on a worker
        other than the chief)."""
        if not self.chief:
            return []
        paths = [self.model_path]
        paths += [io.sidecar(self.model_path, k) for k in ("history.csv", "history.json", "run.json")]
        extra = [io.checkpoint_path(self.model_path, k) for k in ("best", "last")]
        extra.append(io.sidecar(self.model_path, "activations.npz"))
        return paths + [p for p in extra if p.exists()]


def accelerator_available():
    """True when the active Keras backend sees a GPU or TPU."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU") or tf.config.list_physical_devices("TPU"))
    if backend == "jax":
        import jax

        return any(d.platform != "cpu" for d in jax.devices())
    if backend == "torch":
        import torch

        return torch.cuda.is_available()
    return False


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


def check_distribute(distribute, backend):
    """`distribute` is a known strategy that runs on `backend`."""
    if distribute not in DISTRIBUTE:
        raise OptionError(f"{spell('distribute')}: unknown distribution {distribute!r}; "
                          f"choose one of: {', '.join(DISTRIBUTE)}")
    needs, other = ("jax", "mirrored") if distribute == "data-parallel" else ("tensorflow", "data-parallel")
    if backend != needs:
        raise KerasCNNError(f"{spell('distribute')} {distribute} needs the {needs} backend (active: {backend})"
                            + (f"; use {spell('distribute')} {other} on {backend}" if backend in ("jax", "tensorflow")
                               else ""))


_MULTI_WORKER = []  # the process's MultiWorkerMirroredStrategy: TensorFlow allows one, made before any op


def cluster_task():
    """This process's place in the cluster TF_CONFIG names: (task type,
    index, number of workers, whether a "chief" task is named), or a
    KerasCNNError saying what is wrong."""
    import json

    text = os.environ.get("TF_CONFIG")
    example = ('TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", '
               '"index": 0}}\'')
    if not text:
        raise KerasCNNError(f"{spell('distribute')} multi-worker reads the cluster from TF_CONFIG, which is not set; "
                            f"on each machine set e.g. {example}")
    try:
        config = json.loads(text)
        cluster, task = config["cluster"], config["task"]
        kind, index = task["type"], int(task["index"])
        workers = len(cluster.get("chief", [])) + len(cluster.get("worker", []))
        if kind not in ("chief", "worker") or not 0 <= index < len(cluster[kind]):
            raise ValueError
    except (ValueError, TypeError, KeyError, AttributeError):
        raise KerasCNNError(f"TF_CONFIG is not a cluster with this process's task in it: {text[:200]!r}; "
                            f"expected e.g. {example}") from None
    return kind, index, workers, "chief" in cluster


def is_chief(distribute):
    """Whether this process writes the run: always, except under
    multi-worker training on a worker other than the cluster's chief (the
    "chief" task, else worker 0)."""
    if distribute != "multi-worker":
        return True
    kind, index, _, has_chief = cluster_task()
    return kind == "chief" or index == 0 and not has_chief


def multi_worker_strategy():
    """The process's tf.distribute.MultiWorkerMirroredStrategy (made at the
    first call, which must come before TensorFlow runs anything: fit makes
    it first)."""
    if not _MULTI_WORKER:
        cluster_task()
        import tensorflow as tf

        _MULTI_WORKER.append(tf.distribute.MultiWorkerMirroredStrategy())
    return _MULTI_WORKER[0]


def distribution_scope(distribute, echo=None):
    """A context manager that builds and trains under `distribute`:
    "mirrored" is tf.distribute.MirroredStrategy over every visible GPU (or
    every logical CPU device when there is no GPU); "multi-worker" is
    tf.distribute.MultiWorkerMirroredStrategy over the cluster of TF_CONFIG;
    "data-parallel" is keras.distribution.DataParallel over every device
    JAX sees. Returns (context manager, number of replicas)."""
    import contextlib

    import keras

    if not distribute:
        return contextlib.nullcontext(), 1
    check_distribute(distribute, keras.backend.backend())
    if distribute == "multi-worker":
        strategy = multi_worker_strategy()
        if echo:
            kind, index, workers, _ = cluster_task()
            echo(f"distribute: MultiWorkerMirroredStrategy, {kind} {index} of {workers} workers, "
                 f"{strategy.num_replicas_in_sync} replicas in all"
                 + ("" if is_chief(distribute) else "; the chief writes the run"))
        return strategy.scope(), strategy.num_replicas_in_sync
    if distribute == "mirrored":
        import tensorflow as tf

        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        strategy = tf.distribute.MirroredStrategy(devices=devices)
        if echo:
            echo(f"distribute: MirroredStrategy over {strategy.num_replicas_in_sync} device(s): {', '.join(devices)}")
        return strategy.scope(), strategy.num_replicas_in_sync
    devices = keras.distribution.list_devices()
    previous = keras.distribution.distribution()

    @contextlib.contextmanager
    def scope():
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        try:
            yield
        finally:
            keras.distribution.set_distribution(previous)

    if echo:
        echo(f"distribute: keras.distribution.DataParallel over {len(devices)} device(s)")
    return scope(), len(devices)


@contextlib.contextmanager
def run_scope(settings, echo=None):
    """Where a run builds its model and trains: every generator seeded from
    `settings.seed`, under mixed precision (the policy restored after) and
    the distribution strategy. Yields the number of replicas."""
    import keras

    from kerascnn.backend import keep_tensorflow_unloaded

    keep_tensorflow_unloaded()  # Keras' seeding would import it on jax and torch too
    keras.utils.set_random_seed(settings.seed)
    restore_policy = _mixed_precision(settings.mixed_precision)
    try:
        scope, replicas = distribution_scope(settings.distribute, echo)
        with scope:
            yield replicas
    finally:
        if restore_policy is not None:
            keras.config.set_dtype_policy(restore_policy)


def accelerator_capability():
    """The (major, minor) CUDA compute capability of the first GPU the
    backend sees, (99, 0) for a TPU, None without either."""
    import keras

    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        return tuple(torch.cuda.get_device_capability(0)) if torch.cuda.is_available() else None
    if backend == "jax":
        import jax

        device = next((d for d in jax.devices() if d.platform != "cpu"), None)
        if device is None:
            return None
        if device.platform == "tpu":
            return (99, 0)
        major, _, minor = str(getattr(device, "compute_capability", "0.0")).partition(".")
        return int(major), int(minor or 0)
    if backend == "tensorflow":
        import tensorflow as tf

        if tf.config.list_physical_devices("TPU"):
            return (99, 0)
        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            return tuple(tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0, 0)))
    return None


def mixed_policy():
    """The mixed-precision policy for this accelerator: bfloat16 compute
    where it runs natively (Ampere, compute capability 8.0, and later; TPUs),
    else float16 with loss scaling (Keras wraps the optimizer)."""
    capability = accelerator_capability()
    return "mixed_bfloat16" if capability and capability >= (8, 0) else "mixed_float16"


def _mixed_precision(enabled):
    """Set `mixed_policy()` when `enabled` (resolved: only with an
    accelerator); returns the policy to restore afterwards, or None."""
    import keras

    if not enabled:
        return None
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(mixed_policy())
    return previous


def partial_dir(model_path):
    """The folder of a run in progress: x/lenet.keras -> x/lenet.partial/."""
    return io.sidecar(model_path, "partial")


@dataclasses.dataclass
class RunFolder:
    """Where a run writes: the final model's path, the folder of the run in
    progress, and the checkpoint (with its state) a resumed run continues."""

    model_path: Path
    run_dir: Path
    state: dict = None
    resume_from: Path = None
    new_id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)

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


def open_run_folder(config, replay=False, elsewhere=None):
    """The run folder, made clean, and the state to resume from (if any).
    An unfinished run is never discarded without `overwrite`; a replayed
    configuration never replaces a finished run without it. With
    `elsewhere` (a multi-worker run's other workers) the run folder is only
    read, and this process writes into `elsewhere` instead."""
    import shutil

    model_path = Path(config.output) / f"{config.name}{io.MODEL_SUFFIX}"
    run_dir = partial_dir(model_path)
    last = run_dir / "last.keras"
    writes = Path(elsewhere) / model_path.name if elsewhere else model_path
    if config.resume:
        for checkpoint in (last, io.checkpoint_path(model_path, "last")):  # unfinished, else finished: extend it
            if checkpoint.exists():
                return RunFolder(writes, partial_dir(writes), io.read_state(checkpoint), checkpoint)
        raise KerasCNNError(f"{spell('resume')}: no checkpoint to continue from: neither {last} nor "
                            f"{io.checkpoint_path(model_path, 'last')} exists")
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
        return RunFolder(writes, partial_dir(writes))
    io.check_writable(config.output)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    return RunFolder(model_path, run_dir)


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


def build_or_resume(settings, run, num_classes, input_shape, jit_compile, steps_per_epoch=None, transform=None):
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

    if run.state is not None:
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

    stateful["checkpoint"] = cb.Checkpointer(run.run_dir, run_state, monitor="val_accuracy" if has_val else "accuracy",
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
    recorder = cb.ActivationRecorder(run.run_dir / "activations.npz", settings.record_layers, probe,
                                     data.y_test[index], index)
    if run.state is not None:
        recorded = run.run_dir / "activations.npz" if run.resume_from.parent == run.run_dir \
            else io.sidecar(run.model_path, "activations.npz")
        recorder.resume_from(run.initial_epoch, recorded)
    return recorder


def input_shape(settings, data):
    return (settings.image_size, settings.image_size, data.image_shape[2])


def input_transform(settings, data):
    """The device side of the jax/torch input path for this run: uint8
    images and drawn parameters to the model's input."""
    from kerascnn.transforms import InputTransform

    mean, std = data.stats()
    return InputTransform(input_shape(settings, data), mean, std, settings.resize, settings.augment,
                          name="input_transform")


def prepared(settings, data, x):
    """uint8 images `x` as the run's model takes them, as a numpy array."""
    import keras

    from kerascnn.data import preprocess

    mean, std = data.stats()
    return keras.ops.convert_to_numpy(preprocess(x, input_shape=input_shape(settings, data), mean=mean, std=std,
                                                 resize=settings.resize))


def eval_pipeline(settings, data, x, y):
    """Batches of `x, y` for the model being trained, in order: preprocessed
    (tf.data) on tensorflow; uint8 with a parameter row for its
    TrainingModel on jax and torch."""
    if not tf_backend():
        from kerascnn.inputs import Batches
        from kerascnn.transforms import param_columns

        return Batches(x, y, settings.batch_size, columns=len(param_columns(settings.augment)),
                       multiple=data_parallel_devices(settings))
    mean, std = data.stats()
    return sharded(settings, make_pipeline(
        x, y, input_shape=(settings.image_size, settings.image_size, data.image_shape[2]), mean=mean, std=std,
        batch_size=settings.batch_size, resize=settings.resize))


def sharded(settings, dataset):
    """`dataset` as a multi-worker run splits it: every worker makes the
    same batches and trains on its share of each (tf.data's DATA sharding,
    which AUTO would fall back to with a warning); unchanged otherwise."""
    if settings.distribute != "multi-worker":
        return dataset
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def data_parallel_devices(settings):
    """The devices `--distribute data-parallel` splits each batch over (1
    otherwise): a training epoch's short last batch keeps a multiple of them,
    an evaluation's is padded with samples of weight 0."""
    if settings.distribute != "data-parallel":
        return 1
    import keras

    return len(keras.distribution.list_devices())


def training_pipeline(settings, data, initial_epoch=0):
    """The training batches of `data` under resolved `settings`, from
    `initial_epoch` on: (batches, steps_per_epoch). On tensorflow a tf.data
    stream of the images as the model receives them; on jax and torch an
    `inputs.TrainingBatches` of uint8 images and drawn parameters, which
    `input_transform` turns into the model's input on the device. fit
    trains on these; show_batch draws them."""
    from kerascnn.augment import Augmenter
    from kerascnn.data import make_training_pipeline

    if not tf_backend():
        from kerascnn.inputs import TrainingBatches

        batches = TrainingBatches(data.x_train, data.y_train, batch_size=settings.batch_size, epochs=settings.epochs,
                                  initial_epoch=initial_epoch, seed=settings.seed, sampling=settings.sampling,
                                  augment=settings.augment, image_size=settings.image_size,
                                  multiple=data_parallel_devices(settings))
        return batches, batches.steps

    mean, std = data.stats()
    size = settings.image_size
    batches, steps = make_training_pipeline(
        data.x_train, data.y_train, input_shape=(size, size, data.image_shape[2]), mean=mean, std=std,
        batch_size=settings.batch_size, epochs=settings.epochs, initial_epoch=initial_epoch,
        seed=settings.seed, sampling=settings.sampling, resize=settings.resize,
        augment=Augmenter(settings.augment, size) if settings.augment else None)
    return sharded(settings, batches), steps


def _reduce_scalars_across_workers():
    """Keras 3.15 all-reduces each replica's logs (a scalar loss, scalar
    metrics) across the workers of a MultiWorkerMirroredStrategy with
    axis=0, which a scalar does not have (tensorflow/tensorflow#72388):
    reduce them with axis=None, the mean over every replica, instead."""
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer

    original = tf_trainer.reduce_per_replica
    if getattr(original, "kerascnn", False):
        return

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(strategy):
            return tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return original(values, strategy, reduction)

    reduce_per_replica.kerascnn = True
    tf_trainer.reduce_per_replica = reduce_per_replica


def _symbolic_build_locally(model, batches):
    """Build the model's loss and metrics from one batch's shapes before
    fit, which under MultiWorkerMirroredStrategy would first all-reduce
    a whole distributed batch for them and fails (Keras 3.15,
    keras-team/keras#20585), and tell fit and evaluate not to."""
    first = next(iter(batches))
    model._symbolic_build(data_batch=first)
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None


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
        _reduce_scalars_across_workers()
        _symbolic_build_locally(model, batches)
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
            last = run.run_dir / "last.keras"
            done = (io.read_state(last) or {}).get("epoch", 0) if last.exists() else 0
            raise KerasCNNError(f"interrupted after epoch {done}; the same command with {spell_set('resume')} "
                                f"continues from there ({run.run_dir}/)") from None
    guard = callbacks.guard
    if guard.diverged_epoch is not None:
        last = run.run_dir / "last.keras"
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
    io.save_model(model, io.ensure_dir(run.model_path.parent) / run.model_path.name, state={"run_id": run.run_id})
    io.write_csv(io.sidecar(run.model_path, "history.csv"), history)
    io.write_json(io.sidecar(run.model_path, "history.json"), history)
    io.write_json(io.sidecar(run.model_path, "run.json"), record_dict)
    _promote(run.run_dir, run.model_path)
    if echo:
        echo(f"test accuracy: {record_dict['test_accuracy']:.4f} (loss {record_dict['test_loss']:.4f}) on "
             f"{settings.dataset}, {record_dict['train_seconds']:.1f} s of training")
        hint = near_chance_hint(record_dict["test_accuracy"], data.num_classes, steps, len(history),
                                settings.batch_size, settings.arch, record_dict["model_options"])
        if hint:
            echo(hint)
    return FitResult(model, history, record_dict["test_loss"], record_dict["test_accuracy"], run.model_path,
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
    data = load_data(given)
    settings = resolve_settings(given, data, echo, callbacks)
    if not is_chief(settings.distribute):
        return _fit_elsewhere(given, settings, data, replay, callbacks, verbose, echo)
    run = open_run_folder(settings, replay)
    return _fit(given, settings, data, run, callbacks, verbose, echo)


def _fit(given, settings, data, run, callbacks, verbose, echo):
    jit_compile = resolve_jit(settings.jit)
    record_dict = run_record(given, settings, data, run, jit_compile)
    check_resume(run, record_dict, echo)
    with run_scope(settings, echo) as replicas:
        import keras

        record_dict.update(replicas=replicas, dtype_policy=keras.config.dtype_policy().name)
        model = build_or_resume(settings, run, data.num_classes, record_dict["input_shape"], jit_compile,
                                steps_per_epoch(len(data.x_train), settings.batch_size),
                                None if tf_backend() else input_transform(settings, data))
        run_callbacks = make_callbacks(settings, run, data, record_dict, callbacks)
        steps = train(model, settings, run, data, run_callbacks, verbose)
        return finish(model, settings, run, data, run_callbacks, record_dict, steps, echo)


def _fit_elsewhere(given, settings, data, replay, callbacks, verbose, echo):
    """A multi-worker run's other workers: the same steps as the chief (the
    strategy's collectives need every worker in each), writing into a
    temporary folder that is removed afterwards. Returns the FitResult with
    `model_path` where the chief writes and nothing in `paths`."""
    import shutil
    import tempfile

    folder = tempfile.mkdtemp(prefix="kerascnn-worker-")
    try:
        run = open_run_folder(settings, replay, elsewhere=folder)
        local = settings.replace(tensorboard=str(Path(folder) / "tensorboard") if settings.tensorboard else None)
        result = _fit(given, local, data, run, callbacks, verbose, None)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    chief_path = Path(settings.output) / f"{settings.name}{io.MODEL_SUFFIX}"
    if echo:
        echo(f"test accuracy: {result.test_accuracy:.4f} (loss {result.test_loss:.4f}); this worker writes nothing, "
             f"the chief writes the run to {chief_path}")
    return dataclasses.replace(result, model_path=chief_path, chief=False, settings=settings)


def _promote(run_dir, model_path):
    """Move a finished run's checkpoints and recordings beside its model:
    <run_dir>/best.keras -> <name>.best.keras, ..., then remove the folder."""
    import os

    if not run_dir.is_dir():
        return
    for path in sorted(run_dir.iterdir()):
        if path.name.startswith("."):
            path.unlink()
            continue
        os.replace(path, io.sidecar(model_path, path.name))
    run_dir.rmdir()


def near_chance_hint(accuracy, num_classes, steps, epochs, batch_size, arch, model_options):
    """A line of advice when the test accuracy is within a tenth of the way
    from guessing (1/num_classes) to perfect, else None."""
    chance = 1.0 / num_classes
    if accuracy >= chance + 0.1 * (1 - chance):
        return None
    advice = "train for more steps (more --epochs, a smaller --batch-size)"
    if arch == "lenet" and model_options.get("activation", "sigmoid") == "sigmoid":
        advice += ("; the sigmoid LeNet needs a few hundred steps before it learns, --activation relu --pool max "
                   "far fewer")
    return (f"note: test accuracy {accuracy:.1%} is near chance ({chance:.0%}) after {epochs * steps} training steps "
            f"({epochs} epoch{'s' * (epochs != 1)} x {steps} batches of {batch_size}): {advice}")


