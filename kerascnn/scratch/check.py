"""`kerascnn scratch --check`: is the NumPy LeNet-5 right?

Two checks. `finite_difference_checks` compares every layer's backward pass
with centred differences of its forward pass on tiny float64 shapes.
`keras_checks` copies the weights of kerascnn's Keras LeNet-5
(`build_lenet(activation="relu", pool="max", padding="valid")` on 32x32,
what `fit --padding valid --image-size 32 --resize pad` trains) into the
NumPy model and compares the scores, the loss and every parameter's gradient
with Keras' own, on the backend Keras runs on. NumPy computes in float64,
Keras in float32, so the tolerance is relative: the largest difference over
the largest value, at most KERAS_TOLERANCE.
"""

import numpy as np

from kerascnn.scratch import layers as L

FD_TOLERANCE = 1e-6  # relative error of a float64 backward pass against centred differences
KERAS_TOLERANCE = 1e-5  # float32 sums of up to 400 products: about 1e-6 of their scale (measured: at most 1.1e-6)


def relative_error(a, b):
    """max |a - b| / max(|a|, |b|) over the array (0 when both are 0)."""
    scale = max(np.abs(a).max(), np.abs(b).max())
    return float(np.abs(a - b).max() / scale) if scale else 0.0


def numerical_gradient(f, x, dout, h=1e-6):
    """d sum(f(x) * dout) / dx by centred differences, one entry at a time."""
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        plus = np.sum(f(x) * dout)
        x[i] = old - h
        minus = np.sum(f(x) * dout)
        x[i] = old
        grad[i] = (plus - minus) / (2 * h)
    return grad


def _conv_cases(rng):
    x, w, b = rng.normal(size=(2, 3, 7, 7)), rng.normal(size=(4, 3, 3, 3)), rng.normal(size=4)
    for fast, (forward, backward) in ((False, (L.conv_forward, L.conv_backward)),
                                      (True, (L.conv_forward_im2col, L.conv_backward_im2col))):
        for stride, pad in ((1, 0), (1, 1), (2, 1)):
            dout = rng.normal(size=forward(x, w, b, stride, pad).shape)
            dx, dw, db = backward(dout, x, w, stride, pad)
            label = f"conv ({'im2col' if fast else 'loops'}, stride {stride}, pad {pad})"
            yield f"{label} dx", dx, numerical_gradient(lambda v: forward(v, w, b, stride, pad), x, dout)
            yield f"{label} dw", dw, numerical_gradient(lambda v: forward(x, v, b, stride, pad), w, dout)
            yield f"{label} db", db, numerical_gradient(lambda v: forward(x, w, v, stride, pad), b, dout)


def _other_cases(rng):
    x = rng.normal(size=(2, 3, 6, 6))
    dout = rng.normal(size=(2, 3, 3, 3))
    yield "max pool (loops) dx", L.max_pool_backward(dout, x), numerical_gradient(L.max_pool_forward, x, dout)
    yield ("max pool (windows) dx", L.max_pool_backward_windows(dout, x),
           numerical_gradient(L.max_pool_forward_windows, x, dout))
    dout = rng.normal(size=x.shape)
    yield "relu dx", L.relu_backward(dout, x), numerical_gradient(L.relu_forward, x, dout)
    x, w, b = rng.normal(size=(3, 2, 2, 2)), rng.normal(size=(8, 5)), rng.normal(size=5)
    dout = rng.normal(size=(3, 5))
    dx, dw, db = L.affine_backward(dout, x, w)
    yield "affine dx", dx, numerical_gradient(lambda v: L.affine_forward(v, w, b), x, dout)
    yield "affine dw", dw, numerical_gradient(lambda v: L.affine_forward(x, v, b), w, dout)
    yield "affine db", db, numerical_gradient(lambda v: L.affine_forward(x, w, v), b, dout)
    scores, y = rng.normal(size=(4, 10)), rng.integers(0, 10, size=4)
    yield ("softmax loss dscores", L.softmax_loss(scores, y)[1],
           numerical_gradient(lambda v: L.softmax_loss(v, y)[0], scores, np.ones(())))


def _model_cases(rng):
    from kerascnn.scratch.lenet5 import LeNet5

    for fast in (False, True):  # a tiny LeNet-5: 16x16 in, 3x3 kernels, 2/3 channels, 4/3 units
        model = LeNet5((1, 16, 16), 10, channels=(2, 3), units=(4, 3), kernel=3, weight_scale=0.5, seed=1, fast=fast)
        for name in model.params:  # biases off zero: a dead layer below would put a ReLU exactly on its kink
            if name.endswith(".b"):
                model.params[name] = rng.normal(0.0, 0.5, model.params[name].shape)
        x, y = rng.normal(size=(3, 1, 16, 16)), rng.integers(0, 10, size=3)
        _, grads = model.loss(x, y)
        for name, w in model.params.items():
            yield (f"LeNet-5 ({'im2col' if fast else 'loops'}) d loss / d {name}", grads[name],
                   numerical_gradient(lambda v: model.loss(x, y)[0], w, np.ones(())))


