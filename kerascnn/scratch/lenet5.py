"""LeNet-5 in NumPy, as the report modernised it: 32x32 inputs,

    conv1 5x5 (6) -> ReLU -> max pool 2x2 -> conv2 5x5 (16) -> ReLU -> max pool 2x2
    -> fc1 (120) -> ReLU -> fc2 (84) -> ReLU -> logits (10) -> softmax cross-entropy

with the layer names of kerascnn's Keras LeNet (`build_lenet(activation="relu",
pool="max", padding="valid")`), so weights copy across by name. Saved as an
`.npz` of named arrays: no pickle.
"""

import json

import numpy as np

from kerascnn.errors import KerasCNNError
from kerascnn.scratch.layers import Affine, Conv, MaxPool, ReLU, softmax_loss

NPZ_FORMAT = 1  # of the saved .npz


class LeNet5:
    """LeNet-5 with parameters in `params` ({"conv1.w": ..., "logits.b": ...}).

    Args:
        input_shape: (channels, height, width) of the images, at least
            (1, 4 * (kernel + 1) - 4, ...): 32x32 for 5x5 kernels.
        num_classes: the classifier's width.
        channels: conv1's and conv2's filters.
        units: fc1's and fc2's widths.
        kernel: the convolutions' size (valid, stride 1).
        weight_scale: weights start from N(0, weight_scale^2), biases at 0.
        seed: the seed of those weights.
        fast: im2col convolutions and whole-window pooling instead of loops.
        dtype: the parameters' dtype (float64: exact enough for a gradient check).
    """

    def __init__(self, input_shape=(1, 32, 32), num_classes=10, *, channels=(6, 16), units=(120, 84), kernel=5,
                 weight_scale=1e-3, seed=0, fast=False, dtype=np.float64):
        self.config = dict(input_shape=[int(v) for v in input_shape], num_classes=int(num_classes),
                           channels=[int(c) for c in channels], units=[int(u) for u in units], kernel=int(kernel),
                           weight_scale=float(weight_scale), seed=int(seed))
        self.layers = [Conv("conv1", fast=fast, input_grad=False), ReLU("relu1"), MaxPool("pool1", fast=fast),
                       Conv("conv2", fast=fast), ReLU("relu2"), MaxPool("pool2", fast=fast),
                       Affine("fc1"), ReLU("relu3"), Affine("fc2"), ReLU("relu4"), Affine("logits")]
        rng = np.random.default_rng(seed)
        self.params = {name: (rng.normal(0.0, weight_scale, shape) if name.endswith(".w") else np.zeros(shape))
                       .astype(dtype) for name, shape in self.shapes().items()}

    def shapes(self):
        """Each parameter's shape, in layer order."""
        c, h, w = self.config["input_shape"]
        k, (c1, c2), (u1, u2) = self.config["kernel"], self.config["channels"], self.config["units"]
        side_h, side_w = ((h - k + 1) // 2 - k + 1) // 2, ((w - k + 1) // 2 - k + 1) // 2
        if min(side_h, side_w) < 1:
            raise KerasCNNError(f"LeNet-5 with {k}x{k} kernels needs larger images than {h}x{w}")
        flat = c2 * side_h * side_w
        return {"conv1.w": (c1, c, k, k), "conv1.b": (c1,), "conv2.w": (c2, c1, k, k), "conv2.b": (c2,),
                "fc1.w": (flat, u1), "fc1.b": (u1,), "fc2.w": (u1, u2), "fc2.b": (u2,),
                "logits.w": (u2, self.config["num_classes"]), "logits.b": (self.config["num_classes"],)}

    def scores(self, x):
        """x (N, C, H, W) -> class scores (N, K), keeping each layer's cache."""
        for layer in self.layers:
            x = layer.forward(x, *(self.params[p] for p in layer.params))
        return x

    def loss(self, x, y=None):
        """The scores of `x` when `y` is None; else (loss, grads) with a
        gradient for every parameter, named as in `params`. The last scores
        stay in `self.last_scores` (the batch's accuracy comes from them)."""
        scores = self.last_scores = self.scores(x)
        if y is None:
            return scores
        loss, dout = softmax_loss(scores, y)
        grads = {}
        for layer in reversed(self.layers):  # conv1 returns no input gradient: the images need none
            dout, layer_grads = layer.backward(dout)
            grads.update(zip(layer.params, layer_grads))
        return loss, grads

    def predict(self, x, batch_size=1000):
        """Class scores of `x`, `batch_size` images at a time."""
        return np.concatenate([self.scores(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])

    def save(self, path):
        """Write the parameters and the configuration to an .npz of named
        arrays, atomically (an existing file stays until the new one is whole)."""
        from kerascnn.runs import storage

        meta = json.dumps({"format": NPZ_FORMAT, "model": "LeNet5", **self.config})
        return storage.write_npz(path, {**self.params, "config": np.array(meta)})

    @classmethod
    def load(cls, path, fast=False):
        """A model saved by `save`, without pickle."""
        try:
            with np.load(path, allow_pickle=False) as f:
                config = json.loads(str(f["config"]))
                arrays = {k: f[k] for k in f.files if k != "config"}
        except (OSError, ValueError, KeyError) as e:
            raise KerasCNNError(f"{path} is not a LeNet-5 saved by kerascnn.scratch: {e}") from None
        if config.pop("format", None) != NPZ_FORMAT or config.pop("model", None) != "LeNet5":
            raise KerasCNNError(f"{path} is not a LeNet-5 saved by kerascnn.scratch (format {NPZ_FORMAT})")
        model = cls(**config, fast=fast)
        expected = {k: tuple(v.shape) for k, v in model.params.items()}
        if {k: tuple(v.shape) for k, v in arrays.items()} != expected:
            raise KerasCNNError(f"{path}: its arrays do not match LeNet-5's parameters {expected}")
        model.params = {k: arrays[k] for k in expected}
        return model
