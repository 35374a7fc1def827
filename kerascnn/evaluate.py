"""`evaluate`: test metrics, the per-class report, the confusion matrix and
the class pairs a model mixes up most."""

import dataclasses
from pathlib import Path

import numpy as np

from kerascnn import io
from kerascnn.data import load_dataset, make_pipeline
from kerascnn.errors import KerasCNNError


@dataclasses.dataclass
class EvalResult:
    loss: float
    accuracy: float
    confusion: np.ndarray
    class_names: list
    report: str
    report_dict: dict
    confused_pairs: list
    paths: list


def run_settings(model_path, model, dataset=None, data_dir=None):
    """The dataset and normalization a model was trained with: from its
    run configuration when there is one, else from `dataset` alone."""
    config_path = io.sidecar(model_path, "run.json")
    config = io.read_json(config_path) if config_path.exists() else {}
    dataset = dataset or config.get("dataset")
    if dataset is None:
        raise KerasCNNError(f"{model_path} has no {config_path.name} beside it; say which data with --dataset")
    same = dataset == config.get("dataset")
    data = load_dataset(
        dataset,
        data_dir or (config.get("data_dir") if same else None),
        val_size=config.get("val_size", 0.1) if same else 0.1,
        seed=config.get("seed", 0) if same else 0,
    )
    n_out = model.output_shape[-1]
    if n_out != data.num_classes:
        raise KerasCNNError(f"{model_path} predicts {n_out} classes but {dataset} has {data.num_classes}")
    mean, std = (config["mean"], config["std"]) if same and "mean" in config else data.stats()
    return data, mean, std, config


def most_confused(cm, class_names, top=5):
    """The class pairs mixed up most, either way: [(a, b, total, a->b, b->a)]."""
    pairs = []
    for i in range(len(cm)):
        for j in range(i + 1, len(cm)):
            total = int(cm[i, j] + cm[j, i])
            if total:
                pairs.append((class_names[i], class_names[j], total, int(cm[i, j]), int(cm[j, i])))
    pairs.sort(key=lambda p: -p[2])
    return pairs[:top]


def evaluate(model_path, dataset=None, *, data_dir=None, batch_size=256, output=None, top_pairs=5):
    """Evaluate a saved model on its test set and write
    `<name>.confusion.png` and `<name>.metrics.json` to `output` (by default
    the model's folder)."""
    model_path = Path(model_path)
    model = io.load_model(model_path)
    from sklearn.metrics import classification_report, confusion_matrix

    from kerascnn.visualize import plot_confusion_matrix

    data, mean, std, _ = run_settings(model_path, model, dataset, data_dir)
    test = make_pipeline(data.x_test, data.y_test, input_shape=model.input_shape[1:],
                         mean=mean, std=std, batch_size=batch_size)
    logits = model.predict(test, verbose=0)
    y_true, y_pred = data.y_test, logits.argmax(axis=1)
    loss = float(np.mean(_cross_entropy(logits, y_true, from_logits=_outputs_logits(model))))
    accuracy = float(np.mean(y_true == y_pred))
    labels = list(range(data.num_classes))
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    names = data.class_names
    report = classification_report(y_true, y_pred, labels=labels, target_names=names, digits=4, zero_division=0)
    report_dict = classification_report(y_true, y_pred, labels=labels, target_names=names, output_dict=True,
                                         zero_division=0)
    pairs = most_confused(cm, names, top_pairs)

    out_dir = io.ensure_dir(output or model_path.parent)
    base = out_dir / model_path.name
    png = plot_confusion_matrix(cm, names, io.sidecar(base, "confusion.png"),
                                title=f"{model_path.name} on {data.name} test ({accuracy:.2%})")
    metrics = io.write_json(io.sidecar(base, "metrics.json"), {
        "model": str(model_path), "dataset": data.name, "test_images": len(y_true),
        "loss": loss, "accuracy": accuracy, "confusion_matrix": cm, "class_names": names,
        "per_class": report_dict,
        "most_confused": [{"classes": [a, b], "count": n, f"{a}->{b}": ab, f"{b}->{a}": ba}
                          for a, b, n, ab, ba in pairs],
    })
    return EvalResult(loss, accuracy, cm, names, report, report_dict, pairs, [png, metrics])


def _outputs_logits(model):
    last = model.layers[-1]
    activation = getattr(last, "activation", None)
    return getattr(activation, "__name__", "linear") != "softmax"


def _cross_entropy(outputs, labels, from_logits):
    outputs = outputs.astype(np.float64)
    if from_logits:
        shifted = outputs - outputs.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    else:
        log_probs = np.log(np.clip(outputs, 1e-12, 1.0))
    return -log_probs[np.arange(len(labels)), labels]
