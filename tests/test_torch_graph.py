"""kerascnn.training.torch_graph: kerascnn's networks run with torch.nn.functional
on the Keras variables compute what Keras' own layers compute, on every
family, every activation and under mixed precision. Runs under torch
(tests/test_backend.py runs the core tests there)."""

import numpy as np
import pytest

import keras

from kerascnn.training import trainer

from kerascnn.training import torch_native
from kerascnn.models import build_model
from kerascnn.training.plan import compile_model
from kerascnn.data.device_transforms import InputTransform
from kerascnn.config.tricks import Tricks

pytestmark = [pytest.mark.core,
              pytest.mark.skipif(keras.backend.backend() != "torch", reason="the torch backend's layers")]

# every family at a small width and the smallest size it takes; mobilenet's "same" stride-2 depthwise convs,
# googlenet's "same" stride-2 max pools and concatenations, resnet's adds, nin's and alexnet's dropout
FAMILIES = {"lenet": (28, 1, {"activation": "relu", "pool": "max"}), "alexnet": (63, 3, {"width": 0.1}),
            "vgg11": (32, 3, {"width": 0.1, "dense_units": 16}), "nin": (67, 3, {"width": 0.1}),
            "googlenet": (32, 3, {"width": 0.1}), "resnet18": (32, 3, {"width": 0.1}),
            "mobilenet": (32, 3, {"width": 0.25})}


def training_model(arch, size, channels, options, optimizer="adamw", tricks=Tricks(), seed=0, **compile_options):
    from kerascnn.optim.optimizers import make_optimizer

    keras.utils.set_random_seed(seed)
    net = build_model(arch, input_shape=(size, size, channels), num_classes=10, **options)
    transform = InputTransform((size, size, channels), [0.5] * channels, [0.25] * channels, tricks=tricks)
    model = trainer.TrainingModel(net, transform)
    compile_model(net, make_optimizer(optimizer, **compile_options), jit_compile=False, tricks=tricks)
    compile_model(model, net.optimizer, jit_compile=False, tricks=tricks)
    return model


def batch(size, channels, n=4, seed=1, soft=False):
    import torch

    rng = np.random.default_rng(seed)
    images = torch.from_numpy(rng.integers(0, 256, (n, size, size, channels), dtype=np.uint8))
    params = torch.zeros((n, 0))
    labels = rng.integers(0, 10, n)
    labels = np.eye(10, dtype=np.float32)[labels] if soft else labels.astype(np.int32)
    return (images, params), torch.from_numpy(labels)


def seed_states(model):
    """The random state dropout draws from: the layers' seed generators and, unseeded, torch's own."""
    import torch

    return torch.random.get_rng_state(), [v.value.clone() for v in model.variables if "seed_generator" in v.path]


def restore(model, states):
    import torch

    torch.random.set_rng_state(states[0])
    for v, s in zip([v for v in model.variables if "seed_generator" in v.path], states[1]):
        v.value.copy_(s)


def numpy(t):
    return np.asarray(t.detach().float().numpy() if hasattr(t, "detach") else t, np.float64)


def assert_close(ours, theirs, tolerance, what):
    """At most `tolerance` apart, relative to the larger of 1 and the tensor's largest magnitude (float32
    sums in another order differ by that much on large values)."""
    ours, theirs = numpy(ours), numpy(theirs)
    scale = max(1.0, float(np.abs(theirs).max()))
    assert np.abs(ours - theirs).max() <= tolerance * scale, f"{what}: {np.abs(ours - theirs).max()} apart"


# Gradients: 1e-5 of the largest, as outputs are 1e-6. ResNet-18's ZeroPadding2D layers are done by the next
# convolution's own padding (torch_graph._foldable_padding), which sums the kernel's gradient in
# another order than a convolution reading a padded copy: 1.2e-5 in float32, one bfloat16 rounding step in bf16.
GRADIENTS = {"resnet18": 3e-5}
GRADIENTS_BF16 = {"resnet18": 2 ** -8}


