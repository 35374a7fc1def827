"""`explain`: where in an image a model's decision comes from, as heat maps
over test images. Grad-CAM and Grad-CAM++ weigh a convolution's feature
maps by the gradient of the class score; saliency and SmoothGrad take that
gradient with respect to the pixels.

Keras has no backend-neutral gradient, so `value_and_grad` is the one
place that asks the backend's own autodiff (TensorFlow's GradientTape,
jax.grad, torch autograd), always over a stateless call in inference mode.
A gradient with respect to an inner layer's output is taken with respect to
a zero "probe" added to it, an input of a clone of the model
(`probed_model`): one code path on every backend, inside residual and
inception blocks too.
"""

import dataclasses
from pathlib import Path

import numpy as np

from kerascnn import plots

from kerascnn.runs import storage
from kerascnn.config.choices import EXPLAIN_METHODS
from kerascnn.config.spelling import OptionError, spell, spell_set
from kerascnn.errors import KerasCNNError

METHODS = EXPLAIN_METHODS
CAM_METHODS = ("gradcam", "gradcam++")
TITLES = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "saliency": "saliency", "smoothgrad": "SmoothGrad"}
MIN_CAM_SIZE = 4  # at CPU sizes ResNet-18 and MobileNet end at 1x1: a one-pixel map says nothing
DEFAULT_IMAGES = 8
SMOOTHGRAD_SAMPLES = 25
SMOOTHGRAD_NOISE = 0.15  # noise std as a fraction of the image's range (the paper finds 10-20% best)


@dataclasses.dataclass
class ExplainResult:
    """Maps (N, H, W) at the model's input size: `maps` raw, `normalized`
    each scaled to [0, 1]; per image its test index, predicted and true
    class, the class its map explains, and all class probabilities."""

    model_path: Path
    method: str
    layer: str | None  # the convolution of a CAM; None for saliency and SmoothGrad
    indices: list
    maps: np.ndarray
    normalized: np.ndarray
    predicted: np.ndarray
    true: np.ndarray
    explained: np.ndarray
    probabilities: np.ndarray
    class_names: list
    figure: Path
    arrays: Path  # the same, as .npz

    @property
    def paths(self):
        return [self.figure, self.arrays]


# --- the layer a CAM weighs

def conv_layers(model):
    """Names of the model's convolutions (Conv2D, DepthwiseConv2D): the layers a CAM can weigh."""
    return [layer.name for layer in model.layers
            if {w.name for w in layer.weights} & {"kernel", "depthwise_kernel"} and len(layer.output.shape) == 4]


def default_cam_layer(model, min_size=MIN_CAM_SIZE):
    """The last convolution whose output is still at least `min_size` a
    side (the first convolution when none is)."""
    convs = conv_layers(model)
    if not convs:
        raise KerasCNNError(f"{model.name} has no convolution for Grad-CAM; use {spell_set('method', 'saliency')} "
                            f"or smoothgrad")
    large = [name for name in convs if min(model.get_layer(name).output.shape[1:3]) >= min_size]
    return large[-1] if large else convs[0]


def cam_layer(model, name=None):
    """The convolution a CAM weighs: `name`, checked, or the default."""
    if name is None:
        return default_cam_layer(model)
    convs = conv_layers(model)
    if name not in convs:
        what = "is not a convolution" if name in [layer.name for layer in model.layers] else "is no layer"
        raise KerasCNNError(f"{spell('layer')} {name!r} {what} of {model.name}; Grad-CAM takes one of: "
                            f"{', '.join(convs)}")
    return name


# --- gradients

