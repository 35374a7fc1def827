"""`show_batch`: a training batch exactly as the model receives it.

The batch comes from fit's own plan (`kerascnn.training.plan.make_plan`) and
its loader (on jax and torch through the same device transform as
the step), with the same configuration, data split and seed: resized to the
architecture's size, augmented and normalized. Only the drawing undoes the
normalization, so what is shown is what is trained on.
"""

import typing
from pathlib import Path

import numpy as np

from kerascnn.config.choices import dataset_label
from kerascnn.runs import storage
from kerascnn.plots import plot_gallery


class ShownBatch(typing.NamedTuple):
    path: Path  # the PNG written
    images: np.ndarray  # the whole batch as the model receives it: (N, H, W, C), normalized
    labels: np.ndarray  # (N,) classes, or (N, classes) one-hot or mixed (kerascnn.data.tricks)


def show_batch(config_or_arch=None, dataset=None, *, output=None, count=64, **options):
    """Draw the first training batch of a run configured as for `fit`
    (an arch name, a FitConfig or a configuration file, with `dataset` and
    FitConfig `options` such as augment, image_size, resize, batch_size,
    seed) to the PNG `output` (by default `<arch>.<dataset>.batch.png` here),
    its first `count` images captioned with their class. Returns a
    ShownBatch: the path, and the batch's images and labels."""
    from kerascnn.analysis.visualization import check_figure_path
    from kerascnn.config.spelling import OptionError, spell
    from kerascnn.data.loader import denormalize
    from kerascnn.training.plan import make_config, make_plan

    given = make_config(config_or_arch, dataset, options)
    if count < 1:
        raise OptionError(f"{spell('count')} must be at least 1, got {count}")
    default = f"{given.config.arch}.{dataset_label(given.config.dataset)}.batch.png"
    output = check_figure_path(output or default, "output")
    plan = make_plan(given, options={"data_on_device": "off"})  # the images themselves, on the host
    data = plan.data
    images, labels = plan.loader("train").first_batch()
    mean, std = data.stats()
    shown = min(count, len(images))
    figure = plot_gallery(denormalize(images[:shown], mean=mean, std=std),
                          [caption(label, data.class_names) for label in labels[:shown]],
                          title=batch_title(plan, shown, len(images)))
    return ShownBatch(storage.save_figure(figure, output), images, labels)


def caption(label, class_names):
    """An image's class, or its mixed label's classes by weight ("Coat 62%
    + Bag 38%"); a one-hot label is its class."""
    label = np.asarray(label)
    if label.ndim == 0:
        return class_names[int(label)]
    order = [int(i) for i in np.argsort(-label, kind="stable") if label[i] > 0.005]
    if len(order) == 1:
        return class_names[order[0]]
    return " + ".join(f"{class_names[i]} {label[i]:.0%}" for i in order[:2])


def batch_title(plan, shown, total):
    """What the batch is: model, data, size, channels, augmentation, seed."""
    settings, data = plan.settings, plan.data
    size = f"{settings.image_size}x{settings.image_size}" + (" padded" if settings.resize == "pad" else "")
    channels = "RGB" if data.image_shape[2] == 3 else "gray"
    tricks = plan.tricks.describe()
    augment = ", ".join([*settings.augment, *([tricks] if tricks else [])]) or "none"
    images = f"{shown} of {total}" if shown < total else f"{total}"
    return (f"{settings.arch} on {data.name}: first training batch ({images} images), {size} {channels}, "
            f"augment: {augment}, seed {settings.seed}")