@pytest.mark.parametrize("arch", list(FAMILIES))
def test_the_same_outputs_gradients_and_statistics_as_keras(arch):
    import torch

    size, channels, options = FAMILIES[arch]
    model = training_model(arch, size, channels, options)
    assert torch_native.wanted(model)
    model.train_on_batch(*batch(size, channels, seed=0))  # builds the metrics and the optimizer
    step = torch_native.NativeStep(model)
    (images, params), labels = batch(size, channels)
    x = model.transform(images, params)
    for training in (False, True):
        states, stats = seed_states(model), [v.value.clone() for v in model.non_trainable_variables]
        ours = step.graph(x, training=training)
        loss = step.loss(ours, labels)
        ours_grads = torch.autograd.grad(loss, step.params)
        ours_stats = [v.value.clone() for v in model.non_trainable_variables]
        restore(model, states)
        for v, s in zip(model.non_trainable_variables, stats):
            v.value.copy_(s)
        theirs = model.net(x, training=training)
        their_loss = model._compute_loss(x=None, y=labels, y_pred=theirs, training=True)
        their_grads = torch.autograd.grad(their_loss, step.params)
        assert_close(ours, theirs, 1e-6, "outputs")
        assert_close(loss, their_loss, 1e-6, "loss")
        for v, a, b in zip(model.trainable_variables, ours_grads, their_grads):
            assert_close(a, b, GRADIENTS.get(arch, 1e-5), f"gradient of {v.path}")
        for v, a in zip(model.non_trainable_variables, ours_stats):
            assert_close(a, v.value, 1e-6, v.path)


@pytest.mark.parametrize("arch", ["lenet", "resnet18", "mobilenet"])
def test_mixed_precision_matches_keras(arch):
    """Under mixed_bfloat16 the native step casts as Keras' layers do (inputs and weights to bfloat16, batch
    norm in float32, biases added after the op): the same outputs and gradients, to the same tolerances."""
    import torch

    size, channels, options = FAMILIES[arch]
    if arch == "lenet":
        options = {**options, "batchnorm": True}
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = training_model(arch, size, channels, options)
    finally:
        keras.config.set_dtype_policy("float32")
    model.train_on_batch(*batch(size, channels, seed=0))
    step = torch_native.NativeStep(model)
    (images, params), labels = batch(size, channels)
    x = model.transform(images, params)
    states, stats = seed_states(model), [v.value.clone() for v in model.non_trainable_variables]
    ours = step.graph(x, training=True)
    ours_grads = torch.autograd.grad(step.loss(ours, labels), step.params)
    restore(model, states)
    for v, s in zip(model.non_trainable_variables, stats):
        v.value.copy_(s)
    theirs = model.net(x, training=True)
    their_grads = torch.autograd.grad(model._compute_loss(x=None, y=labels, y_pred=theirs, training=True),
                                      step.params)
    assert ours.dtype == theirs.dtype == torch.bfloat16
    assert_close(ours, theirs, 1e-6, "outputs")
    for v, a, b in zip(model.trainable_variables, ours_grads, their_grads):
        assert_close(a, b, GRADIENTS_BF16.get(arch, 1e-5), f"gradient of {v.path}")


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu6", "silu", "elu", "selu", "gelu", "softplus"])
def test_every_activation_matches_keras(activation):
    """Those with a torch kernel here, and any other (softplus) through Keras' own function on the tensors."""
    import torch

    model = training_model("lenet", 28, 1, {"activation": activation, "pool": "avg"})
    model.train_on_batch(*batch(28, 1, seed=0))
    step = torch_native.NativeStep(model)
    (images, params), labels = batch(28, 1)
    x = model.transform(images, params)
    ours, theirs = step.graph(x, training=True), model.net(x, training=True)
    assert_close(ours, theirs, 1e-6, "outputs")
    for a, b in zip(torch.autograd.grad(step.loss(ours, labels), step.params),
                    torch.autograd.grad(model._compute_loss(x=None, y=labels, y_pred=theirs, training=True),
                                        step.params)):
        assert_close(a, b, 1e-5, "gradient")
