"""`fit`: train a registered architecture on a dataset and save the run."""

import dataclasses
from pathlib import Path

import numpy as np

from kerascnn import io
from kerascnn.data import load_dataset, make_pipeline
from kerascnn.errors import KerasCNNError
from kerascnn.models import build_model, get_arch
from kerascnn.optimizers import make_optimizer


@dataclasses.dataclass
class FitResult:
    model: object
    history: list
    test_loss: float
    test_accuracy: float
    model_path: Path
    config: dict

    @property
    def paths(self):
        """The files of the run: model, history, configuration, then the
        checkpoints and recorded activations that exist."""
        paths = [self.model_path] + [io.sidecar(self.model_path, k) for k in ("history.csv", "history.json", "run.json")]
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
    """The square input size to train `spec` at (see `fit`)."""
    if image_size is not None:
        image_size = int(image_size)
        if image_size < spec.min_size:
            raise KerasCNNError(f"{spec.name} needs images of at least {spec.min_size}x{spec.min_size}; "
                                f"--image-size {image_size} is too small")
        return image_size
    if spec.default_size is None:
        return max(data_size, spec.min_size)
    if accelerator_available():
        return spec.default_size
    if echo:
        echo(f"image size {spec.min_size}: no GPU visible, so {spec.name} trains at the smallest size it takes, "
             f"not its textbook {spec.default_size} (--image-size {spec.default_size} to insist)")
    return spec.min_size


JIT_MODES = ("auto", "on", "off")
DISTRIBUTE = ("mirrored", "data-parallel")
# Options a resumed run must share with the run it continues.
RESUME_KEYS = ("arch", "model_options", "input_shape", "dataset", "val_size", "train_size", "batch_size",
               "optimizer", "lr", "momentum", "beta1", "beta2", "weight_decay", "l2", "schedule", "decay_rate",
               "decay_after", "augment", "sampling", "seed")


def resolve_jit(jit):
    """XLA for `model.compile(jit_compile=...)`. "auto" compiles on GPUs and
    TPUs and always under JAX (whose training step is jax.jit-ed), and not
    on a CPU with TensorFlow or torch: see benchmarks/jit.py for the CPU
    measurement behind that choice."""
    import keras

    if jit not in JIT_MODES:
        raise KerasCNNError(f"--jit must be one of {', '.join(JIT_MODES)}, got {jit!r}")
    if jit != "auto":
        return jit == "on"
    backend = keras.backend.backend()
    if backend == "jax":
        return True
    return backend == "tensorflow" and accelerator_available()


def compile_model(model, optimizer, jit_compile=None):
    """Compile for integer labels and logits; `jit_compile` None is
    resolve_jit("auto")."""
    import keras

    if jit_compile is None:
        jit_compile = resolve_jit("auto")
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )


def distribution_scope(distribute, echo=None):
    """A context manager that builds and trains under `distribute`:
    "mirrored" is tf.distribute.MirroredStrategy over every visible GPU (or
    every logical CPU device when there is no GPU); "data-parallel" is
    keras.distribution.DataParallel over every device JAX sees. Returns
    (context manager, number of replicas)."""
    import contextlib

    import keras

    backend = keras.backend.backend()
    if not distribute:
        return contextlib.nullcontext(), 1
    if distribute not in DISTRIBUTE:
        raise KerasCNNError(f"--distribute must be one of {', '.join(DISTRIBUTE)}, got {distribute!r}")
    if distribute == "mirrored":
        if backend != "tensorflow":
            raise KerasCNNError(f"--distribute mirrored needs the tensorflow backend (active: {backend})"
                                + ("; use --distribute data-parallel on jax" if backend == "jax" else ""))
        import tensorflow as tf

        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        strategy = tf.distribute.MirroredStrategy(devices=devices)
        if echo:
            echo(f"distribute: MirroredStrategy over {strategy.num_replicas_in_sync} device(s): {', '.join(devices)}")
        return strategy.scope(), strategy.num_replicas_in_sync
    if backend != "jax":
        raise KerasCNNError(f"--distribute data-parallel needs the jax backend (active: {backend})"
                            + ("; use --distribute mirrored on tensorflow" if backend == "tensorflow" else ""))
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


def _mixed_precision(enabled, echo):
    """Set the mixed_float16 policy on an accelerator; returns the policy to
    restore afterwards, or None when nothing changed."""
    import keras

    if not enabled:
        return None
    if not accelerator_available():
        if echo:
            echo("warning: --mixed-precision needs a GPU; training in float32 on this CPU")
        return None
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    return previous


def partial_dir(model_path):
    """The folder of a run in progress: x/lenet.keras -> x/lenet.partial/."""
    return io.sidecar(model_path, "partial")


