"""Learning-rate schedules of the optimizer's step count: one-cycle, and a
linear warm-up in front of any schedule.

They are Keras `LearningRateSchedule`s registered under the package
"kerascnn": the optimizer holds one, a saved model carries it, and it loads
in safe mode under any backend once this module is imported (as
`kerascnn.io.load_model` does). The optimizer's iteration counter, which a
checkpoint keeps, drives them, so a resumed run continues exactly. The
math is keras.ops only, so it runs under TensorFlow, JAX and torch alike.

The per-epoch schedules (constant, step, exponential, cosine, plateau) stay
callbacks that set a plain rate (kerascnn.callbacks): plateau follows the
validation loss, and checkpoints of earlier runs hold a plain rate.
"""

import math

import keras
from keras import ops

from kerascnn.choices import ONECYCLE, STEP_SCHEDULES


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
    (s + 1) / warmup_steps of the rate the schedule gives it, as
    callbacks.Warmup does for the per-epoch schedules."""

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


def step_schedule(name, lr, total_steps):
    """The per-step schedule `name` with peak rate `lr` over `total_steps`."""
    if name not in STEP_SCHEDULES:
        raise ValueError(f"{name!r} is not a per-step schedule; those are: {', '.join(STEP_SCHEDULES)}")
    return OneCycle(lr, total_steps)


def learning_rate(settings, steps_per_epoch=None):
    """What a run's optimizer takes as its learning rate: `settings.lr` for
    the per-epoch schedules (their callbacks set it, and the Warmup callback
    warms it up), else the per-step schedule over all the run's steps, with
    the warm-up over the first `settings.warmup` epochs in front of it."""
    if settings.schedule not in STEP_SCHEDULES:
        return settings.lr
    if not steps_per_epoch:
        raise ValueError(f"the {settings.schedule} schedule spans the run's steps: give steps_per_epoch")
    schedule = step_schedule(settings.schedule, settings.lr, settings.epochs * steps_per_epoch)
    if settings.warmup:
        schedule = LinearWarmup(schedule, max(1, round(settings.warmup * steps_per_epoch)))
    return schedule

