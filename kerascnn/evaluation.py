"""`evaluate`: test metrics, the per-class report, the confusion matrix and
the class pairs a model mixes up most."""

import dataclasses
import sys

import numpy as np

from kerascnn import io
from kerascnn.config import spell
from kerascnn.errors import KerasCNNError
from kerascnn.plots import plot_confusion_matrix
from kerascnn.run import Run


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


def evaluate(run, dataset=None, *, data_dir=None, batch_size=256, output=None, top_pairs=5):
    """Evaluate a saved run (a Run or a model path, checkpoints included) on
    its test set, or on `dataset`'s, and write `<stem>.confusion.png` and
    `<stem>.metrics.json` to `output` (by default the model's folder). On
    another dataset than the run's the files are `<stem>.<dataset>.*`, so
    the model's own stay as they were, and a warning says so on stderr; a
    dataset of another class count is an error."""
    from kerascnn.data import make_pipeline

    run = run if isinstance(run, Run) else Run.load(run)
    model = run.model()
    data = run.load_data(dataset, data_dir)
    check_fits(run, data, model.output_shape[-1])
    mean, std = run.stats_for(data)
    test = make_pipeline(data.x_test, data.y_test, input_shape=model.input_shape[1:], mean=mean, std=std,
                         batch_size=batch_size, resize=run.resize)
    logits = model.predict(test, verbose=0)
    y_true, y_pred = data.y_test, logits.argmax(axis=1)
    loss = float(np.mean(_cross_entropy(logits, y_true, from_logits=_outputs_logits(model))))
    accuracy = float(np.mean(y_true == y_pred))
    cm, report, report_dict = _reports(y_true, y_pred, data.class_names)
    pairs = most_confused(cm, data.class_names, top_pairs)
    base = run.output_base(output, data.name)
    figure = plot_confusion_matrix(cm, data.class_names,
                                   title=f"{run.model_path.name} on {data.name} test ({accuracy:.2%})")
    png = io.save_figure(figure, io.sidecar(base, "confusion.png"))
    metrics = io.write_json(io.sidecar(base, "metrics.json"), {
        "model": str(run.model_path), "dataset": data.name, "test_images": len(y_true),
        "loss": loss, "accuracy": accuracy, "confusion_matrix": cm, "class_names": data.class_names,
        "per_class": report_dict,
        "most_confused": [{"classes": [a, b], "count": n, f"{a}->{b}": ab, f"{b}->{a}": ba}
                          for a, b, n, ab, ba in pairs],
    })
    return EvalResult(loss, accuracy, cm, data.class_names, report, report_dict, pairs, [png, metrics])


def check_fits(run, data, classes):
    """A model scores only a dataset of its class count (an error otherwise);
    one other than its own gets a warning on stderr. Image size and channels
    the pipeline adapts."""
    if classes != data.num_classes:
        trained = (f"it was trained on {run.dataset}: evaluate it there (leave out {spell('dataset')}) or"
                   if run.dataset else "evaluate it")
        raise KerasCNNError(f"the model {run.model_path} has {classes} classes but dataset {data.name} has "
                            f"{data.num_classes}; {trained} on a dataset with {classes} classes")
    if run.dataset and data.name != run.dataset:
        print(f"warning: this model was trained on {run.dataset}; evaluating it on {data.name}", file=sys.stderr)


def _reports(y_true, y_pred, names):
    """The confusion matrix and scikit-learn's per-class report, as text and as a dict."""
    from sklearn.metrics import classification_report, confusion_matrix

    labels = list(range(len(names)))
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    common = dict(labels=labels, target_names=names, zero_division=0)
    return cm, classification_report(y_true, y_pred, digits=4, **common), \
        classification_report(y_true, y_pred, output_dict=True, **common)


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
