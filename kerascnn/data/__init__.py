"""Datasets and the batches made from them: where the arrays come from
(`sources`; a folder of your own images: `folders`), the checked and split `datasets.Dataset`, what every backend
shares (`sampling`: the epoch order, the steps per epoch, the gray
weights), and the one input factory (`loader`) with what it uses on each
backend: tf.data pipelines and Keras preprocessing-layer augmentation on
tensorflow (`tf_pipeline`, `tf_augment`); host batches (`host`), fed to
torch by `torch_feed`, on jax and torch; the `keras.ops` transforms
(`device_transforms`: in the step on jax and torch, in tf.data on
tensorflow); and the training tricks that change a batch (`tricks`).
Imports `runtime` and `config`."""
