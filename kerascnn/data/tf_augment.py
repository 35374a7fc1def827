"""Training-time augmentation from Keras preprocessing layers.

Each named transform is a Keras image preprocessing layer run inside the
tf.data pipeline (on every Keras backend the pipeline runs in TensorFlow).
Randomness comes from an explicit seed per batch, derived from the run's
seed, the epoch and the batch number, so that a resumed run draws exactly
the transforms an uninterrupted one would.
"""

import keras

from kerascnn.config.choices import TRANSFORMS
from kerascnn.data.tricks import batch_seed


class Augmenter:
    """Applies the named transforms (of TRANSFORMS, as FitConfig's augment
    checks them) to a batch of images scaled to [0, 1] (N, H, W, C), in the
    order crop, flip, rotate, translate."""

    def __init__(self, names, image_size):
        self.names = tuple(names)
        self.pad = max(1, image_size // 8)
        layers = {
            "crop": lambda: keras.layers.RandomCrop(image_size, image_size),
            "flip": lambda: keras.layers.RandomFlip("horizontal"),
            "rotate": lambda: keras.layers.RandomRotation(10 / 360, fill_mode="constant"),
            "translate": lambda: keras.layers.RandomTranslation(0.1, 0.1, fill_mode="constant"),
        }
        self.layers = [(n, layers[n]()) for n in TRANSFORMS if n in self.names]

    def __bool__(self):
        return bool(self.layers)

    def __call__(self, images, seed):
        """Transform `images` with randomness from `seed`, an int64 tensor
        of shape (2,)."""
        import tensorflow as tf

        for i, (name, layer) in enumerate(self.layers):
            if name == "crop":
                p = self.pad
                images = tf.pad(images, [[0, 0], [p, p], [p, p], [0, 0]])
            seeds = batch_seed(seed + tf.constant([0, 104729 * (i + 1)], dtype=seed.dtype))
            layer.backend.set_backend("tensorflow")
            try:
                transformation = layer.get_random_transformation(images, training=True, seed=seeds)
                images = layer.transform_images(images, transformation, training=True)
            finally:
                layer.backend.reset()
        return images
