"""`lr_find`: Smith's learning-rate range test, as fastai's `lr_find`.

From the model's initial weights (the model, optimizer and training
batches `fit` would use, built by fit's own stages) it trains one batch per
rate while the rate grows exponentially from `start_lr` to `end_lr`,
records the loss, smooths it (an exponential moving average with bias
correction, beta 0.98), stops once the smoothed loss passes 4 times its
minimum or is not finite, puts the weights and the optimizer state back
exactly, plots the loss against the rate and suggests one.

The divergence stop of `fit` (callbacks.DivergenceGuard) plays no part:
the sweep is meant to diverge, and stops by its own rule.
"""

import dataclasses
import math
from pathlib import Path

import numpy as np

from kerascnn.runs import storage
from kerascnn.config.choices import LR_FIND_RULES
from kerascnn.config.spelling import OptionError, spell
from kerascnn.errors import KerasCNNError
from kerascnn.runtime.distribution import run_scope
from kerascnn.training.plan import make_plan

SMOOTHING = 0.98  # fastai's beta for the loss's moving average
STOP_FACTOR = 4.0  # stop once the smoothed loss passes this many times its minimum
SKIP_END = 5  # fastai's suggestions leave out the sweep's first tenth and its last 5 steps
MIN_STEPS = 10


@dataclasses.dataclass
class LRFindResult:
    """A sweep: the rates tried, the loss at each (raw and smoothed), the
    suggested rate, the rule that chose it and the plot's path."""

    lrs: list
    losses: list
    smoothed: list
    suggestion: float
    rule: str
    path: Path

    @property
    def rule_text(self):
        return LR_FIND_RULES[self.rule]

    def __str__(self):
        return f"suggested learning rate {self.suggestion:.1e} ({self.rule_text}); plot: {self.path}"