def _prepare_run_dir(run_dir, model_path, resume, overwrite):
    """The state and checkpoint to resume from (or None, None) and a clean
    run folder. An unfinished run is never discarded without --overwrite."""
    import shutil

    last = run_dir / "last.keras"
    if resume:
        if last.exists():
            return io.read_state(last), last
        finished = io.checkpoint_path(model_path, "last")
        if finished.exists():  # extend a finished run by more epochs
            return io.read_state(finished), finished
        raise KerasCNNError(f"--resume: no checkpoint to continue from: neither {last} nor {finished} exists")
    if last.exists() and not overwrite:
        old = io.read_state(last) or {}
        if old.get("status") == "running":
            raise KerasCNNError(f"{run_dir}/ holds an unfinished run (epoch {old.get('epoch')} of "
                                f"{old.get('config', {}).get('epochs')}); add --resume to continue it, "
                                f"or --overwrite to start over")
    if run_dir.exists():
        shutil.rmtree(run_dir)
    return None, None


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


def _check_resume(state, config, last_path):
    if state is None:
        raise KerasCNNError(f"{last_path} holds no training state to resume")
    saved = state["config"]
    differ = [k for k in RESUME_KEYS if saved.get(k) != config.get(k)]
    if config["schedule"] == "cosine" and saved.get("epochs") != config["epochs"]:
        differ.append("epochs (the cosine schedule spans them)")
    if differ:
        raise KerasCNNError(f"--resume: this command differs from the run in {last_path} in: "
                            f"{', '.join(differ)}; repeat the original options")
    if state["epoch"] > config["epochs"]:
        raise KerasCNNError(f"--resume: {last_path} has already trained {state['epoch']} epochs, "
                            f"more than --epochs {config['epochs']}")


def near_chance_hint(accuracy, num_classes, steps, epochs, batch_size, arch, model_options):
    """A line of advice when the test accuracy is within a tenth of the way
    from guessing (1/num_classes) to perfect, else None."""
    chance = 1.0 / num_classes
    if accuracy >= chance + 0.1 * (1 - chance):
        return None
    advice = "train for more steps (more --epochs, a smaller --batch-size)"
    if arch == "lenet" and model_options.get("activation", "sigmoid") == "sigmoid":
        advice += "; the sigmoid LeNet needs a few hundred steps before it learns, --activation relu --pool max far fewer"
    return (f"note: test accuracy {accuracy:.1%} is near chance ({chance:.0%}) after {epochs * steps} training steps "
            f"({epochs} epoch{'s' * (epochs != 1)} x {steps} batches of {batch_size}): {advice}")


