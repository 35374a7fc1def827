"""Pictures of one saved run: a layer's kernels and feature maps, the
training curves, how a recorded layer changed epoch by epoch, and several
runs' curves compared. The run comes from kerascnn.runs.saved.Run; the figures from
kerascnn.plots."""

import dataclasses
from pathlib import Path

import numpy as np

from kerascnn import plots

from kerascnn.runs import storage
from kerascnn.config.spelling import OptionError, spell, spell_set
from kerascnn.errors import KerasCNNError
from kerascnn.runs.saved import Run


@dataclasses.dataclass
class VisualizeResult:
    model_path: Path
    layer: str
    paths: list

    def _written(self, part):
        return next((p for p in self.paths if f".{part}" in p.name), None)

    @property
    def kernels_path(self):
        """The layer's kernels PNG, or None (not a conv layer, or not drawn)."""
        return self._written(f"{self.layer}.kernels.")

    @property
    def maps_path(self):
        """The layer's feature maps PNG, or None."""
        return self._written(f"{self.layer}.maps.")

    @property
    def curves_path(self):
        """The run's training curves PNG, or None (no history)."""
        return self._written("curves.png")


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


def is_depthwise(layer):
    """True for a DepthwiseConv2D: one kernel per input channel (and
    multiplier), where Conv2D has one per input and output channel."""
    import keras

    return isinstance(layer, keras.layers.DepthwiseConv2D)


def kernel_images(layer):
    """The layer's kernels as images, None for a layer without kernels.
    A Conv2D gives (out, in, kh, kw) grayscale, or (out, 1, kh, kw, 3) RGB
    when it reads 3 channels. A DepthwiseConv2D gives (in, multiplier, kh, kw):
    row c holds the kernels of input channel c, the one at column m makes
    output channel c * multiplier + m."""
    weights = {w.name: w for w in layer.weights}
    kernel = weights.get("kernel", weights.get("depthwise_kernel"))
    if kernel is None or len(kernel.shape) != 4:
        return None
    import keras

    k = np.asarray(keras.ops.convert_to_numpy(kernel))  # (kh, kw, in, out) or depthwise (kh, kw, in, multiplier)
    if is_depthwise(layer):
        return np.transpose(k, (2, 3, 0, 1))
    k = np.transpose(k, (3, 2, 0, 1))  # (out, in, kh, kw)
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
    raise KerasCNNError(f"{model.name} has no convolution layer; name one with {spell('layer')}")


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
    `index`, and the run's training curves (`curves`)."""
    run = as_run(run, models_dir)
    model = run.model()
    layer = layer or first_conv_layer(model)
    target = get_spatial_layer(model, layer)  # checked before any data is loaded
    inputs = run.inputs(dataset, data_dir)
    data = inputs.data
    if not 0 <= index < len(data.x_test):
        raise KerasCNNError(f"{spell('index')} must be between 0 and {len(data.x_test) - 1}, got {index}")
    base = run.output_base(output, data.name)
    figures = {}
    kernels = kernel_images(target)
    if kernels is not None:
        figures[f"{layer}.kernels.png"] = plots.plot_kernels(kernels, layer, depthwise=is_depthwise(target))
    (maps,) = layer_activations(model, [layer], inputs.test_images([index]))
    figures[f"{layer}.maps.{index}.png"] = plots.plot_feature_maps(
        maps[0], data.x_test[index], title=f"{run.model_path.name}: {layer} feature maps {tuple(maps.shape[1:])}",
        image_title=f"{data.name} test #{index}: {data.class_names[data.y_test[index]]}")
    if run.history:
        figures["curves.png"] = curves(run, f"{run.name} training curves")
    paths = [storage.save_figure(fig, storage.sidecar(base, kind)) for kind, fig in figures.items()]
    return VisualizeResult(run.model_path, layer, paths)


def curves(run, title):
    """The run's training curves per epoch, and every N steps when it logged
    them (fit --log-every) and its record says the steps an epoch."""
    steps = run.steps if run.steps_per_epoch else None
    return plots.plot_history(run.history, title=title, steps=steps, steps_per_epoch=run.steps_per_epoch)


