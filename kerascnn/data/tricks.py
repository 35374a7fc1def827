"""The training tricks of timm and fastai from Keras' own loss and layers:
label smoothing, mixup, cutmix and RandAugment.

- Label smoothing is `keras.losses.CategoricalCrossentropy(label_smoothing=)`:
  the targets stay as given, the loss smooths them.
- Mixup and cutmix are drawn on the host with numpy, a pure function of
  (seed, epoch, batch), the same on every backend (`mix_rows`): each image's
  partner in the batch, its share of the label, and for cutmix a box of
  whole pixels. Keras' `MixUp` and `CutMix` layers then blend or paste the
  images (`mix_images`, in the tf.data map on tensorflow, in the training
  step on jax and torch) and mix the one-hot labels, on the host. Given
  both, each batch takes one of them with even odds (timm's switch).
  Cutmix's label share is 1 - (box area) / (image area): the box is whole
  pixels, so the share is exactly the pasted area (Keras' own draw
  takes fractional boxes whose area differs from the pixels pasted).
- RandAugment is `keras.layers.RandAugment`, its random choices drawn from a
  seed pair that `mix_rows` draws per batch (a resumed run augments exactly
  as an uninterrupted one), computing only the operations it draws
  (`drawn_operations`).

Training accuracy under mixed labels (`MixedAccuracy`, logged as
"accuracy") is the label's weight on the predicted class, averaged over the
batch: a mixup image 70% coat and 30% bag scores 0.7 when the model says
coat, 0.3 when it says bag, 0 otherwise. On unmixed labels it is plain
accuracy; label smoothing does not change it (the targets stay one-hot).
"""

import functools

import numpy as np

from kerascnn.config.tricks import MIX_COLUMNS, Tricks

SEED_RANGE = 1 << 24  # seeds travel in float32 parameter rows: whole numbers below 2**24 are exact


def mix_rows(tricks, labels, num_classes, image_size, seed, epoch, batch):
    """The trick parameters of one training batch and its labels, with numpy,
    a pure function of (seed, epoch, batch): float32 rows (N, columns) and
    the labels as the loss takes them, float32 (N, num_classes) one-hot or
    mixed (integers as given when no trick needs soft labels)."""
    labels = np.asarray(labels).astype(np.int64)
    count = len(labels)
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), int(batch), 0x7121C5])
    columns, targets = [], labels.astype(np.int32)
    if tricks.soft_labels:
        targets = np.eye(num_classes, dtype=np.float32)[labels]
    if tricks.mixes:
        rows = draw_mix(rng, tricks, count, image_size)
        partner, share = rows[:, 0].astype(np.int64), rows[:, 2:3]
        targets = share * targets + (1.0 - share) * targets[partner]  # keras.layers.MixUp.transform_labels
        columns.append(rows)
    if tricks.randaugment:
        columns.append(np.repeat(rng.integers(0, SEED_RANGE, size=(1, 2)), count, axis=0))
    rows = np.concatenate(columns, axis=1).astype(np.float32) if columns else np.zeros((count, 0), np.float32)
    return rows, targets.astype(np.float32) if tricks.soft_labels else targets


def draw_mix(rng, tricks, count, image_size):
    """MIX_COLUMNS for `count` images: partner (a permutation), blend (the
    image's own share of the pixels; 1 under cutmix), share (its share of the
    label), and the cut box (top, left, bottom, right; empty under mixup)."""
    use_cut = bool(tricks.cutmix) and (not tricks.mixup or rng.random() < 0.5)
    alpha = tricks.cutmix if use_cut else tricks.mixup
    partner = rng.permutation(count)
    lam = rng.beta(alpha, alpha, size=count)
    box = np.zeros((count, 4))
    if use_cut:  # a box of about (1 - lam) of the area, of whole pixels, inside the image
        side = np.rint(np.sqrt(1.0 - lam) * image_size)
        top, left = (np.floor(rng.random(count) * (image_size - side + 1)) for _ in range(2))
        box = np.stack([top, left, top + side, left + side], axis=1)
        lam = 1.0 - side * side / (image_size * image_size)
        blend = np.ones(count)
    else:
        blend = lam
    return np.concatenate([partner[:, None], blend[:, None], lam[:, None], box], axis=1)


@functools.cache
def keras_layers(strength=Tricks.randaugment_strength):
    """Keras' MixUp, CutMix and RandAugment (on [0, 1] images, its `factor`
    `strength`), float32, made once a strength and not tracked by any model."""
    import keras

    return (keras.layers.MixUp(dtype="float32"), keras.layers.CutMix(dtype="float32"),
            keras.layers.RandAugment(value_range=(0, 1), factor=float(strength), dtype="float32"))


def mix_images(x, rows):
    """Images `x` (N, H, W, C) mixed as MIX_COLUMNS `rows` say: blended with
    their partner by Keras' MixUp, the partner's box pasted by Keras' CutMix."""
    from keras import ops

    mixup, cutmix, _ = keras_layers()
    partner = ops.cast(rows[:, 0], "int32")
    x = mixup.transform_images(x, {"mix_weight": rows[:, 1], "permutation_order": partner})
    height, width = x.shape[1], x.shape[2]
    ys = ops.reshape(ops.arange(height, dtype="float32"), (1, -1, 1, 1))
    xs = ops.reshape(ops.arange(width, dtype="float32"), (1, 1, -1, 1))
    top, left, bottom, right = (ops.reshape(rows[:, i], (-1, 1, 1, 1)) for i in range(3, 7))
    inside = (ys >= top) & (ys < bottom) & (xs >= left) & (xs < right)
    masks = ops.broadcast_to(inside, ops.shape(x))
    return cutmix.transform_images(x, {"permutation_order": partner, "batch_masks": masks})


