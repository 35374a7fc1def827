"""The defaults a run's options take from its family, its optimizer and its
data (`resolve`), and the image size a family trains at (`image_size`)."""

import dataclasses

from kerascnn.config import choices
from kerascnn.config.options import MODEL_OPTIONS


def resolve(config, *, image_size, accelerator, data_dir=None):
    """The configuration with every family and optimizer default filled in:
    the model options the family takes, name, batch size, optimizer,
    learning rate and weight decay; the
    `image_size` to train at (see `image_size()`), and mixed precision only
    where an accelerator (a visible GPU or TPU) can use it; `data_dir` the
    folder the data was found in (kept whole, so that the run finds its data
    from anywhere)."""
    family = config.family
    optimizer = config.optimizer or family.optimizer
    if config.lr is not None:
        lr = config.lr
    else:
        lr = family.lr if config.optimizer is None else choices.DEFAULT_LR[optimizer]
    weight_decay = config.weight_decay
    if weight_decay is None:
        weight_decay = choices.DEFAULT_WEIGHT_DECAY.get(optimizer)
    model = {k: family.options[k] for k in MODEL_OPTIONS if getattr(config, k) is None and family.takes(k)}
    return dataclasses.replace(
        config, **model, name=config.name or config.arch,
        warmup=family.warmup if config.warmup is None else config.warmup,
        batch_size=config.batch_size or family.batch_size,
        optimizer=optimizer, lr=lr, weight_decay=weight_decay,
        image_size=image_size, data_dir=data_dir or config.data_dir,
        mixed_precision=config.mixed_precision and accelerator)


def image_size(family, data_size, accelerator):
    """The square size a family trains at when none is given: the data's
    own for LeNet; the textbook size with an accelerator, else the smallest
    the family takes."""
    if family.default_size is None:
        return max(data_size, family.min_size)
    return family.default_size if accelerator else family.min_size
