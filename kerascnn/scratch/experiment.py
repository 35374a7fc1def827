"""`kerascnn scratch`: the from-scratch LeNet-5 trained as the report trained
it, with the same files and pictures as `fit`: the model (`<name>.npz`),
the history (`<name>.history.csv`/`.json`), every iteration's loss
(`<name>.steps.csv`), the curves, the confusion matrix and a metrics JSON
with the most-confused pairs."""

import dataclasses
import time

import numpy as np

from kerascnn.errors import KerasCNNError

SIZE = 32  # LeNet-5's input: MNIST's 28x28 digits padded to 32x32, as the paper did

# The report's settings (on MNIST's 59,000 training images), and those of scikit-learn's digits: their 1,293
# training images make 7 batches of 200 an epoch, and from N(0, 0.001^2) weights the validation accuracy was
# still 10% after 6 epochs and 40% after 20 (on MNIST the loss falls within the first 50 iterations);
# batches of 20 from N(0, 0.01^2) reach about 75% test accuracy in 3 epochs.
DEFAULTS = {"batch_size": 200, "weight_scale": 1e-3, "val_size": 1000}
DATASET_DEFAULTS = {"digits": {"batch_size": 20, "weight_scale": 1e-2, "val_size": 0.1}}


def scratch_defaults(dataset, **given):
    """`given` with each None replaced by the dataset's default."""
    defaults = {**DEFAULTS, **DATASET_DEFAULTS.get(dataset, {})}
    return {k: defaults[k] if v is None and k in defaults else v for k, v in given.items()}


@dataclasses.dataclass
class ScratchResult:
    test_accuracy: float
    test_loss: float
    confusion: np.ndarray
    confused_pairs: list
    history: list
    seconds_per_epoch: float
    paths: list


def to_lenet_input(images, mean, std, size=SIZE):
    """uint8 images (N, H, W, C) -> float64 (N, C, size, size): scaled to
    [0, 1], centred on a border of zeros up to `size`, then normalized with
    the training set's per-channel mean and std, as `fit` prepares them with
    `--resize pad`."""
    x = np.asarray(images).astype(np.float64).transpose(0, 3, 1, 2) / 255.0
    h, w = x.shape[2:]
    if h > size or w > size:
        raise KerasCNNError(f"LeNet-5 from scratch takes images up to {size}x{size}, got {h}x{w}")
    top, left = (size - h) // 2, (size - w) // 2
    x = np.pad(x, ((0, 0), (0, 0), (top, size - h - top), (left, size - w - left)))
    mean, std = np.asarray(mean).reshape(1, -1, 1, 1), np.asarray(std).reshape(1, -1, 1, 1)
    return (x - mean) / std


def load_scratch_data(dataset, data_dir=None, *, val_size=1000, train_size=None, seed=0):
    """The Dataset and its three splits as LeNet-5 inputs (float64 NCHW)."""
    from kerascnn.data.datasets import load_dataset

    data = load_dataset(dataset, data_dir, val_size=val_size, train_size=train_size, seed=seed)
    mean, std = data.stats()
    arrays = {f"x_{part}": to_lenet_input(getattr(data, f"x_{part}"), mean, std) for part in ("train", "val", "test")}
    arrays.update({f"y_{part}": getattr(data, f"y_{part}") for part in ("train", "val", "test")})
    return data, arrays