def probed_model(model, layer):
    """A clone of `model` sharing its layers, with a zero probe added to
    `layer`'s output: clone([x, zeros]) is [model(x), activation], and the
    gradient with respect to the probe is the one with respect to the
    activation, wherever the layer sits in the graph."""
    import keras

    target, made = model.get_layer(layer), {}

    def call(op, *args, **kwargs):
        out = op(*args, **kwargs)
        if op is target:
            # made from `out`, the placeholder keeps the clone connected; the Model below makes it an input
            made["probe"] = keras.ops.zeros_like(out)
            made["activation"] = out = keras.layers.Add(name=f"{layer}_probe")([out, made["probe"]])
        return out

    clone = keras.models.clone_model(model, clone_function=lambda op: op, call_function=call)
    return keras.Model([clone.input, made["probe"]], [clone.output, made["activation"]])


def value_and_grad(fn, count):
    """fn(state, *xs) -> (scalar, aux), with `count` xs, made into
    grad(state, *xs) -> (aux, [d scalar / d x for each x]) by the backend's
    own autodiff; compiled once under JAX, where op by op is slow."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        compiled = jax.jit(jax.value_and_grad(fn, argnums=tuple(range(1, count + 1)), has_aux=True))

        def grad(state, *xs):
            (_, aux), grads = compiled(state, *xs)
            return aux, list(grads)
    elif backend == "tensorflow":
        import tensorflow as tf

        def grad(state, *xs):
            with tf.GradientTape() as tape:
                tape.watch(xs)
                value, aux = fn(state, *xs)
            return aux, tape.gradient(value, list(xs))
    elif backend == "torch":
        import torch

        def grad(state, *xs):
            xs = [x.detach().requires_grad_(True) for x in xs]
            value, aux = fn(state, *xs)
            return aux, list(torch.autograd.grad(value, xs))
    else:
        raise KerasCNNError(f"explain needs the autodiff of tensorflow, jax or torch; Keras runs on {backend}")
    return grad


def gradient_function(model):
    """compute(inputs, classes) -> (outputs, grads) for `model`, as numpy:
    its outputs for `inputs` (one array per model input) in inference mode,
    and the gradient of each image's score, its output for its class in
    `classes`, with respect to each input. A stateless call, so the same
    code differentiates on every backend."""
    import keras

    def score(state, *xs):
        trainable, non_trainable, pick = state
        outputs, _ = model.stateless_call(trainable, non_trainable, list(xs) if len(xs) > 1 else xs[0],
                                          training=False)
        outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        # in inference mode images do not interact: the gradient of the sum is each image's own
        return keras.ops.sum(outputs[0] * pick), outputs

    grad = value_and_grad(score, len(model.inputs))
    one_hot = np.eye(model.outputs[0].shape[-1], dtype="float32")

    def compute(inputs, classes):
        # the variables' values as of now: under JAX, Keras' predict and fit replace their buffers
        state = ([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables],
                 keras.ops.convert_to_tensor(one_hot[np.asarray(classes, dtype=int)]))
        xs = [keras.ops.convert_to_tensor(np.asarray(x, "float32")) for x in inputs]
        outputs, grads = grad(state, *xs)
        return [keras.ops.convert_to_numpy(o) for o in outputs], [keras.ops.convert_to_numpy(g) for g in grads]
    return compute


# --- maps from gradients (numpy, so every backend draws the same)

def grad_cam(activations, grads):
    """Grad-CAM (Selvaraju et al., 2017): channels weighted by their mean gradient, summed, ReLU."""
    weights = grads.mean(axis=(1, 2), keepdims=True)
    return np.maximum((weights * activations).sum(axis=-1), 0.0)


def grad_cam_plus_plus(activations, grads):
    """Grad-CAM++ (Chattopadhyay et al., 2018) in closed form: the second
    and third derivatives of exp(score) as powers of the first, the alphas
    normalized per channel as in the authors' code and tf-keras-vis. The
    factor exp(score), one positive number per image, is left out: it only
    scales the map, and overflows for large logits."""
    g2, g3 = grads ** 2, grads ** 3
    denominator = 2.0 * g2 + activations.sum(axis=(1, 2), keepdims=True) * g3
    alphas = g2 / np.where(denominator != 0, denominator, 1.0)
    total = alphas.sum(axis=(1, 2), keepdims=True)
    alphas = alphas / np.where(total != 0, total, 1.0)
    weights = (alphas * np.maximum(grads, 0.0)).sum(axis=(1, 2), keepdims=True)
    return np.maximum((weights * activations).sum(axis=-1), 0.0)


def saliency(grads):
    """Saliency (Simonyan et al., 2014): the largest |d score / d pixel| over channels."""
    return np.abs(grads).max(axis=-1)


def upsample(maps, size):
    """Maps (N, h, w) bilinearly resized to `size` (H, W), pixel centres
    aligned as tf.image.resize and jax.image.resize align them."""
    maps = np.asarray(maps, np.float64)
    for axis, n_out in ((1, size[0]), (2, size[1])):
        n_in = maps.shape[axis]
        if n_in == n_out:
            continue
        position = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        low = np.floor(position).astype(int)
        high = np.minimum(low + 1, n_in - 1)
        t = (position - low).reshape([-1 if a == axis else 1 for a in range(maps.ndim)])
        maps = np.take(maps, low, axis=axis) * (1 - t) + np.take(maps, high, axis=axis) * t
    return maps


def normalize_maps(maps):
    """Each map scaled to [0, 1] (a flat map to zeros)."""
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    return np.where(span > 0, (maps - low) / np.where(span > 0, span, 1.0), 0.0)


def smoothgrad_inputs(x, samples=SMOOTHGRAD_SAMPLES, noise=SMOOTHGRAD_NOISE, seed=0):
    """(samples, N, H, W, C): each image plus Gaussian noise of std `noise`
    times the image's range, drawn from `seed`."""
    spread = noise * (x.max(axis=(1, 2, 3)) - x.min(axis=(1, 2, 3)))
    draws = np.random.default_rng(seed).standard_normal((samples, *x.shape), dtype=np.float32)
    return x[None] + draws * spread[None, :, None, None, None].astype(np.float32)


