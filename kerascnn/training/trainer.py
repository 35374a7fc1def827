"""The model that trains on the jax and torch input path: `TrainingModel`,
the network behind the run's `device_transforms.InputTransform`, so that
scaling, resizing, augmentation and normalization run in the training step
on the device (under JAX inside the jitted step), and on torch with
kerascnn.training.torch_native's step. The network alone is what is saved
(`network`)."""

import numpy as np

import keras


class TrainingModel(keras.Model):
    """`net` behind an InputTransform: takes (uint8 images, parameters) and
    trains `net`'s weights, augmenting inside the step. Save `net`.

    With `images` (the uint8 training set) it holds them on the device, in
    a variable no optimizer, dtype policy or saved file sees, and takes
    (int32 indices, parameters) as well: a rank-1 first input is the
    batch's indices into `images`, gathered inside the step."""

    def __init__(self, net, transform, images=None, **kwargs):
        super().__init__(name=f"{net.name}_training", **kwargs)
        self.net = net
        self.transform = transform
        self.images = None if images is None else keras.Variable(
            np.asarray(images, np.uint8), dtype="uint8", trainable=False, autocast=False, name="training_images")

    def call(self, inputs, training=False):
        images, params = inputs
        if len(images.shape) == 1:
            images = keras.ops.take(self.images, images, axis=0)
        return self.net(self.transform(images, params, training=training), training=training)

    if keras.backend.backend() == "torch":  # jax's and tensorflow's trainers keep their own steps
        def train_step(self, data):
            native = self._native_step(data)
            return native.train_step(data) if native else super().train_step(data)

        def test_step(self, data):
            native = self._native_step(data)
            return native.test_step(data) if native else super().test_step(data)

        def _should_torch_compile(self):
            # the native step compiles its own forward pass and loss (--jit on); Keras compiles its step otherwise
            from kerascnn.training import torch_native

            return super()._should_torch_compile() and not torch_native.wanted(self)

        def _native_step(self, data):
            """On torch, kerascnn.training.torch_native's step (the same function without
            Keras' per-layer Python); None where Keras' own step runs."""
            from kerascnn.training import torch_native

            if len(data) > 2 and data[2] is not None or not torch_native.enabled():
                return None
            key = (id(self.optimizer), id(self._compile_metrics), id(self._compile_loss), self.jit_compile)
            if getattr(self, "_native", (None, None))[0] != key:  # made once a compile
                self._native = (key, torch_native.NativeStep.make(self, data) if torch_native.wanted(self) else None)
            return self._native[1]


def network(model):
    """The network a model trains: `model.net` of a TrainingModel, else `model`."""
    return model.net if isinstance(model, TrainingModel) else model