def train_scratch(dataset="mnist", *, epochs=40, batch_size=None, lr=1e-3, optimizer="adam", decay_rate=0.8,
                  decay_after=10, val_size=None, train_size=None, sampling="sequential", weight_scale=None,
                  seed=0, fast=False, data_dir=None, output="saved_models", name="lenet5_scratch",
                  print_every=100, echo=print):
    """Train the NumPy LeNet-5 with the report's settings (the defaults: Adam
    at 1e-3, batch 200, x0.8 after epoch 10, 40 epochs, a 1,000-image
    validation set, batches in order, weights from N(0, 0.001^2); on
    digits, DATASET_DEFAULTS) and write its files to `output`. `fast` uses
    the im2col convolution instead of the report's loops."""
    from kerascnn.runs import storage
    from kerascnn.scratch.lenet5 import LeNet5
    from kerascnn.scratch.solver import Solver

    chosen = scratch_defaults(dataset, batch_size=batch_size, weight_scale=weight_scale, val_size=val_size)
    batch_size, weight_scale, val_size = chosen["batch_size"], chosen["weight_scale"], chosen["val_size"]
    folder = storage.check_writable(storage.ensure_dir(output))
    data, arrays = load_scratch_data(dataset, data_dir, val_size=val_size, train_size=train_size, seed=seed)
    model = LeNet5(arrays["x_train"].shape[1:], data.num_classes, weight_scale=weight_scale, seed=seed, fast=fast)
    solver = Solver(model, arrays, update_rule=optimizer, learning_rate=lr, lr_decay=decay_rate,
                    decay_after=decay_after, batch_size=batch_size, num_epochs=epochs, sampling=sampling, seed=seed,
                    print_every=print_every, echo=echo)
    echo(f"LeNet-5 from scratch ({'im2col' if fast else 'loops'}) on {data.name}: {len(arrays['x_train'])} training, "
         f"{len(arrays['x_val'])} validation, {len(arrays['x_test'])} test images; {optimizer} at {lr:g}, "
         f"batch {batch_size}, weights from N(0, {weight_scale:g}^2)")
    start = time.perf_counter()
    solver.train()
    seconds = time.perf_counter() - start
    test_loss, test_accuracy = solver.evaluate(arrays["x_test"], arrays["y_test"])
    settings = dict(dataset=data.name, epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer,
                    decay_rate=decay_rate, decay_after=decay_after, val_size=val_size, train_size=train_size,
                    sampling=sampling, weight_scale=weight_scale, seed=seed, conv="im2col" if fast else "loops")
    result = write_files(folder, name, model, solver, data, arrays, settings,
                         test=(test_loss, test_accuracy), seconds_per_epoch=seconds / epochs)
    echo(f"test accuracy: {test_accuracy:.4f} (loss {test_loss:.4f}) on {data.name}, "
         f"{seconds / epochs:.1f} s per epoch")
    return result


def write_files(folder, name, model, solver, data, arrays, settings, *, test, seconds_per_epoch):
    """The run's files, the model last (nothing half-written is left)."""
    from sklearn.metrics import confusion_matrix

    from kerascnn.runs import storage
    from kerascnn.analysis.evaluation import confused_pairs_json, most_confused
    from kerascnn.plots import plot_confusion_matrix, plot_history
    from kerascnn.runs.files import RunFiles, steps_text

    files = RunFiles(folder, name)
    test_loss, test_accuracy = test
    y_pred = model.predict(arrays["x_test"]).argmax(axis=1)
    cm = confusion_matrix(arrays["y_test"], y_pred, labels=range(data.num_classes))
    pairs = most_confused(cm, data.class_names)
    title = f"LeNet-5 from scratch on {data.name}"
    paths = [storage.write_csv(files.history_csv, solver.history), storage.write_json(files.history_json, solver.history),
             storage.write_text(files.steps_csv, steps_text(solver.step_rows)),
             storage.save_figure(plot_history(solver.history, title=f"{title}: training curves", steps=solver.step_rows,
                                         steps_per_epoch=solver.iterations_per_epoch), files.sidecar("curves.png")),
             storage.save_figure(plot_confusion_matrix(cm, data.class_names, title=f"{title} test ({test_accuracy:.2%})"),
                            files.sidecar("confusion.png")),
             storage.write_json(files.sidecar("metrics.json"), {
                 "model": str(files.sidecar("npz")), "settings": settings, "test_images": len(y_pred),
                 "loss": test_loss, "accuracy": test_accuracy, "seconds_per_epoch": seconds_per_epoch,
                 "confusion_matrix": cm, "class_names": data.class_names,
                 "most_confused": confused_pairs_json(pairs)}),
             model.save(files.sidecar("npz"))]
    return ScratchResult(test_accuracy, test_loss, cm, pairs, solver.history, seconds_per_epoch, paths)