def check_sweep(start_lr, end_lr, steps, suggest, output=None):
    """The sweep's own options, checked before Keras starts. Returns the
    PNG path (None: the default, beside the run fit would write)."""
    for name, value in (("start_lr", start_lr), ("end_lr", end_lr)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
            raise OptionError(f"{spell(name)} must be a positive number, got {value!r}")
    if not end_lr > start_lr:
        raise OptionError(f"{spell('end_lr')} {end_lr:g} must be above {spell('start_lr')} {start_lr:g}: the "
                          f"sweep raises the rate from one to the other")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < MIN_STEPS:
        raise OptionError(f"{spell('steps')} must be a whole number of at least {MIN_STEPS}, got {steps!r}")
    if suggest not in LR_FIND_RULES:
        raise OptionError(f"{spell('suggest')}: unknown rule {suggest!r}; choose one of: {', '.join(LR_FIND_RULES)}")
    if output is None:
        return None
    output = Path(output)
    if output.suffix.lower() != ".png" or output.is_dir():
        raise OptionError(f"{spell('output')} {output}: lr-find writes a PNG image; give a file name ending in .png")
    storage.check_writable(output.parent)
    return output


def sweep_rates(start_lr, end_lr, steps):
    """`steps` rates growing exponentially from `start_lr` to `end_lr`, both included."""
    return [float(r) for r in np.geomspace(start_lr, end_lr, steps)]


def sweep(model, batches, lrs, *, beta=SMOOTHING, stop_factor=STOP_FACTOR):
    """Train the compiled `model` one batch of `batches` (x, y) per rate of
    `lrs`, keeping each batch's loss and its moving average with bias
    correction, until the average passes `stop_factor` times its minimum or
    is not finite. The weights (and every other model variable: batch-norm
    statistics, random generators) and the optimizer's state are put back
    afterwards, exactly. Returns (losses, smoothed), as long as the sweep went."""
    import keras

    model.optimizer.build(model.trainable_variables)  # its slots exist now, so that they are put back too
    variables = list(model.variables) + list(model.optimizer.variables)
    saved = [keras.ops.convert_to_numpy(v) for v in variables]
    losses, smoothed, average = [], [], 0.0
    try:
        for lr, (x, y) in zip(lrs, batches):
            model.optimizer.learning_rate = lr
            losses.append(float(model.train_on_batch(x, y, return_dict=True)["loss"]))
            average = beta * average + (1 - beta) * losses[-1]
            smoothed.append(average / (1 - beta ** len(losses)))
            if not math.isfinite(smoothed[-1]) or smoothed[-1] > stop_factor * min(smoothed):
                break
    finally:
        for variable, value in zip(variables, saved):
            variable.assign(value)
    return losses, smoothed


def steepest(lrs, losses):
    """Where the loss falls fastest against log(lr): fastai's `steep`."""
    slopes = np.diff(losses) / np.diff(np.log(lrs))
    return int(np.argmin(slopes))


def valley(lrs, losses):
    """fastai's `valley`: the longest run of falling losses (a longest
    decreasing subsequence), and the point about half way into it."""
    n = len(losses)
    lds, max_start, max_end = [1] * n, 0, 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    return max_start + int(sections) + int(sections / 2)


def suggest_lr(lrs, smoothed, steps, rule="steepest"):
    """The rate `rule` picks from the smoothed losses of a sweep of `steps`
    planned steps, as fastai does: without the first tenth (noise) and the
    last SKIP_END steps (the divergence), nor anything from the first loss
    that is not finite; the whole finite sweep when that leaves too little."""
    finite = np.isfinite(smoothed)
    n = len(smoothed) if finite.all() else int(np.argmin(finite))
    lo, hi = steps // 10, n - SKIP_END
    if hi - lo < 3:  # a short sweep: all of it but the step that stopped it
        lo, hi = 0, n - 1 if n == len(smoothed) < steps else n
    if hi - lo < 3:
        raise KerasCNNError(f"the loss diverged after {len(smoothed)} steps, at learning rate "
                            f"{lrs[len(smoothed) - 1]:.1e}, too soon to suggest a rate; lower {spell('start_lr')} "
                            f"or raise {spell('steps')}")
    lrs, losses = np.asarray(lrs[lo:hi]), np.asarray(smoothed[lo:hi])
    index = steepest(lrs, losses) if rule == "steepest" else valley(lrs, losses)
    return float(lrs[index])


def default_path(settings):
    """Beside the run fit would write: <output>/<name>.lr_find.png."""
    return Path(settings.output) / f"{settings.name}.lr_find.png"


def sweep_model(plan, lrs):
    """The sweep on the model, optimizer and training batches fit would
    start from (`plan`, a kerascnn.training.plan.Plan), with the rate left
    to the sweep (a constant schedule, no warm-up). Returns (losses, smoothed)."""
    swept = plan.with_settings(schedule="constant", warmup=0, decay_rate=None, decay_after=None,
                               epochs=-(-len(lrs) // plan.steps_per_epoch), steps_per_execution=1)
    with run_scope(swept.settings):
        return sweep(swept.model(), iter(swept.loader("train")), lrs)


def lr_find(config=None, dataset=None, *, start_lr=1e-7, end_lr=10, steps=200, suggest="valley", output=None,
            verbose=False, **options):
    """Sweep the learning rate exponentially from `start_lr` to `end_lr`
    over `steps` training steps from the initial weights of the model fit
    would train, plot the loss against it and suggest a rate.

    `config`, `dataset` and `options` are fit's (an arch name, a FitConfig
    or a configuration file, then any FitConfig field); the schedule and
    warm-up do not apply, the sweep sets the rate. `suggest` is "valley"
    (fastai's default rule; docs/explain.md measures it against the other)
    or "steepest" (where the smoothed loss falls fastest). `output` is the PNG to write [<output>/<name>.lr_find.png, beside
    the run fit would save]. Returns an LRFindResult; str() of it is the
    line the command prints.
    """
    path = check_sweep(start_lr, end_lr, steps, suggest, output)
    plan = make_plan(config, dataset, options, echo=print if verbose else None)
    settings = plan.settings
    path = path or default_path(settings)
    storage.check_writable(path.parent)
    lrs = sweep_rates(start_lr, end_lr, steps)
    losses, smoothed = sweep_model(plan, lrs)
    suggestion = suggest_lr(lrs, smoothed, steps, suggest)
    result = LRFindResult(lrs[:len(losses)], losses, smoothed, suggestion, suggest, path)
    write_plot(result, settings)
    return result


def write_plot(result, settings):
    """The loss against the rate, with the suggestion marked, as a PNG."""
    from kerascnn.plots import plot_lr_find

    title = (f"learning-rate range test: {settings.arch} on {settings.dataset}, {settings.optimizer}, "
             f"batch {settings.batch_size}, {len(result.lrs)} steps")
    figure = plot_lr_find(result.lrs, result.losses, result.smoothed, result.suggestion, rule=result.rule_text,
                          title=title)
    storage.save_figure(figure, storage.ensure_dir(result.path.parent) / result.path.name)