def _cam(model, x, classes, layer, method, batch_size):
    """Grad-CAM or Grad-CAM++ maps of `layer` at its own resolution."""
    gradients_of = gradient_function(probed_model(model, layer))
    shape = tuple(model.get_layer(layer).output.shape[1:])
    combine = grad_cam if method == "gradcam" else grad_cam_plus_plus
    maps = []
    for start in range(0, len(x), batch_size):
        batch = x[start:start + batch_size]
        (_, activations), (_, grads) = gradients_of([batch, np.zeros((len(batch), *shape), "float32")],
                                                    classes[start:start + batch_size])
        maps.append(combine(activations.astype(np.float64), grads.astype(np.float64)))
    return np.concatenate(maps)


def _saliency(model, x, classes, batch_size):
    gradients_of, maps = gradient_function(model), []
    for start in range(0, len(x), batch_size):
        _, (grads,) = gradients_of([x[start:start + batch_size]], classes[start:start + batch_size])
        maps.append(saliency(grads.astype(np.float64)))
    return np.concatenate(maps)


def check_method(method):
    if method not in METHODS:
        raise OptionError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")
    return method


def method_layer(model, method, layer=None):
    """The layer `method` weighs: a convolution for a CAM (see cam_layer),
    None for saliency and SmoothGrad, which take none."""
    check_method(method)
    if method in CAM_METHODS:
        return cam_layer(model, layer)
    if layer is not None:
        raise OptionError(f"{spell('layer')} is for gradcam and gradcam++; {method} explains the pixels themselves")
    return None