def visualize_epochs(run=None, layer=None, *, index=0, output=None, models_dir="saved_models"):
    """Draw how a layer's feature maps (for probe image `index`) and
    kernels evolved over training, from the `<name>.activations.npz` that
    `fit(record_layers=[layer])` wrote beside the model."""
    run = as_run(run, models_dir)
    npz = run.files.activations
    if not npz.exists():
        raise KerasCNNError(f"no recorded activations at {npz}; train with "
                            f"{spell_set('record_layers', layer or 'conv1')}")
    with np.load(npz) as f:
        records = {k: f[k] for k in f.files}
    recorded = sorted(k.split("/")[0] for k in records if k.endswith("/maps"))
    layer = layer or recorded[0]
    if f"{layer}/maps" not in records:
        raise KerasCNNError(f"layer {layer!r} was not recorded in {npz}; recorded: {', '.join(recorded)}")
    probes = records[f"{layer}/maps"].shape[1]
    if not 0 <= index < probes:
        raise KerasCNNError(f"{spell('index')} must be between 0 and {probes - 1} (the recorded probe images), "
                            f"got {index}")
    base = run.output_base(output)
    test_index = int(records["probe_index"][index])
    figures = {f"{layer}.maps_by_epoch.{index}.png": plots.plot_map_evolution(
        records, layer, probe=index, title=f"{run.name}: {layer} feature maps of test #{test_index} by epoch")}
    if f"{layer}/kernel" in records:
        figures[f"{layer}.kernels_by_epoch.png"] = plots.plot_kernel_evolution(
            records, layer, title=f"{run.name}: {layer} kernels by epoch")
    paths = [storage.save_figure(fig, storage.sidecar(base, kind)) for kind, fig in figures.items()]
    return VisualizeResult(run.model_path, layer, paths)


def check_figure_path(output, name="output"):
    """`output` as a Path if a PNG may be written there: a name ending in
    .png, in a folder that exists and is writable (no folder is created).
    `name` is the parameter it came in, for the message."""
    output = Path(output)
    if output.suffix.lower() != ".png" or output.is_dir():
        raise OptionError(f"{spell(name)} {output}: a PNG image is written there; give a file name ending in .png")
    if not output.parent.is_dir():
        what = "is a file, not a folder" if output.parent.exists() else "does not exist"
        raise KerasCNNError(f"{spell(name)} {output}: the folder {output.parent} {what}; "
                            f"create it first or write elsewhere")
    storage.ensure_dir(output.parent)  # says so when it is not writable
    return output


def _run_rows(run):
    """The run's history rows, with an error naming the run if it has none."""
    if not run.record:
        raise KerasCNNError(f"{run.model_path} has no run.json beside it; compare needs runs saved by `kerascnn fit`")
    try:
        rows = run.history
    except KerasCNNError as e:
        raise KerasCNNError(f"{e}; leave that run out, or train it again") from None
    if not rows:
        path = run.files.history_json
        why = f"{path} holds no epochs" if path.is_file() else f"{path} is missing"
        raise KerasCNNError(f"{run.model_path} has no training history ({why}); leave that run out, or train it again")
    return rows


def compare_runs(runs, output, title="training curves compared"):
    """Draw the curves of saved runs (Runs or model paths) in one PNG at
    `output` (a .png file in an existing folder), with the training curves
    every N steps of those that logged them (fit --log-every); returns
    (rows of a table of their settings and results, path). Nothing is
    written unless every run has its record and a readable history."""
    output = check_figure_path(output)
    runs = [as_run(run) for run in runs]
    stems = [run.stem for run in runs]
    # runs of the same name from different folders are told apart by path
    labels = stems if len(set(stems)) == len(stems) else [str(run.model_path) for run in runs]
    curves, steps, table = [], {}, []
    for run, label in zip(runs, labels):
        rows, record = _run_rows(run), run.record
        curves.append((label, rows))
        if run.steps_per_epoch and run.steps:  # fit --log-every
            steps[label] = (run.steps, run.steps_per_epoch)
        table.append({
            "run": label,
            "optimizer": record.get("optimizer"),
            "lr": record.get("lr"),
            "epochs": len(rows),
            "final train accuracy": rows[-1].get("accuracy"),
            "best val accuracy": max((r["val_accuracy"] for r in rows if "val_accuracy" in r), default=None),
            "test accuracy": record.get("test_accuracy"),
            "seconds": record.get("train_seconds"),
        })
    return table, storage.save_figure(plots.plot_comparison(curves, title=title, steps=steps), output)