def fit(
    arch="lenet",
    dataset="fashion_mnist",
    *,
    epochs=10,
    batch_size=None,
    optimizer=None,
    lr=None,
    momentum=0.9,
    beta1=0.9,
    beta2=0.999,
    weight_decay=None,
    l2=None,
    schedule="constant",
    decay_rate=None,
    decay_after=None,
    augment=None,
    sampling="shuffle",
    patience=None,
    data_dir=None,
    val_size=0.1,
    train_size=None,
    image_size=None,
    seed=0,
    output="saved_models",
    name=None,
    save_every=None,
    resume=False,
    overwrite=False,
    record_layers=(),
    probe_size=4,
    tensorboard=None,
    distribute=None,
    mixed_precision=False,
    jit="auto",
    callbacks=(),
    verbose="auto",
    **model_options,
):
    """Train `arch` on `dataset` and save the run to `output/<name>.*`.

    Model options (activation, pool, kernel, channels, batchnorm, width)
    go to the builder. `optimizer`, `lr` and `batch_size` default to the
    family's settings; `image_size` to the data's own size for LeNet, and
    for the other families to their textbook size when an accelerator is
    visible, else the smallest size they take (said in one line).

    Training: `l2` adds kernel L2 regularization; `schedule` is one of
    callbacks.SCHEDULES with `decay_rate`/`decay_after`; `augment` names
    transforms from augment.TRANSFORMS (training batches only); `sampling`
    is "shuffle", "sequential" or "bootstrap"; `patience` stops early when
    the validation loss stops improving; a NaN loss stops with an error.
    Everything random follows `seed`.

    Files: checkpoints `<name>.best.keras`, `<name>.last.keras` (with the
    state `resume=True` continues from, also after a kill -9) and
    `<name>.epoch-NNN.keras` every `save_every` epochs; `record_layers`
    writes `<name>.activations.npz`; `tensorboard` a log folder. The final
    `<name>.keras` with its history (CSV, JSON) and run configuration is
    written only when training and the test evaluation have succeeded, and
    every file is written atomically. Returns a FitResult.
    """
    import uuid

    import keras

    from kerascnn import callbacks as cb
    from kerascnn.augment import Augmenter, parse_augment
    from kerascnn.data import SAMPLINGS, make_training_pipeline
    from kerascnn.models.common import apply_l2

    echo = print if verbose else None
    spec = get_arch(arch)
    name = name or arch
    if not name or "/" in name or name.startswith("."):
        raise KerasCNNError(f"--name must be a plain file name, got {name!r}")
    if int(epochs) < 1:
        raise KerasCNNError(f"epochs must be at least 1, got {epochs}")
    batch_size = int(spec.batch_size if batch_size is None else batch_size)
    if batch_size < 1:
        raise KerasCNNError(f"batch size must be at least 1, got {batch_size}")
    if sampling not in SAMPLINGS:
        raise KerasCNNError(f"unknown sampling {sampling!r}; choose one of: {', '.join(SAMPLINGS)}")
    if patience is not None and int(patience) < 1:
        raise KerasCNNError(f"--patience must be at least 1, got {patience}")
    if save_every is not None and int(save_every) < 1:
        raise KerasCNNError(f"--save-every must be at least 1, got {save_every}")
    augment = parse_augment(augment)
    if optimizer is None:
        optimizer, lr = spec.optimizer, spec.lr if lr is None else lr
    opt = make_optimizer(optimizer, lr, momentum=momentum, beta1=beta1, beta2=beta2, weight_decay=weight_decay)
    lr0 = float(opt.get_config()["learning_rate"])
    schedule_fn = cb.schedule_function(schedule, lr0, int(epochs), decay_rate=decay_rate, decay_after=decay_after)
    jit_compile = resolve_jit(jit)
    out_dir = io.ensure_dir(output)
    model_path = out_dir / f"{name}{io.MODEL_SUFFIX}"
    run_dir = partial_dir(model_path)
    state, resume_from = _prepare_run_dir(run_dir, model_path, resume, overwrite)

    keras.utils.set_random_seed(seed)
    data = load_dataset(dataset, data_dir, val_size=val_size, train_size=train_size, seed=seed)
    size = resolve_image_size(spec, image_size, data.image_shape[0], echo=echo)
    input_shape = (size, size, data.image_shape[2])
    mean, std = data.stats()
    has_val = len(data.x_val) > 0
    config = {
        "arch": arch,
        "name": name,
        "model_options": {k: list(v) if isinstance(v, tuple) else v
                          for k, v in model_options.items() if v is not None},
        "input_shape": list(input_shape),
        "num_classes": data.num_classes,
        "dataset": dataset,
        "data_dir": str(data_dir) if data_dir else None,
        "data_source": data.source,
        "class_names": data.class_names,
        "mean": mean,
        "std": std,
        "val_size": val_size,
        "train_size": train_size,
        "train_images": len(data.x_train),
        "val_images": len(data.x_val),
        "epochs": int(epochs),
        "batch_size": batch_size,
        "optimizer": optimizer,
        "lr": lr0,
        "momentum": momentum,
        "beta1": beta1,
        "beta2": beta2,
        "weight_decay": weight_decay,
        "optimizer_config": {k: v for k, v in opt.get_config().items()
                             if isinstance(v, (int, float, str, bool, type(None)))},
        "l2": l2,
        "schedule": schedule,
        "decay_rate": decay_rate,
        "decay_after": decay_after,
        "augment": list(augment),
        "sampling": sampling,
        "patience": patience,
        "seed": seed,
        "jit_compile": jit_compile,
        "backend": keras.backend.backend(),
        "keras_version": keras.__version__,
    }
    if state is not None:
        _check_resume(state, config, resume_from)
    initial_epoch = state["epoch"] if state else 0
    run_id = state["run_id"] if state else uuid.uuid4().hex

    restore_policy = _mixed_precision(mixed_precision, echo)
    try:
        scope, replicas = distribution_scope(distribute, echo)
        config.update(distribute=distribute, replicas=replicas,
                      mixed_precision=bool(restore_policy is not None))
        with scope:
            if state is not None:
                model = io.load_model(resume_from)
                cb.set_seed_generator_states(model, state["seed_generators"])
                if echo:
                    echo(f"resuming {resume_from} after epoch {initial_epoch} of {epochs}")
            else:
                model = build_model(arch, input_shape=input_shape, num_classes=data.num_classes, **model_options)
                apply_l2(model, l2)
                # a fresh optimizer: its variables must be created inside the distribution scope
                compile_model(model, make_optimizer(optimizer, lr, momentum=momentum, beta1=beta1, beta2=beta2,
                                                    weight_decay=weight_decay), jit_compile)
            if state is not None and model.optimizer is None:
                raise KerasCNNError(f"{resume_from} has no optimizer state to resume")

            train, steps = make_training_pipeline(
                data.x_train, data.y_train, input_shape=input_shape, mean=mean, std=std, batch_size=batch_size,
                epochs=int(epochs), initial_epoch=initial_epoch, seed=seed, sampling=sampling,
                augment=Augmenter(augment, size) if augment else None)

            def pipeline(x, y):
                return make_pipeline(x, y, input_shape=input_shape, mean=mean, std=std, batch_size=batch_size)

            monitor = "val_loss" if has_val else "loss"
            recorder = cb.HistoryRecorder()
            stateful = {"history": recorder}
            run_callbacks = [recorder]
            if schedule == "plateau":
                rate, after = cb.SCHEDULE_DEFAULTS["plateau"]
                stateful["plateau"] = cb.ReduceOnPlateau(
                    monitor, factor=rate if decay_rate is None else float(decay_rate),
                    patience=after if decay_after is None else max(1, int(decay_after)))
                run_callbacks.append(stateful["plateau"])
            else:
                run_callbacks.append(cb.EpochSchedule(schedule_fn))
            guard = cb.NanGuard()
            run_callbacks.append(guard)
            if record_layers:
                index = np.arange(min(int(probe_size), len(data.x_test)))
                probe = next(iter(pipeline(data.x_test[index], data.y_test[index])))[0]
                activations = cb.ActivationRecorder(run_dir / "activations.npz", record_layers,
                                                    probe, data.y_test[index], index)
                if state is not None:
                    activations.resume_from(initial_epoch, run_dir / "activations.npz" if resume_from.parent == run_dir
                                            else io.sidecar(model_path, "activations.npz"))
                run_callbacks.append(activations)
            if patience:
                stateful["early_stop"] = cb.EarlyStop(monitor, int(patience))
                run_callbacks.append(stateful["early_stop"])

            def run_state(epoch):
                return {"version": 1, "run_id": run_id, "status": "running", "epoch": epoch, "config": config,
                        "callbacks": {k: c.get_state() for k, c in stateful.items()},
                        "seed_generators": cb.seed_generator_states(model)}

            checkpointer = cb.Checkpointer(run_dir, run_state, monitor="val_accuracy" if has_val else "accuracy",
                                           save_every=save_every)
            stateful["checkpoint"] = checkpointer
            run_callbacks.append(checkpointer)
            if tensorboard:
                run_callbacks.append(keras.callbacks.TensorBoard(log_dir=str(tensorboard)))
            run_callbacks.extend(callbacks)
            if state is not None:
                for key, c in stateful.items():
                    if key in state["callbacks"]:
                        c.set_state(state["callbacks"][key])

            if initial_epoch < int(epochs):
                try:
                    model.fit(train, steps_per_epoch=steps, validation_data=pipeline(data.x_val, data.y_val)
                              if has_val else None, epochs=int(epochs), initial_epoch=initial_epoch,
                              callbacks=run_callbacks, verbose=verbose, shuffle=False)
                except KeyboardInterrupt:
                    last = run_dir / "last.keras"
                    done = (io.read_state(last) or {}).get("epoch", 0) if last.exists() else 0
                    raise KerasCNNError(f"interrupted after epoch {done}; the same command with --resume "
                                        f"continues from there ({run_dir}/)") from None
            if guard.diverged_epoch is not None:
                last = run_dir / "last.keras"
                if last.exists() and (io.read_state(last) or {}).get("run_id") == run_id:
                    io.update_state(last, status="diverged")
                raise KerasCNNError(f"training diverged in epoch {guard.diverged_epoch} (the loss became NaN); "
                                    f"try a smaller --lr. The final model was not saved")
            if echo and patience and stateful["early_stop"].stopped_epoch:
                echo(f"early stopping after epoch {stateful['early_stop'].stopped_epoch}: {monitor} has not "
                     f"improved for {patience} epochs")
            test = model.evaluate(pipeline(data.x_test, data.y_test), verbose=0, return_dict=True)
    finally:
        if restore_policy is not None:
            keras.config.set_dtype_policy(restore_policy)

    history = recorder.rows
    config.update(
        run_id=run_id,
        epochs_run=len(history),
        resumed_from=initial_epoch or None,
        steps_per_epoch=steps,
        train_seconds=round(sum(r["seconds"] for r in history), 2),
        test_loss=float(test["loss"]),
        test_accuracy=float(test["accuracy"]),
    )
    io.save_model(model, model_path)
    io.write_csv(io.sidecar(model_path, "history.csv"), history)
    io.write_json(io.sidecar(model_path, "history.json"), history)
    io.write_json(io.sidecar(model_path, "run.json"), config)
    _promote(run_dir, model_path)
    if echo:
        echo(f"test accuracy: {config['test_accuracy']:.4f} (loss {config['test_loss']:.4f}) on {dataset}, "
             f"{config['train_seconds']:.1f} s of training")
        hint = near_chance_hint(config["test_accuracy"], data.num_classes, steps, len(history), batch_size,
                                arch, model_options)
        if hint:
            echo(hint)
    return FitResult(model, history, config["test_loss"], config["test_accuracy"], model_path, config)
