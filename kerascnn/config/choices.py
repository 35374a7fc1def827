"""What a user can choose, as plain data: datasets, optimizers, schedules,
samplings, augmentations, compilation and distribution modes, backends and
the values of the model options (the families themselves:
kerascnn.config.families).

Nothing here imports Keras or TensorFlow, so options are checked, listed in
`--help` and resolved before either starts.
"""

import os
from pathlib import Path

DATASETS = ("mnist", "fashion_mnist", "cifar10", "digits")
# A folder of images (kerascnn.data.folders) without train/ and test/: the share of each class held out for testing.
TEST_SIZE = 0.2


TFDS_PREFIX = "tfds:"  # --dataset tfds:NAME[/CONFIG]: a TensorFlow Datasets image classification dataset


def is_folder(dataset):
    """Whether `dataset` names a folder of images rather than one of
    DATASETS: it is not one of them nor a tfds: name, and is an existing
    folder or holds a path separator (a folder called mnist is `./mnist`)."""
    if not isinstance(dataset, (str, os.PathLike)):
        return False
    dataset = os.fspath(dataset)
    separators = [s for s in (os.sep, os.altsep) if s]
    return (dataset not in DATASETS and not is_tfds(dataset)
            and (os.path.isdir(dataset) or any(s in dataset for s in separators)))


def is_tfds(dataset):
    """Whether `dataset` is `tfds:NAME[/CONFIG]` (kerascnn.data.tfds_images)."""
    return isinstance(dataset, str) and dataset.startswith(TFDS_PREFIX)


def is_decoded(dataset):
    """Whether `dataset`'s images are decoded into a cache at a size a run
    chooses (a folder, or tfds:): a run records their fingerprint, size and
    test split to find the same images again."""
    return is_folder(dataset) or is_tfds(dataset)


def dataset_label(dataset):
    """A dataset as a file name may hold it: a folder's own name, a tfds:
    dataset's name and config, else the name."""
    if is_tfds(dataset):
        return dataset[len(TFDS_PREFIX):].replace("/", "-").replace(":", "-") or "tfds"
    return (Path(dataset).name or "folder") if is_folder(dataset) else dataset

# Plain SGD and AdaGrad need larger steps than the adaptive methods.
DEFAULT_LR = {
    "sgd": 0.1,
    "momentum": 0.05,
    "nesterov": 0.05,
    "adagrad": 0.05,
    "rmsprop": 1e-3,
    "adam": 1e-3,
    "adamw": 1e-3,
}
OPTIMIZERS = tuple(DEFAULT_LR)
# Decoupled weight decay when none is given: Keras' AdamW default; none for the others.
DEFAULT_WEIGHT_DECAY = {"adamw": 0.004}

# Schedules that set the rate at each epoch's start (callbacks), and those that are a function of the
# optimizer's step count (kerascnn.optim.schedules: saved inside the model, so a resumed run continues them).
EPOCH_SCHEDULES = ("constant", "step", "exponential", "cosine", "plateau")
STEP_SCHEDULES = ("onecycle",)
SCHEDULES = EPOCH_SCHEDULES + STEP_SCHEDULES
# (decay_rate, decay_after) defaults per schedule; step is the seed report's
# "multiply the rate by 0.7 every epoch after epoch 10".
SCHEDULE_DEFAULTS = {
    "constant": (None, None),
    "step": (0.7, 10),
    "exponential": (0.9, 0),
    "cosine": (None, 0),
    "plateau": (0.5, 2),
    "onecycle": (None, None),
}
# One-cycle as PyTorch's OneCycleLR (cosine, two phases) with its defaults, but fastai's share of rising steps:
# from lr / DIV_FACTOR up to lr over the first PCT_START of the steps, then down to lr / (DIV_FACTOR * FINAL_DIV).
ONECYCLE = {"pct_start": 0.25, "div_factor": 25.0, "final_div_factor": 1e4}

# How `lr_find` picks a rate from its sweep (fastai's suggestion functions steep and valley).
LR_FIND_RULES = {
    "steepest": "steepest descent of the smoothed loss",
    "valley": "valley rule: within the longest descent of the smoothed loss",
}

SAMPLINGS = ("shuffle", "sequential", "bootstrap")

# `kerascnn explain`: two class activation maps of a convolution, two gradients of the pixels.
EXPLAIN_METHODS = ("gradcam", "gradcam++", "saliency", "smoothgrad")

TRANSFORMS = {
    "crop": "random crop after zero padding by 1/8 of the image side (4 px at 32)",
    "flip": "horizontal flip with probability 1/2",
    "rotate": "rotation by up to 10 degrees either way",
    "translate": "translation by up to 10% of the side either way",
}

JIT_MODES = ("auto", "on", "off")
DATA_ON_DEVICE = ("auto", "on", "off")
DISTRIBUTE = ("mirrored", "multi-worker", "data-parallel")
BACKENDS = ("tensorflow", "jax", "torch")
POOLS = ("avg", "max")
INITS = ("glorot", "he")
PADDINGS = ("same", "valid")  # LeNet's conv1: "valid" is the paper's LeNet-5 (32x32 in, 28x28 after C1)
RESIZE_MODES = ("resize", "pad")  # how images reach the size a model takes
NORMALIZATIONS = ("dataset", "half")  # per-channel mean/std of the training images; or 0.5/0.5, to [-1, 1]
COLOR_MODES = ("auto", "grayscale", "rgb")  # the channels a model takes: the data's, 1 or 3 (Keras' color_mode)
