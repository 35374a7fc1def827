"""`evaluate`: test metrics, the per-class report, the confusion matrix and
the class pairs a model mixes up most."""

import dataclasses

import numpy as np

from kerascnn.runs import storage
from kerascnn.config.spelling import spell
from kerascnn.errors import KerasCNNError
from kerascnn.plots import plot_confusion_matrix, plot_gallery
from kerascnn.runs.saved import Run


MAX_GALLERY = 100  # top-loss images drawn at most; the metrics JSON lists them all


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
    top_losses: list = dataclasses.field(default_factory=list)  # [{index, true, predicted, probability, loss}]

    @property
    def confusion_path(self):
        """The confusion matrix PNG written."""
        return next(p for p in self.paths if p.name.endswith(".confusion.png"))

    @property
    def top_losses_path(self):
        """The top losses' gallery PNG written, or None (top_losses=0)."""
        return next((p for p in self.paths if p.name.endswith(".top_losses.png")), None)


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


def confused_pairs_json(pairs):
    """`most_confused`'s pairs as the metrics JSON lists them."""
    return [{"classes": [a, b], "count": n, f"{a}->{b}": ab, f"{b}->{a}": ba} for a, b, n, ab, ba in pairs]


def evaluate(run, dataset=None, *, data_dir=None, batch_size=256, output=None, top_pairs=5, top_losses=16):
    """Evaluate a saved run (a Run or a model path, checkpoints included) on
    its test set, or on `dataset`'s, and write `<stem>.confusion.png`, a
    gallery of the `top_losses` test images of highest loss
    (`<stem>.top_losses.png`, at most MAX_GALLERY drawn; 0 for none) and
    `<stem>.metrics.json`, which lists them all, to `output` (by default
    the model's folder). On
    another dataset than the run's the files are `<stem>.<dataset>.*`, so
    the model's own stay as they were, and a warning says so on stderr; a
    dataset of another class count is an error."""
    if top_losses < 0:
        raise KerasCNNError(f"{spell('top_losses')} must be 0 (none) or more, got {top_losses}")
    run = run if isinstance(run, Run) else Run.load(run)
    inputs = run.inputs(dataset, data_dir)
    model, data = inputs.model, inputs.data
    logits = model.predict(inputs.test_batches(batch_size), verbose=0)
    y_true, y_pred = data.y_test, logits.argmax(axis=1)
    losses = _cross_entropy(logits, y_true, from_logits=_outputs_logits(model))
    loss = float(np.mean(losses))
    worst = highest_losses(losses, class_probabilities(model, logits), y_true, data.class_names, top_losses)
    accuracy = float(np.mean(y_true == y_pred))
    cm, report, report_dict = _reports(y_true, y_pred, data.class_names)
    pairs = most_confused(cm, data.class_names, top_pairs)
    base = run.output_base(output, data.name)
    figure = plot_confusion_matrix(cm, data.class_names,
                                   title=f"{run.model_path.name} on {data.name} test ({accuracy:.2%})")
    pngs = [storage.save_figure(figure, storage.sidecar(base, "confusion.png"))]
    if worst:
        drawn = f"{MAX_GALLERY} of the {len(worst)}" if len(worst) > MAX_GALLERY else f"{len(worst)}"
        gallery = top_loss_figure(worst[:MAX_GALLERY], inputs,
                                  title=f"{run.model_path.name}: the {drawn} {data.name} test images of highest loss")
        pngs.append(storage.save_figure(gallery, storage.sidecar(base, "top_losses.png")))
    metrics = storage.write_json(storage.sidecar(base, "metrics.json"), {
        "model": str(run.model_path), "dataset": data.name, "test_images": len(y_true),
        "loss": loss, "accuracy": accuracy, "confusion_matrix": cm, "class_names": data.class_names,
        "per_class": report_dict,
        "most_confused": confused_pairs_json(pairs),
        "top_losses": worst,
    })
    return EvalResult(loss, accuracy, cm, data.class_names, report, report_dict, pairs, [*pngs, metrics], worst)


def highest_losses(losses, probabilities, y_true, class_names, k):
    """The `k` images of highest loss, highest first, as
    [{index, true, predicted, probability (of the prediction), loss}]."""
    predicted = probabilities.argmax(axis=1)
    return [{"index": int(i), "true": class_names[y_true[i]], "predicted": class_names[predicted[i]],
             "probability": float(probabilities[i, predicted[i]]), "loss": float(losses[i])}
            for i in np.argsort(-losses, kind="stable")[:k]]


def top_loss_figure(worst, inputs, title):
    """The test images of `worst` (highest_losses) as the model took them
    (`inputs`, a run's RunInputs), the normalization undone, captioned with
    prediction, truth, probability, loss and test index."""
    x = inputs.test_images([w["index"] for w in worst])
    captions = [f"pred {w['predicted']} ({w['probability']:.0%})\ntrue {w['true']}\n"
                f"loss {w['loss']:.2f}  #{w['index']}" for w in worst]
    return plot_gallery(inputs.for_display(x), captions, title=title)


def class_probabilities(model, outputs):
    """Softmax probabilities from the model's outputs (its logits, or
    probabilities already when it ends in a softmax)."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if not _outputs_logits(model):
        return outputs
    e = np.exp(outputs - outputs.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


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
