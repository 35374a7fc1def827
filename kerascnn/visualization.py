"""Pictures of one saved run: a layer's kernels and feature maps, the
training curves, how a recorded layer changed epoch by epoch, and several
runs' curves compared. The run comes from kerascnn.run.Run; the figures from
kerascnn.plots."""

import dataclasses
from pathlib import Path

import numpy as np

from kerascnn import io, plots
from kerascnn.errors import KerasCNNError
from kerascnn.run import Run


@dataclasses.dataclass
class VisualizeResult:
    model_path: Path
    layer: str
    paths: list


def as_run(run=None, models_dir="saved_models"):
    """A Run from a Run, a model path, or (None) the newest model in `models_dir`."""
    if isinstance(run, Run):
        return run
    return Run.load(run) if run else Run.newest(models_dir)


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


def first_conv_layer(model):
    """The name of the model's first layer with convolution kernels: the
    default layer to draw."""
    for layer in model.layers:
        weights = {w.name for w in layer.weights}
        if weights & {"kernel", "depthwise_kernel"} and len(layer.output.shape) == 4:
            return layer.name
    raise KerasCNNError(f"{model.name} has no convolution layer; name one with --layer")


def layer_activations(model, layer_names, images):
    """Outputs of the named layers for a batch of preprocessed images."""
    import keras

    extractor = keras.Model(model.input, [model.get_layer(n).output for n in layer_names])
    outputs = extractor(images, training=False)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    return [keras.ops.convert_to_numpy(o) for o in outputs]


def visualize(run=None, layer=None, *, index=0, dataset=None, data_dir=None, output=None,
              models_dir="saved_models"):
    """Write the pictures of one layer of a saved run (a Run or a model path;
    by default the newest in `models_dir`): its kernels (for a conv layer;
    the first conv layer by default), its feature maps for test image
    `index`, and the run's training curves."""
    from kerascnn.data import make_pipeline

    run = as_run(run, models_dir)
    model = run.model()
    layer = layer or first_conv_layer(model)
    target = get_spatial_layer(model, layer)
    data = run.load_data(dataset, data_dir)
    if not 0 <= index < len(data.x_test):
        raise KerasCNNError(f"--index must be between 0 and {len(data.x_test) - 1}, got {index}")
    mean, std = run.stats_for(data)
    base = run.output_base(output, data.name)
    figures = {}
    kernels = kernel_images(target)
    if kernels is not None:
        figures[f"{layer}.kernels.png"] = plots.plot_kernels(kernels, layer)
    batch = make_pipeline(data.x_test[index:index + 1], data.y_test[index:index + 1],
                          input_shape=model.input_shape[1:], mean=mean, std=std, batch_size=1)
    (maps,) = layer_activations(model, [layer], next(iter(batch))[0])
    figures[f"{layer}.maps.{index}.png"] = plots.plot_feature_maps(
        maps[0], data.x_test[index], title=f"{run.model_path.name}: {layer} feature maps {tuple(maps.shape[1:])}",
        image_title=f"{data.name} test #{index}: {data.class_names[data.y_test[index]]}")
    if run.history:
        figures["curves.png"] = plots.plot_history(run.history, title=f"{run.name} training curves")
    paths = [io.save_figure(fig, io.sidecar(base, kind)) for kind, fig in figures.items()]
    return VisualizeResult(run.model_path, layer, paths)


def visualize_epochs(run=None, layer=None, *, index=0, output=None, models_dir="saved_models"):
    """Draw how a layer's feature maps (for probe image `index`) and
    kernels evolved over training, from the `<name>.activations.npz` that
    `fit(record_layers=[layer])` wrote beside the model."""
    run = as_run(run, models_dir)
    npz = run.sidecar("activations.npz")
    if not npz.exists():
        raise KerasCNNError(f"no recorded activations at {npz}; train with `kerascnn fit --record-layer "
                            f"{layer or 'conv1'}`")
    with np.load(npz) as f:
        records = {k: f[k] for k in f.files}
    recorded = sorted(k.split("/")[0] for k in records if k.endswith("/maps"))
    layer = layer or recorded[0]
    if f"{layer}/maps" not in records:
        raise KerasCNNError(f"layer {layer!r} was not recorded in {npz}; recorded: {', '.join(recorded)}")
    probes = records[f"{layer}/maps"].shape[1]
    if not 0 <= index < probes:
        raise KerasCNNError(f"--index must be between 0 and {probes - 1} (the recorded probe images), got {index}")
    base = run.output_base(output)
    test_index = int(records["probe_index"][index])
    figures = {f"{layer}.maps_by_epoch.{index}.png": plots.plot_map_evolution(
        records, layer, probe=index, title=f"{run.name}: {layer} feature maps of test #{test_index} by epoch")}
    if f"{layer}/kernel" in records:
        figures[f"{layer}.kernels_by_epoch.png"] = plots.plot_kernel_evolution(
            records, layer, title=f"{run.name}: {layer} kernels by epoch")
    paths = [io.save_figure(fig, io.sidecar(base, kind)) for kind, fig in figures.items()]
    return VisualizeResult(run.model_path, layer, paths)


def compare_runs(runs, output, title="training curves compared"):
    """Draw the curves of saved runs (Runs or model paths) in one PNG at
    `output`; returns (rows of a table of their settings and results, path)."""
    curves, table = [], []
    for run in runs:
        run = as_run(run)
        if not run.record or not run.history:
            raise KerasCNNError(f"{run.model_path} has no run.json and history beside it; "
                                f"compare needs runs saved by `kerascnn fit`")
        rows, record = run.history, run.record
        curves.append((run.stem, rows))
        table.append({
            "run": run.stem,
            "optimizer": record.get("optimizer"),
            "lr": record.get("lr"),
            "epochs": len(rows),
            "final train accuracy": rows[-1].get("accuracy"),
            "best val accuracy": max((r["val_accuracy"] for r in rows if "val_accuracy" in r), default=None),
            "test accuracy": record.get("test_accuracy"),
            "seconds": record.get("train_seconds"),
        })
    io.ensure_dir(Path(output).parent)
    return table, io.save_figure(plots.plot_comparison(curves, title=title), output)
