"""Pictures that explain a model: learned kernels, feature maps, training
curves and the confusion matrix.

Figures are built with matplotlib's object API (no pyplot state), so they
render on a machine without a screen and never disturb a notebook.
"""

import dataclasses
import math
from pathlib import Path

import numpy as np

from kerascnn import io
from kerascnn.errors import KerasCNNError

MAX_KERNEL_ROWS = 32  # output channels drawn at most
MAX_KERNEL_COLS = 16  # input channels drawn at most
MAX_MAPS = 64


def _figure(width, height):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _bare(ax):
    """No ticks or frame, but room for a label."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def spatial_layers(model):
    """Names of the layers whose output is a (batch, H, W, C) feature map."""
    return [layer.name for layer in model.layers
            if type(layer).__name__ != "InputLayer" and len(layer.output.shape) == 4]


def get_spatial_layer(model, name):
    valid = spatial_layers(model)
    if name not in valid:
        raise KerasCNNError(f"no layer {name!r} with spatial output in {model.name}; valid layers: {', '.join(valid)}")
    return model.get_layer(name)


def kernel_images(layer):
    """The layer's kernels as images: (out, in, kh, kw) grayscale, or
    (out, 1, kh, kw, 3) RGB when the layer reads 3 channels. Depthwise
    kernels give one image per input channel. None for a layer without
    kernels."""
    weights = {w.name: w for w in layer.weights}
    kernel = weights.get("kernel", weights.get("depthwise_kernel"))
    if kernel is None or len(kernel.shape) != 4:
        return None
    import keras

    k = np.asarray(keras.ops.convert_to_numpy(kernel))
    k = np.transpose(k, (3, 2, 0, 1))  # (out, in, kh, kw)
    if "depthwise_kernel" in weights and "kernel" not in weights:
        k = np.transpose(k, (1, 0, 2, 3))  # one image per input channel
    if k.shape[1] == 3:
        k = np.transpose(k, (0, 2, 3, 1))[:, None]  # (out, 1, kh, kw, 3)
    return k


def plot_kernels(layer, path):
    """Draw every kernel of a conv layer in a grid, each scaled to its own
    range (RGB when the layer reads 3 channels, else one gray tile per
    input channel)."""
    k = kernel_images(layer)
    if k is None:
        raise KerasCNNError(f"layer {layer.name!r} has no convolution kernels to draw")
    n_out, n_in = k.shape[:2]
    rows, cols = min(n_out, MAX_KERNEL_ROWS), min(n_in, MAX_KERNEL_COLS)
    if cols == 1:  # lay single-channel kernels out in a near-square grid
        grid_cols = min(rows, 8 if rows > 16 else max(1, math.ceil(math.sqrt(rows))))
        cells = [(i, 0) for i in range(rows)]
        grid_rows = math.ceil(rows / grid_cols)
    else:
        grid_rows, grid_cols = rows, cols
        cells = [(i, j) for i in range(rows) for j in range(cols)]
    fig = _figure(1.1 * grid_cols + 0.5, 1.1 * grid_rows + 0.8)
    axes = fig.subplots(grid_rows, grid_cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for n, (i, j) in enumerate(cells):
        ax = axes.flat[n]
        ax.axis("on")
        tile = k[i, j]
        lo, hi = tile.min(), tile.max()
        tile = (tile - lo) / (hi - lo) if hi > lo else np.zeros_like(tile)
        ax.imshow(tile, cmap=None if tile.ndim == 3 else "gray", vmin=0, vmax=1, interpolation="nearest")
        _bare(ax)
        if cols == 1:
            ax.set_title(str(i), fontsize=7)
        else:
            if i == 0:
                ax.set_title(f"in {j}", fontsize=7)
            if j == 0:
                ax.set_ylabel(f"out {i}", fontsize=7)
    shown = "" if (rows, cols) == (n_out, n_in) else f" (first {rows} of {n_out} out x {cols} of {n_in} in)"
    kind = "RGB" if k.ndim == 5 else ("rows: output, columns: input channel" if cols > 1 else "one per filter")
    fig.suptitle(f"{layer.name}: {n_out} kernels {k.shape[2]}x{k.shape[3]} ({kind}){shown}")
    return io.save_figure(fig, path)


def plot_feature_maps(maps, image, path, *, title, image_title):
    """Draw `image` and the layer's feature maps (H, W, C) beside it."""
    channels = maps.shape[-1]
    shown = min(channels, MAX_MAPS)
    cols = min(shown, 8)
    rows = math.ceil(shown / cols)
    image_cols = 2 if rows >= 2 else 1
    fig = _figure(1.4 * (cols + image_cols), 1.4 * rows + 0.6)
    grid = fig.add_gridspec(rows, cols + image_cols)
    ax = fig.add_subplot(grid[:image_cols, :image_cols])
    ax.imshow(image.squeeze(), cmap="gray" if image.shape[-1] == 1 else None)
    ax.set_title(image_title, fontsize=8)
    ax.axis("off")
    for c in range(shown):
        ax = fig.add_subplot(grid[c // cols, image_cols + c % cols])
        ax.imshow(maps[..., c], cmap="viridis", interpolation="nearest")
        ax.set_title(str(c), fontsize=7)
        ax.axis("off")
    more = "" if shown == channels else f" (first {shown} of {channels} channels)"
    fig.suptitle(title + more)
    return io.save_figure(fig, path)


def plot_history(rows, path, title="training curves"):
    """Loss and accuracy per epoch, train and validation, from history rows."""
    epochs = [r["epoch"] for r in rows]
    fig = _figure(10, 3.8)
    ax_loss, ax_acc = fig.subplots(1, 2)
    for ax, key in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        for prefix, style in (("", "-o"), ("val_", "--s")):
            values = [r.get(prefix + key) for r in rows]
            if any(v is not None for v in values):
                ax.plot(epochs, values, style, markersize=3, label=f"{'validation' if prefix else 'train'} {key}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    return io.save_figure(fig, path)


def plot_comparison(runs, path, title="training curves compared"):
    """Overlay the curves of several runs: `runs` is a list of (label,
    history rows). Left: training loss; right: validation (solid) and
    training (dotted) accuracy."""
    fig = _figure(11, 4.2)
    ax_loss, ax_acc = fig.subplots(1, 2)
    for n, (label, rows) in enumerate(runs):
        color = f"C{n % 10}"
        epochs = [r["epoch"] for r in rows]
        ax_loss.plot(epochs, [r["loss"] for r in rows], "-o", color=color, markersize=3, label=label)
        if any("val_accuracy" in r for r in rows):
            ax_acc.plot(epochs, [r.get("val_accuracy") for r in rows], "-o", color=color, markersize=3,
                        label=f"{label} (validation)")
        ax_acc.plot(epochs, [r["accuracy"] for r in rows], ":", color=color, label=f"{label} (train)")
    for ax, key in ((ax_loss, "training loss"), (ax_acc, "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return io.save_figure(fig, path)


def compare_runs(model_paths, output, title="training curves compared"):
    """Read the history and run configuration of saved runs, draw their
    curves in one PNG at `output`, and return (rows for a table, path)."""
    runs, table = [], []
    for path in model_paths:
        path = Path(path)
        history, config = io.sidecar(path, "history.json"), io.sidecar(path, "run.json")
        if not history.exists() or not config.exists():
            raise KerasCNNError(f"{path} has no {history.name} and {config.name} beside it; "
                                f"compare needs runs saved by `kerascnn fit`")
        rows, cfg = io.read_json(history), io.read_json(config)
        label = path.name[: -len(io.MODEL_SUFFIX)] if path.name.endswith(io.MODEL_SUFFIX) else path.name
        runs.append((label, rows))
        table.append({
            "run": label,
            "optimizer": cfg.get("optimizer"),
            "lr": cfg.get("lr", cfg.get("optimizer_config", {}).get("learning_rate")),
            "epochs": len(rows),
            "final train accuracy": rows[-1].get("accuracy"),
            "best val accuracy": max((r["val_accuracy"] for r in rows if "val_accuracy" in r), default=None),
            "test accuracy": cfg.get("test_accuracy"),
            "seconds": cfg.get("train_seconds"),
        })
    io.ensure_dir(Path(output).parent)
    return table, plot_comparison(runs, output, title=title)


def plot_confusion_matrix(cm, class_names, path, title="confusion matrix"):
    from sklearn.metrics import ConfusionMatrixDisplay

    size = max(5.0, 0.6 * len(class_names) + 2)
    fig = _figure(size, size)
    ax = fig.subplots()
    ConfusionMatrixDisplay(cm, display_labels=class_names).plot(
        ax=ax, cmap="Blues", colorbar=False, xticks_rotation=45, values_format="d")
    ax.set_title(title)
    return io.save_figure(fig, path)


MAX_EVOLUTION_ROWS = 8
MAX_EVOLUTION_COLS = 8


def _pick_epochs(epochs, limit=MAX_EVOLUTION_ROWS):
    """Row indices of at most `limit` recorded epochs, first and last kept."""
    if len(epochs) <= limit:
        return list(range(len(epochs)))
    return sorted({int(round(i)) for i in np.linspace(0, len(epochs) - 1, limit)})


def plot_map_evolution(records, layer, path, *, probe=0, title):
    """Feature maps of `layer` for probe image `probe`, one row per
    recorded epoch (0 = before training), first channels as columns; each
    map scaled to its own range."""
    maps = records[f"{layer}/maps"][:, probe].astype(np.float32)  # (E, H, W, C)
    epochs = records["epochs"]
    rows = _pick_epochs(epochs)
    cols = min(maps.shape[-1], MAX_EVOLUTION_COLS)
    fig = _figure(1.3 * cols + 0.6, 1.3 * len(rows) + 0.6)
    axes = fig.subplots(len(rows), cols, squeeze=False)
    for r, e in enumerate(rows):
        for c in range(cols):
            ax = axes[r, c]
            ax.imshow(maps[e, ..., c], cmap="viridis", interpolation="nearest")
            _bare(ax)
            if r == 0:
                ax.set_title(f"channel {c}", fontsize=7)
            if c == 0:
                ax.set_ylabel(f"epoch {int(epochs[e])}", fontsize=8)
    fig.suptitle(title)
    return io.save_figure(fig, path)


def plot_kernel_evolution(records, layer, path, *, title):
    """The first kernels of `layer` (input channel 0, or RGB for 3 input
    channels), one row per recorded epoch; each column shares one gray
    scale across epochs, so growth in magnitude shows."""
    k = records[f"{layer}/kernel"].astype(np.float32)  # (E, kh, kw, in, out) or depthwise (E, kh, kw, in, 1)
    if k.shape[-1] == 1 and k.shape[-2] > 1:
        k = np.swapaxes(k, -1, -2)  # depthwise: one kernel per input channel
    epochs = records["epochs"]
    rows = _pick_epochs(epochs)
    cols = min(k.shape[-1], MAX_EVOLUTION_COLS)
    rgb = k.shape[-2] == 3
    fig = _figure(1.1 * cols + 0.6, 1.1 * len(rows) + 0.6)
    axes = fig.subplots(len(rows), cols, squeeze=False)
    for c in range(cols):
        tiles = k[..., c] if rgb else k[..., 0, c]  # (E, kh, kw[, 3])
        lo, hi = tiles.min(), tiles.max()
        for r, e in enumerate(rows):
            ax = axes[r, c]
            tile = (tiles[e] - lo) / (hi - lo) if hi > lo else np.zeros_like(tiles[e])
            ax.imshow(tile, cmap=None if rgb else "gray", vmin=0, vmax=1, interpolation="nearest")
            _bare(ax)
            if r == 0:
                ax.set_title(f"filter {c}", fontsize=7)
            if c == 0:
                ax.set_ylabel(f"epoch {int(epochs[e])}", fontsize=8)
    fig.suptitle(title)
    return io.save_figure(fig, path)


def visualize_epochs(model_path=None, layer="conv1", *, index=0, output=None, models_dir="saved_models"):
    """Draw how a layer's feature maps (for probe image `index`) and
    kernels evolved over training, from the `<name>.activations.npz` that
    `fit(record_layers=[layer])` wrote beside the model."""
    model_path = Path(model_path) if model_path else io.newest_model(models_dir)
    npz = io.sidecar(model_path, "activations.npz")
    if not npz.exists():
        raise KerasCNNError(f"no recorded activations at {npz}; train with `kerascnn fit --record-layer {layer}`")
    with np.load(npz) as f:
        records = {k: f[k] for k in f.files}
    recorded = sorted(k.split("/")[0] for k in records if k.endswith("/maps"))
    if f"{layer}/maps" not in records:
        raise KerasCNNError(f"layer {layer!r} was not recorded in {npz}; recorded: {', '.join(recorded)}")
    probes = records[f"{layer}/maps"].shape[1]
    if not 0 <= index < probes:
        raise KerasCNNError(f"--index must be between 0 and {probes - 1} (the recorded probe images), got {index}")
    out_dir = io.ensure_dir(output or model_path.parent)
    base = out_dir / model_path.name
    test_index = int(records["probe_index"][index])
    paths = [plot_map_evolution(
        records, layer, io.sidecar(base, f"{layer}.maps_by_epoch.{index}.png"), probe=index,
        title=f"{model_path.name}: {layer} feature maps of test #{test_index} by epoch")]
    if f"{layer}/kernel" in records:
        paths.append(plot_kernel_evolution(records, layer, io.sidecar(base, f"{layer}.kernels_by_epoch.png"),
                                           title=f"{model_path.name}: {layer} kernels by epoch"))
    return VisualizeResult(model_path, layer, paths)


@dataclasses.dataclass
class VisualizeResult:
    model_path: Path
    layer: str
    paths: list


def layer_activations(model, layer_names, images):
    """Outputs of the named layers for a batch of preprocessed images."""
    import keras

    extractor = keras.Model(model.input, [model.get_layer(n).output for n in layer_names])
    outputs = extractor(images, training=False)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    return [keras.ops.convert_to_numpy(o) for o in outputs]


def visualize(model_path=None, layer="conv1", *, index=0, dataset=None, data_dir=None, output=None,
              models_dir="saved_models"):
    """Write the pictures of one layer of a saved model: its kernels (for a
    conv layer), its feature maps for test image `index`, and the training
    curves from the model's history. Returns the written paths."""
    from kerascnn.data import make_pipeline
    from kerascnn.evaluate import run_settings

    model_path = Path(model_path) if model_path else io.newest_model(models_dir)
    model = io.load_model(model_path)
    target = get_spatial_layer(model, layer)
    data, mean, std, _ = run_settings(model_path, model, dataset, data_dir)
    if not 0 <= index < len(data.x_test):
        raise KerasCNNError(f"--index must be between 0 and {len(data.x_test) - 1}, got {index}")
    out_dir = io.ensure_dir(output or model_path.parent)
    base = out_dir / model_path.name
    paths = []
    if kernel_images(target) is not None:
        paths.append(plot_kernels(target, io.sidecar(base, f"{layer}.kernels.png")))
    batch = make_pipeline(data.x_test[index:index + 1], data.y_test[index:index + 1],
                          input_shape=model.input_shape[1:], mean=mean, std=std, batch_size=1)
    images, _ = next(iter(batch))
    (maps,) = layer_activations(model, [layer], images)
    label = data.class_names[data.y_test[index]]
    paths.append(plot_feature_maps(
        maps[0], data.x_test[index], io.sidecar(base, f"{layer}.maps.{index}.png"),
        title=f"{model_path.name}: {layer} feature maps {tuple(maps.shape[1:])}",
        image_title=f"{data.name} test #{index}: {label}"))
    history_path = io.sidecar(model_path, "history.json")
    if history_path.exists():
        paths.append(plot_history(io.read_json(history_path), io.sidecar(base, "curves.png"),
                                  title=f"{model_path.name} training curves"))
    return VisualizeResult(model_path, layer, paths)
