"""Learning-rate schedules, each a Keras `LearningRateSchedule` of the
optimizer's step count (as Keras' own CosineDecay and friends): the
per-epoch schedules (constant, step, exponential, cosine) as a table of
each epoch's rate (`EpochRates`), one-cycle per step (`OneCycle`), and a
linear warm-up in front of any of them (`LinearWarmup`). Only plateau, which
follows the validation loss, stays a callback (kerascnn.training.callbacks), as in
Keras.

They are registered under the package "kerascnn": the optimizer holds one,
a saved model carries it, and it loads in safe mode under any backend once
this module is imported (as `kerascnn.runs.storage.load_model` does). The optimizer's
iteration counter, which a checkpoint keeps, drives them, so a resumed run
continues exactly. The math is keras.ops only, so it runs under
TensorFlow, JAX and torch alike, inside the compiled training step.
"""

import math

import keras
import numpy as np
from keras import ops

from kerascnn.config.choices import EPOCH_SCHEDULES, ONECYCLE, SCHEDULE_DEFAULTS, STEP_SCHEDULES


def _cosine(start, end, pct):
    """From `start` at pct 0 to `end` at pct 1 along half a cosine:
    end + (start - end) (1 + cos(pi pct)) / 2, with the factor written as
    cos(pi pct / 2)^2, which float32 keeps accurate near its end."""
    return end + (start - end) * ops.square(ops.cos(math.pi / 2 * pct))


@keras.saving.register_keras_serializable(package="kerascnn")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """Smith's one-cycle policy, as PyTorch's OneCycleLR (cosine, two
    phases): step 0 trains at max_lr / div_factor, the rate rises along a
    cosine to max_lr at step pct_start * total_steps - 1, then falls along
    a cosine to max_lr / (div_factor * final_div_factor) at the last step,
    total_steps - 1, and stays there."""

    def __init__(self, max_lr, total_steps, pct_start=ONECYCLE["pct_start"], div_factor=ONECYCLE["div_factor"],
                 final_div_factor=ONECYCLE["final_div_factor"]):
        self.max_lr, self.total_steps = float(max_lr), int(total_steps)
        self.pct_start, self.div_factor, self.final_div_factor = float(pct_start), float(div_factor), \
            float(final_div_factor)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        first = self.max_lr / self.div_factor
        last = first / self.final_div_factor
        peak = self.pct_start * self.total_steps - 1  # PyTorch's end of the rise (a float)
        end = self.total_steps - 1
        rise = _cosine(first, self.max_lr, ops.clip(step / max(peak, 1e-9), 0.0, 1.0))
        fall = _cosine(self.max_lr, last, ops.clip((step - peak) / max(end - peak, 1e-9), 0.0, 1.0))
        return ops.where(step <= peak, rise, fall)

    def get_config(self):
        return {"max_lr": self.max_lr, "total_steps": self.total_steps, "pct_start": self.pct_start,
                "div_factor": self.div_factor, "final_div_factor": self.final_div_factor}


@keras.saving.register_keras_serializable(package="kerascnn")
class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """`schedule` (a LearningRateSchedule or a constant rate) behind a
    linear warm-up: step s of the first `warmup_steps` trains at
    (s + 1) / warmup_steps of the rate the schedule gives it (also
    callbacks.Warmup's ramp, for plateau)."""

    def __init__(self, schedule, warmup_steps):
        self.schedule, self.warmup_steps = schedule, int(warmup_steps)

    def __call__(self, step):
        rate = self.schedule(step) if callable(self.schedule) else self.schedule
        ramp = (ops.cast(step, "float32") + 1) / self.warmup_steps
        return rate * ops.minimum(ramp, 1.0)

    def get_config(self):
        schedule = self.schedule if isinstance(self.schedule, (int, float)) else \
            keras.saving.serialize_keras_object(self.schedule)
        return {"schedule": schedule, "warmup_steps": self.warmup_steps}

    @classmethod
    def from_config(cls, config):
        schedule = config["schedule"]
        if isinstance(schedule, dict):
            schedule = keras.saving.deserialize_keras_object(schedule)
        return cls(schedule, config["warmup_steps"])


