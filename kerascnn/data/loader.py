"""The batches a run trains and evaluates on, for the backend in use: on
tensorflow tf.data pipelines (kerascnn.data.datasets) that hand the model its input
ready; on jax and torch host batches of uint8 images (kerascnn.data.host) that
the run's `input_transform` turns into the model's input on the device."""

from kerascnn.data.datasets import make_pipeline, tf_backend
from kerascnn.runtime.distribution import data_parallel_devices, process_part, sharded
from kerascnn.config.tricks import Tricks


def input_shape(settings, data):
    return (settings.image_size, settings.image_size, data.image_shape[2])


def input_transform(settings, data):
    """The device side of the jax/torch input path for this run: uint8
    images and drawn parameters to the model's input."""
    from kerascnn.data.device_transforms import InputTransform

    mean, std = data.stats()
    return InputTransform(input_shape(settings, data), mean, std, settings.resize, settings.augment,
                          tricks=Tricks.of(settings), name="input_transform")


def prepared(settings, data, x):
    """uint8 images `x` as the run's model takes them, as a numpy array."""
    import keras

    from kerascnn.data.datasets import preprocess

    mean, std = data.stats()
    return keras.ops.convert_to_numpy(preprocess(x, input_shape=input_shape(settings, data), mean=mean, std=std,
                                                 resize=settings.resize))


def eval_pipeline(settings, data, x, y):
    """Batches of `x, y` for the model being trained, in order: preprocessed
    (tf.data) on tensorflow; uint8 with a parameter row for its
    TrainingModel on jax and torch."""
    tricks = Tricks.of(settings)
    one_hot = data.num_classes if tricks.soft_labels else 0  # the run's loss takes one-hot labels
    if not tf_backend():
        from kerascnn.data.host import Batches
        from kerascnn.data.device_transforms import param_columns

        return Batches(x, y, settings.batch_size, columns=len(param_columns(settings.augment)) + len(tricks.columns()),
                       multiple=data_parallel_devices(settings), part=process_part(settings.distribute),
                       one_hot=one_hot)
    mean, std = data.stats()
    batches = make_pipeline(
        x, y, input_shape=(settings.image_size, settings.image_size, data.image_shape[2]), mean=mean, std=std,
        batch_size=settings.batch_size, resize=settings.resize)
    if one_hot:
        import tensorflow as tf

        batches = batches.map(lambda images, labels: (images, tf.one_hot(labels, one_hot)))
    return sharded(settings, batches)


def training_pipeline(settings, data, initial_epoch=0):
    """The training batches of `data` under resolved `settings`, from
    `initial_epoch` on: (batches, steps_per_epoch). On tensorflow a tf.data
    stream of the images as the model receives them; on jax and torch an
    `inputs.TrainingBatches` of uint8 images (their indices with
    `data_on_device` on) and drawn parameters, which `input_transform`
    turns into the model's input on the device. fit trains on these;
    show_batch draws them."""
    from kerascnn.data.tf_augment import Augmenter
    from kerascnn.data.datasets import make_training_pipeline

    if not tf_backend():
        from kerascnn.data.host import TrainingBatches

        batches = TrainingBatches(data.x_train, data.y_train, batch_size=settings.batch_size, epochs=settings.epochs,
                                  initial_epoch=initial_epoch, seed=settings.seed, sampling=settings.sampling,
                                  augment=settings.augment, image_size=settings.image_size,
                                  multiple=data_parallel_devices(settings),
                                  part=process_part(settings.distribute), tricks=Tricks.of(settings),
                                  num_classes=data.num_classes, indices=settings.data_on_device == "on")
        return batches, batches.steps

    mean, std = data.stats()
    size = settings.image_size
    batches, steps = make_training_pipeline(
        data.x_train, data.y_train, input_shape=(size, size, data.image_shape[2]), mean=mean, std=std,
        batch_size=settings.batch_size, epochs=settings.epochs, initial_epoch=initial_epoch,
        seed=settings.seed, sampling=settings.sampling, resize=settings.resize,
        augment=Augmenter(settings.augment, size) if settings.augment else None, tricks=Tricks.of(settings),
        num_classes=data.num_classes)
    return sharded(settings, batches), steps