def batch_seed(seed):
    """A keras.random.SeedGenerator handing out seeds derived from one seed
    pair tensor (kept in its dtype): a different, reproducible seed for every
    draw a layer makes in one batch (no state variable, unlike Keras' own)."""
    return _batch_seed_class()(seed)


@functools.cache
def _batch_seed_class():
    import keras
    from keras import ops

    class BatchSeed(keras.random.SeedGenerator):
        def __init__(self, seed):  # noqa: D107
            self._seed, self._draws, self.name = seed, 0, "batch_seed"
            self._dtype = keras.backend.standardize_dtype(seed.dtype)

        def next(self, ordered=True):
            self._draws += 1
            return self._seed + ops.convert_to_tensor(np.array([0, 7919 * self._draws]), dtype=self._dtype)

    return BatchSeed


def rand_augment(x, seed, strength=Tricks.randaugment_strength):
    """Keras' RandAugment of `strength` on images in [0, 1], every random
    choice drawn from the seed pair `seed` (RandAugment asks its own
    generator, not the seed it is given, for them: it is pointed at the
    batch's for the draw)."""
    from keras import ops

    layer = keras_layers(strength)[2]
    seeds = batch_seed(ops.cast(seed, "uint32"))
    object.__setattr__(layer, "_get_seed_generator", lambda backend=None: seeds)
    try:
        transformation = layer.get_random_transformation(x, training=True, seed=seeds)
    finally:
        object.__delattr__(layer, "_get_seed_generator")
    return drawn_operations(layer, x, transformation)


def drawn_operations(layer, x, transformation):
    """RandAugment's `transform_images`, computing only the drawn operations
    (Keras' computes all eleven for each of its `num_ops` and keeps the drawn
    one, the same for the whole batch, with `where`): a switch on the drawn
    index, the same images (tf.switch_case in tf.data, lax.switch under JAX,
    one call under torch, its index read on the host). Each operation gets
    copies of the images and its draws: under torch Keras' brightness adds to
    its input in place and its shear, translation and rotation change their
    matrix in place (its own layer there changes every batch's brightness)."""
    backend = layer.backend

    def fresh(value):
        return backend.numpy.copy(value) if backend.is_tensor(value) else value

    def operation(name):
        draws = transformation["transforms"][name]

        def run(images):
            own = {k: fresh(v) for k, v in draws.items()} if isinstance(draws, dict) else draws
            return getattr(layer, name).transform_images(fresh(images), own)
        return run

    branches = [operation(name) for name in transformation["transforms"]]
    x = backend.cast(x, layer.compute_dtype)
    for i in range(layer.num_ops):
        x = backend.core.switch(transformation["layer_idxes"][i], branches, x)
    return backend.cast(x, layer.compute_dtype)


def apply(tricks, x, rows):
    """RandAugment, then mixup or cutmix, on images in [0, 1] (keras.ops: in
    a tf.data map or in the training step), with the `rows` `mix_rows` drew."""
    column = 0
    if tricks.mixes:
        mixed_rows, column = rows[:, :len(MIX_COLUMNS)], len(MIX_COLUMNS)
    if tricks.randaugment:
        from keras import ops

        x = rand_augment(x, ops.cast(rows[0, column:column + 2], "int32"), tricks.randaugment_strength)
    if tricks.mixes:
        x = mix_images(x, mixed_rows)
    return x


def mixed_accuracy(y_true, y_pred):
    """The weight each (one-hot or mixed) label gives the predicted class."""
    from keras import ops

    predicted = ops.one_hot(ops.argmax(y_pred, axis=-1), ops.shape(y_pred)[-1], dtype="float32")
    return ops.sum(ops.cast(y_true, "float32") * predicted, axis=-1)


@functools.cache
def mixed_accuracy_metric():
    """The Keras metric class of `mixed_accuracy`, registered for loading
    (kerascnn>MixedAccuracy): training accuracy under one-hot or mixed
    labels, logged as "accuracy"."""
    import keras

    @keras.saving.register_keras_serializable("kerascnn")
    class MixedAccuracy(keras.metrics.MeanMetricWrapper):
        """The mean weight the label gives the predicted class (plain accuracy on one-hot labels)."""

        def __init__(self, name="accuracy", dtype=None):
            super().__init__(mixed_accuracy, name=name, dtype=dtype)

        def get_config(self):
            return {"name": self.name, "dtype": self.dtype}

    return MixedAccuracy


def loss_and_metric(tricks, reduction):
    """The loss and the accuracy metric of a run with `tricks`: sparse
    cross-entropy and accuracy on integer labels; else categorical
    cross-entropy with the label smoothing, and MixedAccuracy."""
    import keras

    if not tricks.soft_labels:
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=reduction), "accuracy"
    return (keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=tricks.label_smoothing,
                                                 reduction=reduction), mixed_accuracy_metric()())