def schedule_function(name, lr, epochs, *, decay_rate=None, decay_after=None):
    """The learning rate of epoch e (from 0) for a per-epoch schedule:
    step: lr * rate^max(0, e + 1 - after) (decay every epoch after `after`);
    exponential: lr * rate^max(0, e - after); cosine: half a cosine from lr
    to 0 over the epochs after `after` (one-cycle's `_cosine`); constant and
    plateau: lr (plateau's callback lowers it). The rates are those
    FitConfig checked (decay_rate in (0, 1], decay_after at least 0); None
    takes SCHEDULE_DEFAULTS."""
    if name not in EPOCH_SCHEDULES:
        raise ValueError(f"{name!r} is not a per-epoch schedule; those are: {', '.join(EPOCH_SCHEDULES)}")
    default_rate, default_after = SCHEDULE_DEFAULTS[name]
    rate = default_rate if decay_rate is None else float(decay_rate)
    after = default_after if decay_after is None else int(decay_after)
    if name in ("constant", "plateau"):
        return lambda e: lr
    if name == "step":
        return lambda e: lr * rate ** max(0, e + 1 - after)
    if name == "exponential":
        return lambda e: lr * rate ** max(0, e - after)
    span = max(1, epochs - after)
    return lambda e: float(_cosine(lr, 0.0, min(max(0, e - after), span) / span))


@keras.saving.register_keras_serializable(package="kerascnn")
class EpochRates(keras.optimizers.schedules.LearningRateSchedule):
    """A rate per epoch (`rates`, epoch 0 first), each for `steps_per_epoch`
    steps; after the last epoch its rate stays. The rates are
    `schedule_function`'s, computed once when the run starts and kept as
    float32, as the optimizer's rate variable kept them when a callback set
    them."""

    def __init__(self, rates, steps_per_epoch):
        self.rates, self.steps_per_epoch = [float(r) for r in rates], int(steps_per_epoch)
        self._table = np.asarray(self.rates, np.float32)

    def __call__(self, step):
        epoch = ops.floor_divide(ops.cast(step, "int32"), self.steps_per_epoch)
        return ops.take(ops.convert_to_tensor(self._table), ops.clip(epoch, 0, len(self.rates) - 1))

    def get_config(self):
        return {"rates": self.rates, "steps_per_epoch": self.steps_per_epoch}


def step_schedule(name, lr, total_steps):
    """The per-step schedule `name` with peak rate `lr` over `total_steps`."""
    if name not in STEP_SCHEDULES:
        raise ValueError(f"{name!r} is not a per-step schedule; those are: {', '.join(STEP_SCHEDULES)}")
    return OneCycle(lr, total_steps)


def learning_rate(settings, steps_per_epoch=None):
    """What a run's optimizer takes as its learning rate: a plain
    `settings.lr` for a constant rate without warm-up and for plateau (its
    callback lowers the rate, and callbacks.Warmup warms it up); else the
    schedule over the run's epochs of `steps_per_epoch` steps, behind a
    linear warm-up over the first `settings.warmup` epochs."""
    name = settings.schedule
    if name == "plateau" or name == "constant" and not settings.warmup:
        return settings.lr
    if not steps_per_epoch:
        raise ValueError(f"the {name} schedule sets the rate of every step: give steps_per_epoch")
    if name in STEP_SCHEDULES:
        schedule = step_schedule(name, settings.lr, settings.epochs * steps_per_epoch)
    else:
        fn = schedule_function(name, settings.lr, settings.epochs, decay_rate=settings.decay_rate,
                               decay_after=settings.decay_after)
        schedule = EpochRates([fn(e) for e in range(settings.epochs)], steps_per_epoch)
    if settings.warmup:
        schedule = LinearWarmup(schedule, warmup_steps(settings.warmup, steps_per_epoch))
    return schedule


def warmup_steps(epochs, steps_per_epoch):
    """The steps of a warm-up over `epochs` epochs (fractions allowed), at least one."""
    return max(1, round(float(epochs) * steps_per_epoch))
