"""Datasets and the batches made from them: where the arrays come from
(`sources`), the checked and split `datasets.Dataset`, and the one input
factory (`loader`) with what it uses on each backend: tf.data pipelines
and Keras preprocessing-layer augmentation on tensorflow (`tf_pipeline`,
`tf_augment`), host batches (`host`) and `keras.ops` transforms on the
device (`device_transforms`) on jax and torch, and the training tricks that
change a batch (`tricks`). Imports `runtime` and `config`."""
