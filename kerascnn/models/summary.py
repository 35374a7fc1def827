"""Parameter accounting by part: the encoder (convolutions and pooling) and
the head (the classifier), with weights, biases and batch-norm parameters
counted apart."""

import math

from kerascnn.models.common import head_start, split_encoder_head

WEIGHT_NAMES = ("kernel", "depthwise_kernel", "pointwise_kernel")
COLUMNS = ("weights", "biases", "batchnorm", "non_trainable", "total")


def _count(layers):
    counts = dict.fromkeys(COLUMNS, 0)
    for layer in layers:
        for v in layer.weights:
            n = math.prod(v.shape)
            if not v.trainable:
                counts["non_trainable"] += n
            elif v.name in WEIGHT_NAMES:
                counts["weights"] += n
            elif v.name == "bias":
                counts["biases"] += n
            elif v.name in ("gamma", "beta"):
                counts["batchnorm"] += n
            else:
                counts.setdefault("other", 0)
                counts["other"] += n
            counts["total"] += n
    counts["trainable"] = counts["total"] - counts["non_trainable"]
    return counts


def parameter_counts(model):
    """{"encoder": {...}, "head": {...}, "total": {...}}, each with weights,
    biases, batchnorm (trainable gamma/beta), non_trainable (moving
    statistics), trainable and total."""
    encoder, head = split_encoder_head(model)
    parts = {"encoder": _count(encoder), "head": _count(head)}
    parts["total"] = {k: parts["encoder"].get(k, 0) + parts["head"].get(k, 0)
                      for k in set(parts["encoder"]) | set(parts["head"])}
    return parts


def format_parameter_table(counts):
    """The parameter counts as a plain-text table."""
    cols = ("weights", "biases", "batchnorm", "non_trainable", "trainable", "total")
    header = ("part",) + cols
    rows = [header] + [(part,) + tuple(f"{counts[part].get(c, 0):,}" for c in cols)
                       for part in ("encoder", "head", "total")]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def layer_table(model):
    """(name, type, output shape, parameters, part) for every layer."""
    start = head_start(model)
    rows = []
    for i, layer in enumerate(model.layers):
        shape = getattr(layer, "output", None)
        shape = tuple(shape.shape) if shape is not None else ()
        part = "input" if type(layer).__name__ == "InputLayer" else ("encoder" if i < start else "head")
        rows.append((layer.name, type(layer).__name__, shape, layer.count_params(), part))
    return rows