def explanation_maps(model, x, classes, method="gradcam", *, layer=None, samples=SMOOTHGRAD_SAMPLES,
                     noise=SMOOTHGRAD_NOISE, seed=0, batch_size=64):
    """Raw maps (N, H, W) at the input's size, map i explaining class
    `classes[i]` of image x[i] (preprocessed as the model takes it), and the
    layer a CAM weighed (None for saliency and SmoothGrad)."""
    layer = method_layer(model, method, layer)
    x, classes = np.asarray(x, np.float32), np.asarray(classes, dtype=int)
    if layer is not None:
        return upsample(_cam(model, x, classes, layer, method, batch_size), x.shape[1:3]), layer
    if method == "saliency":
        return _saliency(model, x, classes, batch_size), None
    if samples < 1 or not noise >= 0:
        raise OptionError(f"SmoothGrad needs at least 1 sample and noise >= 0, got {samples} and {noise}")
    noisy = smoothgrad_inputs(x, samples, noise, seed).reshape(-1, *x.shape[1:])
    maps = _saliency(model, noisy, np.tile(classes, samples), batch_size)
    return maps.reshape(samples, *x.shape[:3]).mean(axis=0), None


# --- a saved run's test images

def predict_probabilities(model, x, batch_size=64):
    """Class probabilities of preprocessed images (softmax of the logits, unless the model outputs
    probabilities)."""
    import keras

    from kerascnn.analysis.evaluation import _outputs_logits

    outputs = np.concatenate([keras.ops.convert_to_numpy(model(x[s:s + batch_size], training=False))
                              for s in range(0, len(x), batch_size)]).astype(np.float64)
    if not _outputs_logits(model):
        return outputs
    exp = np.exp(outputs - outputs.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def resolve_class(value, class_names):
    """A class index from an index or a class name (None stays None)."""
    if value is None:
        return None
    names = [str(n) for n in class_names]
    text = str(value).strip()
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) or text.isdigit():
        if 0 <= int(text) < len(names):
            return int(text)
    else:
        folded = [n.casefold() for n in names]
        if text.casefold() in folded:
            return folded.index(text.casefold())
    raise KerasCNNError(f"{spell('class_index')} {value}: no such class; give an index from 0 to {len(names) - 1} or one of: "
                        f"{', '.join(names)}")


def misclassified_images(run, inputs, count, batch_size=256):
    """Indices of the first `count` misclassified test images of `inputs`
    (the run's RunInputs; fewer when there are fewer)."""
    data = inputs.data
    wrong = np.flatnonzero(inputs.model.predict(inputs.test_batches(batch_size), verbose=0).argmax(axis=1)
                           != data.y_test)
    if not len(wrong):
        raise KerasCNNError(f"{run.model_path.name} classifies all {len(data.y_test)} test images of {data.name} "
                            f"correctly: nothing for {spell('misclassified')}; name images with {spell('indices')}")
    return [int(i) for i in wrong[:count]]


def pick_images(run, inputs, indices=None, misclassified=None):
    """The test images of `inputs` (the run's RunInputs) to explain:
    `indices`, the first `misclassified` misclassified ones, or the first
    DEFAULT_IMAGES."""
    if indices is not None and misclassified is not None:
        raise OptionError(f"give {spell('indices')} or {spell('misclassified')}, not both")
    if misclassified is not None:
        if misclassified < 1:
            raise OptionError(f"{spell('misclassified')} must be at least 1, got {misclassified}")
        return misclassified_images(run, inputs, misclassified)
    n = len(inputs.data.x_test)
    indices = list(range(min(DEFAULT_IMAGES, n))) if indices is None else [int(i) for i in indices]
    if not indices:
        raise OptionError(f"{spell('indices')}: name at least one test image")
    for i in indices:
        if not 0 <= i < n:
            raise KerasCNNError(f"{spell('indices')} must be between 0 and {n - 1}, got {i}")
    return indices


