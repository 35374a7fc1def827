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
    batch_size=256,
    optimizer="adamw",
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

    Model options (activation, pool, kernel, channels, batchnorm for LeNet)
    go to the builder. Nothing is written until training and the test
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
    if int(batch_size) < 1:
        raise KerasCNNError(f"batch size must be at least 1, got {batch_size}")
    out_dir = io.ensure_dir(output)
    model_path = out_dir / f"{name}{io.MODEL_SUFFIX}"
    opt = make_optimizer(optimizer, lr, momentum=momentum, beta1=beta1, beta2=beta2, weight_decay=weight_decay)

    keras.utils.set_random_seed(seed)
    data = load_dataset(dataset, data_dir, val_size=val_size, train_size=train_size, seed=seed)
    height, width, channels = data.image_shape
    if image_size is not None:
        height = width = int(image_size)
    input_shape = (height, width, channels)
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
