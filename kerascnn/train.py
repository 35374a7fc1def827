"""`fit`: train a registered architecture on a dataset and save the run."""

import dataclasses
import time
from pathlib import Path

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
        return [self.model_path] + [io.sidecar(self.model_path, k) for k in ("history.csv", "history.json", "run.json")]


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


def compile_model(model, optimizer):
    import keras

    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


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
    data_dir=None,
    val_size=0.1,
    train_size=None,
    image_size=None,
    seed=0,
    output="saved_models",
    name=None,
    verbose="auto",
    **model_options,
):
    """Train `arch` on `dataset`, then save the model, its history and the
    resolved run configuration to `output/<name>.*`.

    Model options (activation, pool, kernel, channels, batchnorm for LeNet;
    activation, batchnorm, width, ... for the other families) go to the
    builder. `optimizer`, `lr` and `batch_size` default to the family's settings;
    `image_size` to the data's own size for LeNet, and for the other
    families to their textbook size when an accelerator is visible, else
    the smallest size they take (said in one line). Nothing is written until training and the test
    evaluation have succeeded, and every file is written atomically.
    Returns a FitResult.
    """
    import keras

    spec = get_arch(arch)
    name = name or arch
    if not name or "/" in name or name.startswith("."):
        raise KerasCNNError(f"--name must be a plain file name, got {name!r}")
    if int(epochs) < 1:
        raise KerasCNNError(f"epochs must be at least 1, got {epochs}")
    batch_size = spec.batch_size if batch_size is None else batch_size
    if int(batch_size) < 1:
        raise KerasCNNError(f"batch size must be at least 1, got {batch_size}")
    out_dir = io.ensure_dir(output)
    model_path = out_dir / f"{name}{io.MODEL_SUFFIX}"
    if optimizer is None:
        optimizer, lr = spec.optimizer, spec.lr if lr is None else lr
    opt = make_optimizer(optimizer, lr, momentum=momentum, beta1=beta1, beta2=beta2, weight_decay=weight_decay)

    keras.utils.set_random_seed(seed)
    data = load_dataset(dataset, data_dir, val_size=val_size, train_size=train_size, seed=seed)
    size = resolve_image_size(spec, image_size, data.image_shape[0], echo=print if verbose else None)
    input_shape = (size, size, data.image_shape[2])
    model = build_model(arch, input_shape=input_shape, num_classes=data.num_classes, **model_options)
    compile_model(model, opt)
    mean, std = data.stats()

    def pipeline(x, y, shuffle=False):
        return make_pipeline(x, y, input_shape=input_shape, mean=mean, std=std,
                             batch_size=int(batch_size), shuffle=shuffle, seed=seed)

    from kerascnn.callbacks import HistoryRecorder

    recorder = HistoryRecorder()
    val = pipeline(data.x_val, data.y_val) if len(data.x_val) else None
    started = time.perf_counter()
    model.fit(pipeline(data.x_train, data.y_train, shuffle=True), validation_data=val,
              epochs=int(epochs), callbacks=[recorder], verbose=verbose, shuffle=False)
    train_seconds = time.perf_counter() - started
    if any(r.get("loss") != r.get("loss") for r in recorder.rows):
        raise KerasCNNError("training diverged (the loss became NaN); try a smaller --lr. Nothing was saved")
    test = model.evaluate(pipeline(data.x_test, data.y_test), verbose=0, return_dict=True)

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
        "batch_size": int(batch_size),
        "optimizer": optimizer,
        "optimizer_config": {k: v for k, v in opt.get_config().items()
                             if isinstance(v, (int, float, str, bool, type(None)))},
        "seed": seed,
        "backend": keras.backend.backend(),
        "keras_version": keras.__version__,
        "train_seconds": round(train_seconds, 2),
        "test_loss": float(test["loss"]),
        "test_accuracy": float(test["accuracy"]),
    }
    io.save_model(model, model_path)
    io.write_csv(io.sidecar(model_path, "history.csv"), recorder.rows)
    io.write_json(io.sidecar(model_path, "history.json"), recorder.rows)
    io.write_json(io.sidecar(model_path, "run.json"), config)
    return FitResult(model, recorder.rows, config["test_loss"], config["test_accuracy"], model_path, config)