def finite_difference_checks(seed=0):
    """[(name, relative error)] of each layer's backward pass, and of a tiny
    LeNet-5's loss, against centred differences, in float64."""
    rng = np.random.default_rng(seed)
    return [(name, relative_error(analytic, numeric))
            for name, analytic, numeric in [*_conv_cases(rng), *_other_cases(rng), *_model_cases(rng)]]


def keras_lenet5(seed=0):
    """kerascnn's Keras LeNet-5 (ReLU, max pooling, valid conv1, 32x32x1)."""
    import keras

    from kerascnn.runtime.backend import keep_tensorflow_unloaded
    from kerascnn.models.lenet import build_lenet

    keep_tensorflow_unloaded()  # Keras' seeding would import it on jax and torch
    keras.utils.set_random_seed(seed)
    return build_lenet(activation="relu", pool="max", padding="valid", input_shape=(32, 32, 1))


def parameter_name(variable):
    """A Keras LeNet weight's name in the NumPy model: conv1/kernel -> conv1.w."""
    layer, kind = variable.path.split("/")[-2:]
    return f"{layer}.{'w' if kind == 'kernel' else 'b'}"


def to_numpy_layout(name, array, pool2_shape):
    """A Keras weight (or its gradient) in the NumPy model's layout, float64:
    kernels (HH, WW, C, F) -> (F, C, HH, WW); fc1's rows from Keras'
    (height, width, channel) flattening order to NumPy's (channel, height,
    width), for pool2's output (height, width, channels)."""
    array = np.asarray(array, np.float64)
    if array.ndim == 4:
        return array.transpose(3, 2, 0, 1)
    if name == "fc1.w":
        h, w, c = pool2_shape
        return array.reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(h * w * c, -1)
    return array


def numpy_weights(model, arrays=None):
    """The Keras LeNet-5's trainable weights (or `arrays` in their order,
    such as their gradients) as the NumPy LeNet-5's `params`."""
    import keras

    pool2 = model.get_layer("pool2").output.shape[1:]
    arrays = [v.value for v in model.trainable_variables] if arrays is None else arrays
    return {parameter_name(v): to_numpy_layout(parameter_name(v), keras.ops.convert_to_numpy(a), pool2)
            for v, a in zip(model.trainable_variables, arrays)}


def keras_loss_and_grads(model, x, y):
    """Keras' scores, mean cross-entropy and the gradient of every trainable
    weight (in the NumPy model's names and layout), for x (N, H, W, C)."""
    import keras

    from kerascnn.analysis.explanation import value_and_grad

    variables = model.trainable_variables

    def loss_fn(state, *trainable):
        images, labels = state
        scores, _ = model.stateless_call(list(trainable), [], images, training=True)
        loss = keras.ops.mean(keras.losses.sparse_categorical_crossentropy(labels, scores, from_logits=True))
        return loss, (loss, scores)

    grad = value_and_grad(loss_fn, len(variables))
    state = (keras.ops.convert_to_tensor(x.astype("float32")), keras.ops.convert_to_tensor(y.astype("int32")))
    (loss, scores), grads = grad(state, *[v.value for v in variables])
    return keras.ops.convert_to_numpy(scores), float(keras.ops.convert_to_numpy(loss)), numpy_weights(model, grads)


def keras_checks(batch=8, seed=0):
    """[(name, relative error)] of the NumPy LeNet-5 against Keras' on one
    batch of random 32x32 images: the scores, the loss and each gradient."""
    from kerascnn.scratch.lenet5 import LeNet5

    keras_model = keras_lenet5(seed)
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(batch, 32, 32, 1)).astype(np.float32), rng.integers(0, 10, size=batch)
    model = LeNet5()
    model.params = numpy_weights(keras_model)
    loss, grads = model.loss(x.astype(np.float64).transpose(0, 3, 1, 2), y)
    k_scores, k_loss, k_grads = keras_loss_and_grads(keras_model, x, y)
    rows = [("scores", relative_error(model.last_scores, k_scores)), ("loss", relative_error(loss, k_loss))]
    return rows + [(f"d loss / d {name}", relative_error(grads[name], k_grads[name])) for name in model.params]


def run_checks(echo=print):
    """Both checks, a line each, then a verdict; True when every relative
    error is within its tolerance."""
    import keras

    ok = True
    for title, rows, tolerance in (
            ("backward passes against centred differences (float64)", finite_difference_checks(), FD_TOLERANCE),
            (f"NumPy LeNet-5 (float64) against Keras' on {keras.backend.backend()} (float32)", keras_checks(),
             KERAS_TOLERANCE)):
        echo(f"{title}, tolerance {tolerance:.0e} (relative):")
        for name, error in rows:
            ok &= error <= tolerance
            echo(f"  {name:<52} {error:.1e}  {'ok' if error <= tolerance else 'FAILED'}")
    echo("every difference is within its tolerance" if ok else "some differences exceed their tolerance")
    return ok