def output_paths(run, output, dataset, method):
    """(figure, arrays): `output` if it is a .png (its folder must exist),
    else `<output or the model's folder>/<model stem>.<method>.png`; the
    arrays beside it as .npz."""
    from kerascnn.analysis.visualization import check_figure_path

    if output is not None and Path(output).suffix.lower() == ".png":
        figure = check_figure_path(output)
    else:
        figure = storage.sidecar(run.output_base(output, dataset), f"{method}.png")
    return figure, figure.with_suffix(".npz")


def _titles(indices, predicted, true, explained, probabilities, names, maps):
    titles = []
    for i, p, t, e, prob, m in zip(indices, predicted, true, explained, probabilities, maps):
        title = f"#{i} predicted {names[p]} ({prob[p]:.0%})\ntrue {names[t]}"
        title = title if e == p else f"{title}\nmap of {names[e]} ({prob[e]:.0%})"
        titles.append(title if m.max() > 0 else f"{title}\n(no positive evidence: map all 0)")
    return titles


def _suptitle(run, model, method, layer, class_index, names, samples, noise):
    """What the figure shows: the method, its layer or noise, the class explained."""
    if layer is not None:
        h, w = model.get_layer(layer).output.shape[1:3]
        what = f"{TITLES[method]} of layer {layer} ({h}x{w}, upsampled)"
    elif method == "smoothgrad":
        what = f"SmoothGrad ({samples} samples, noise {noise:.0%} of the range)"
    else:
        what = "saliency (largest |gradient| over channels)"
    target = "each image's predicted class" if class_index is None else f"class {names[class_index]}"
    return f"{run.model_path.name}: {what}, explaining {target}"


def explain(run=None, method="gradcam", *, layer=None, indices=None, misclassified=None, class_index=None,
            dataset=None, data_dir=None, output=None, samples=SMOOTHGRAD_SAMPLES, noise=SMOOTHGRAD_NOISE, seed=0,
            batch_size=64, models_dir="saved_models"):
    """Explain a saved run's (a Run, a model path, or the newest in
    `models_dir`) decisions on test images: `indices`, the first
    `misclassified` misclassified ones, or the first 8. Each map explains
    the predicted class, or `class_index` (an index or a class name).
    Writes `<model stem>.<method>.png` (the maps over the images) and
    `.npz` (the arrays) beside the model, in folder `output`, or to
    `output` if it is a .png."""
    from kerascnn.analysis.visualization import as_run

    check_method(method)
    run = as_run(run, models_dir)
    inputs = run.inputs(dataset, data_dir)
    model, data = inputs.model, inputs.data
    class_index = resolve_class(class_index, data.class_names)
    layer = method_layer(model, method, layer)
    chosen = pick_images(run, inputs, indices, misclassified)
    figure_path, arrays_path = output_paths(run, output, data.name, method)
    x = inputs.test_images(chosen)
    probabilities = predict_probabilities(model, x, batch_size)
    predicted, true = probabilities.argmax(axis=1), np.asarray(data.y_test[chosen], dtype=int)
    explained = predicted if class_index is None else np.full(len(x), class_index)
    maps, layer = explanation_maps(model, x, explained, method, layer=layer, samples=samples, noise=noise,
                                   seed=seed, batch_size=batch_size)
    normalized = normalize_maps(maps)
    names = list(data.class_names)
    figure = plots.plot_explanations(inputs.for_display(x), normalized,
                                     _titles(chosen, predicted, true, explained, probabilities, names, maps),
                                     title=_suptitle(run, model, method, layer, class_index, names, samples, noise))
    storage.save_figure(figure, figure_path)  # first: drawing is what may fail
    storage.write_npz(arrays_path, {"maps": maps, "normalized": normalized, "indices": np.asarray(chosen),
                               "predicted": predicted, "true": true, "explained": explained,
                               "probabilities": probabilities, "class_names": np.asarray(names),
                               "method": np.asarray(method), "layer": np.asarray(layer or "")})
    return ExplainResult(run.model_path, method, layer, chosen, maps, normalized, predicted, true, explained,
                         probabilities, names, figure_path, arrays_path)
