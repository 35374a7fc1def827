"""A run's plan, made once and then only read: the configuration as the
command gave it (`make_config`), its data, and everything resolved from
both (`make_plan` -> `Plan`: settings, jit, steps per epoch and per call,
images an epoch, devices, input shape, tricks), from which fit, lr-find and
show-batch take their model (`Plan.model`) and batches (`Plan.loader`).
"""

import dataclasses
import math
import os
import typing
from pathlib import Path

import numpy as np

from kerascnn.config.choices import STEP_SCHEDULES, is_tfds
from kerascnn.config.defaults import image_size as default_image_size
from kerascnn.config.defaults import resolve
from kerascnn.config.options import FitConfig
from kerascnn.config.spelling import OptionError, spell, spell_set
from kerascnn.config.tricks import Tricks
from kerascnn.data.datasets import load_dataset
from kerascnn.data.loader import create_loader, input_transform
from kerascnn.data.sampling import steps_per_epoch
from kerascnn.errors import KerasCNNError
from kerascnn.optim.optimizers import make_optimizer
from kerascnn.runs import storage
from kerascnn.runtime.distribution import (accelerator_available, check_distribute, data_parallel_devices,
                                           join_processes, multi_worker_strategy)


class Given(typing.NamedTuple):
    """A run's configuration as the command gave it, and whether it replays
    a file (fit then protects an existing run from it)."""

    config: FitConfig
    replay: bool = False


@dataclasses.dataclass(frozen=True)
class Plan:
    """Everything a run needs, resolved once by `make_plan`: fit, lr-find,
    show-batch and a study's runs only read it."""

    given: FitConfig  # as the command gave it
    settings: FitConfig  # every default filled in (resolve_settings)
    data: object  # a kerascnn.data.datasets.Dataset
    backend: str
    jit_compile: bool  # XLA / torch.compile for model.compile (resolve_jit)
    steps_per_epoch: int  # sampling.steps_per_epoch: the one rule
    epoch_images: int  # the images an epoch trains on
    devices: int  # the devices each batch is split over (--distribute data-parallel), else 1
    input_shape: tuple
    tricks: Tricks
    replay: bool = False

    @property
    def steps_per_execution(self):
        return self.settings.steps_per_execution or 1

    def loader(self, split="train", *, initial_epoch=0, epochs=None):
        """The run's batches of `split` (kerascnn.data.loader.create_loader)."""
        return create_loader(self, split, initial_epoch=initial_epoch, epochs=epochs)

    def model(self, folder=None):
        """The model that trains, with its optimizer (build_or_resume; call
        it under runtime.distribution.run_scope)."""
        return build_or_resume(self, folder)

    def with_settings(self, **changes):
        """This plan with `changes` to its settings that leave the rest as
        resolved (the epochs, the schedule, the output)."""
        return dataclasses.replace(self, settings=self.settings.replace(**changes))


def make_plan(config=None, dataset=None, options=None, *, echo=None, callbacks=()):
    """The run's plan: its configuration (`make_config`), the distribution
    started where it must come first (`start_distribution`), its data, and
    the settings and facts resolved from them, said in lines to `echo`.
    `callbacks`: the caller's, for resolve_steps_per_execution."""
    import keras

    given = make_config(config, dataset, options)
    start_distribution(given.config)
    data = normalized(load_data(given.config), given.config.normalize)
    settings = resolve_settings(given.config, data, echo, callbacks)
    devices = data_parallel_devices(settings)
    n = len(data.x_train)
    return Plan(given.config, settings, data, keras.backend.backend(), resolve_jit(settings.jit),
                steps_per_epoch(n, settings.batch_size, devices), n - n % settings.batch_size % devices, devices,
                (settings.image_size, settings.image_size, input_channels(settings.color_mode, data)),
                Tricks.of(settings), given.replay)


def normalized(data, normalize):
    """`data` with the mean and std its images are normalized by: its own
    (Dataset.stats), or 0.5 and 0.5 for every channel ("half")."""
    if normalize != "half":
        return data
    channels = data.image_shape[2]
    return dataclasses.replace(data, _stats=([0.5] * channels, [0.5] * channels))


def input_channels(color_mode, data):
    """The channels the network takes: the data's, or 1 or 3 as
    `color_mode` forces (the input path converts, with sampling.GRAY_WEIGHTS)."""
    return {"grayscale": 1, "rgb": 3}.get(color_mode, data.image_shape[2])


def make_config(config=None, dataset=None, options=None):
    """The run's configuration as given (a `Given`), from an arch name, a
    FitConfig, a configuration file or a Given, with `dataset` and `options`
    overriding it."""
    options = dict(options or {})
    if dataset is not None:
        options["dataset"] = dataset
    if isinstance(config, Given):
        return Given(config.config.replace(**options), config.replay) if options else config
    replay = isinstance(config, Path) or isinstance(config, str) and config.endswith(CONFIG_SUFFIXES)
    if replay:
        base = FitConfig.from_file(config)
    elif isinstance(config, FitConfig):
        base = config
    else:
        if config is not None and "arch" in options:
            raise OptionError(f"the architecture is given twice: {config!r} and arch={options['arch']!r}")
        base = FitConfig(arch=options.pop("arch", config or "lenet"))
    return Given(base.replace(**options), replay)


CONFIG_SUFFIXES = (".json", ".toml", ".yaml", ".yml")


def start_distribution(given):
    """Check `--distribute` against the backend, once, and start what must
    come before TensorFlow or JAX runs anything: a multi-worker run's
    strategy, a multi-process data-parallel run's jax.distributed."""
    import keras

    if given.distribute:
        check_distribute(given.distribute, keras.backend.backend())
    if given.distribute == "multi-worker":
        multi_worker_strategy()
    join_processes(given.distribute)


def load_data(given):
    """The data of a run: its dataset, split and subset as `given` (a
    folder's images stored at the given image size and resize mode)."""
    return load_dataset(given.dataset, given.data_dir, val_size=given.val_size, train_size=given.train_size,
                        seed=given.seed, test_size=given.test_size, image_size=given.image_size, resize=given.resize)


def resolve_settings(given, data, echo=None, callbacks=()):
    """The configuration with the family's and the data's defaults filled in,
    said in a line with the backend. `callbacks`: the caller's, for
    resolve_steps_per_execution."""
    import keras

    if echo:
        echo(f"backend: {keras.backend.backend()} (Keras {keras.__version__})")
    devices = data_parallel_devices(given) if given.distribute else 1
    if given.batch_size is not None and given.batch_size % devices:
        raise OptionError(f"{spell('batch_size')} {given.batch_size} does not split over the {devices} devices of "
                          f"{spell('distribute')} data-parallel; choose a multiple of {devices}")
    size = resolve_image_size(given.family, given.image_size, data.image_shape[0], echo=echo)
    if given.resize == "pad" and size < max(data.image_shape[:2]):
        raise OptionError(f"{spell_set('resize', 'pad')} needs {spell('image_size')} at least the data's "
                          f"{data.image_shape[0]}x{data.image_shape[1]}, got {size}; pad only enlarges, "
                          f"{spell_set('resize', 'resize')} shrinks")
    accelerator = accelerator_available()
    if given.mixed_precision and not accelerator and echo:
        echo(f"warning: {spell('mixed_precision')} needs a GPU; training in float32 on this CPU")
    local = data.source.startswith("local:")
    data_dir = (os.path.dirname(os.path.abspath(data.source[len("local:"):])) if local
                else os.path.abspath(given.data_dir) if is_tfds(given.dataset) and given.data_dir else None)
    settings = resolve(given, image_size=size, accelerator=accelerator, data_dir=data_dir)
    settings = settings.replace(dataset=data.name, data_on_device=resolve_data_on_device(
        settings.data_on_device, data.x_train.nbytes, keras.backend.backend(), settings.distribute, accelerator, echo))
    steps = steps_per_epoch(len(data.x_train), settings.batch_size, devices)
    warmup_per_batch = bool(settings.warmup) and settings.schedule == "plateau"  # callbacks.Warmup
    if warmup_per_batch and (settings.steps_per_execution or 1) > 1:
        raise OptionError(f"{spell('steps_per_execution')} must be 1 with {spell('warmup')} and "
                          f"{spell_set('schedule', 'plateau')} (its warm-up sets the rate every batch)")
    settings = settings.replace(steps_per_execution=resolve_steps_per_execution(
        settings.steps_per_execution, steps, keras.backend.backend(), settings.distribute,
        batch_hooks=warmup_per_batch or has_batch_hooks(callbacks), log_every=settings.log_every))
    if echo:
        echo(settings.describe())
    return settings


def resolve_image_size(spec, image_size, data_size, echo=None):
    """The square input size to train `spec` at: `image_size` if given (a
    FitConfig checked it against the family's smallest), else
    config.image_size's default, said in one line when a missing GPU makes
    it the family's smallest size."""
    if image_size is not None:
        return int(image_size)
    accelerator = spec.default_size is not None and accelerator_available()
    size = default_image_size(spec, data_size, accelerator)
    if echo and spec.default_size is not None and not accelerator:
        echo(f"image size {size}: no GPU visible, so {spec.name} trains at the smallest size it takes, "
             f"not its textbook {spec.default_size} ({spell_set('image_size', spec.default_size)} to insist)")
    return size


def resolve_jit(jit):
    """XLA for `model.compile(jit_compile=...)`. "auto" compiles on GPUs and
    TPUs and always under JAX (whose training step is jax.jit-ed), and not
    on a CPU with TensorFlow or torch: see benchmarks/jit.py for the CPU
    measurement behind that choice."""
    import keras

    if jit != "auto":
        return jit == "on"
    backend = keras.backend.backend()
    if backend == "jax":
        return True
    return backend == "tensorflow" and accelerator_available()


DEVICE_SHARE = 4  # the training set goes on the device when it takes at most 1/DEVICE_SHARE of its free memory

def resolve_data_on_device(choice, nbytes, backend, distribute=None, accelerator=False, echo=None):
    """"on" or "off": whether the training set (`nbytes` of uint8) lives on
    the accelerator, gathered by index inside the step (training.trainer.TrainingModel).
    "auto" is on under jax and torch with an accelerator whose free memory
    (free_device_memory) holds it DEVICE_SHARE times; always off on
    tensorflow (tf.data) and under --distribute (its batches are split on
    the host), where "on" is an error. Said in a line on jax and torch."""
    if choice == "on" and backend == "tensorflow":
        raise OptionError(f"{spell_set('data_on_device', 'on')} needs the jax or torch backend: tensorflow feeds its "
                          f"training set through tf.data; leave {spell('data_on_device')} at auto")
    if choice == "on" and distribute:
        raise OptionError(f"{spell_set('data_on_device', 'on')} does not combine with {spell('distribute')}, whose "
                          f"batches are split over the devices on the host; leave {spell('data_on_device')} at auto")
    if backend == "tensorflow" or distribute:
        return "off"
    size = f"{nbytes / 2**20:.1f} MiB of uint8"
    why = spell_set("data_on_device", choice)
    if choice == "auto":
        free = free_device_memory() if accelerator else None
        choice = "on" if free is not None and nbytes * DEVICE_SHARE <= free else "off"
        why = ("no GPU visible" if not accelerator else "its free memory unknown" if free is None
               else f"{free / 2**20:.0f} MiB free" if choice == "on"
               else f"more than 1/{DEVICE_SHARE} of its {free / 2**20:.0f} MiB free")
    if echo:
        echo(f"training set ({size}): " + ("on the device, gathered by index in the step" if choice == "on"
                                            else "on the host, copied batch by batch") + f" ({why})")
    return choice


def free_device_memory():
    """Bytes free on the accelerator Keras' jax or torch backend trains on,
    None where it does not say."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        stats = jax.devices()[0].memory_stats() or {}
        return stats["bytes_limit"] - stats.get("bytes_in_use", 0) if "bytes_limit" in stats else None
    if backend == "torch":
        import torch

        return torch.cuda.mem_get_info()[0] if torch.cuda.is_available() else None
    return None


MAX_STEPS_PER_EXECUTION = 16

def resolve_steps_per_execution(requested, steps, backend, distribute=None, batch_hooks=False, log_every=0):
    """Training steps per call into the backend's compiled function. Keras
    runs a call's steps back to back and calls the batch callbacks after
    it; fit's pipeline is one stream over the epochs, so a call must not
    run past an epoch's end: the value divides the `steps` of an epoch,
    and with `log_every` (steplog.StepLog, a row every N steps) N too.
    None (auto) is the largest such divisor up to MAX_STEPS_PER_EXECUTION
    on tensorflow (a call's steps in one tf.while_loop) and on jax (Keras
    calls the jitted step that many times, then the callbacks once), both
    giving the same weights as one step a call (tests/test_fit.py); 1 on
    torch (Keras refuses more), under --distribute, and with `batch_hooks`
    (a callback acting on every batch: plateau's warm-up, a user's
    callback). Values other than 1 are refused where auto gives 1 for the
    backend or strategy."""
    period = math.gcd(steps, log_every)  # gcd(steps, 0) is steps
    if requested is None:
        if backend == "torch" or distribute or batch_hooks:
            return 1
        return divisors(period, MAX_STEPS_PER_EXECUTION)[-1]
    if requested > 1 and backend == "torch":
        raise OptionError(f"{spell('steps_per_execution')} must be 1 on the torch backend (Keras runs one step a call "
                          f"there), got {requested}")
    if requested > 1 and distribute:
        raise OptionError(f"{spell('steps_per_execution')} must be 1 with {spell('distribute')}, got {requested}")
    if steps % requested:
        several = divisors(steps, 64)[1:7]
        raise OptionError(f"{spell('steps_per_execution')} {requested} does not divide the {steps} steps of an epoch, "
                          f"so a call would run past the epoch's end; choose "
                          + (f"one of {', '.join(map(str, several))}" if several else "1")
                          + f", or another {spell('batch_size')}")
    if log_every % requested:
        raise OptionError(f"{spell('steps_per_execution')} {requested} does not divide {spell('log_every')} "
                          f"{log_every}: Keras reports once a call, so a row every {log_every} steps needs calls of "
                          f"one of {', '.join(map(str, divisors(period, 64)))} steps")
    return requested


def divisors(n, up_to):
    """The divisors of `n` from 1 to `up_to`, ascending."""
    return [k for k in range(1, min(up_to, n) + 1) if n % k == 0]


def has_batch_hooks(callbacks):
    """Whether any of `callbacks` acts on single batches of training."""
    import keras

    base = keras.callbacks.Callback
    return any(getattr(type(c), hook) is not getattr(base, hook) for c in callbacks
               for hook in ("on_train_batch_begin", "on_train_batch_end"))


def build_or_resume(plan, folder=None):
    """The model to train: loaded from the checkpoint a resumed run continues
    (with its optimizer state and random generators; a per-epoch schedule
    made again over the epochs as now given, which also resumes a
    checkpoint saved when callbacks set those rates), else built and
    compiled afresh with `run_optimizer`. On jax and torch a
    `trainer.TrainingModel` around it, sharing its optimizer, is what trains
    (the loader's `transform` in front; holding the training set on the
    device with `data_on_device`); `trainer.network` gives the network back.
    Call it inside the distribution scope: the optimizer's variables must be
    created there."""
    from kerascnn.models import build_model
    from kerascnn.models.common import apply_l2
    from kerascnn.optim.schedules import learning_rate
    from kerascnn.training import callbacks as cb

    settings = plan.settings
    if folder is not None and folder.state is not None:
        model = storage.load_model(folder.resume_from)
        if model.optimizer is None:
            raise KerasCNNError(f"{folder.resume_from} has no optimizer state to resume")
        cb.set_seed_generator_states(model, folder.state["seed_generators"])
        model.steps_per_execution = plan.steps_per_execution
        if settings.schedule not in ("plateau", *STEP_SCHEDULES):  # over the epochs as now given (more extend it)
            rate = learning_rate(settings, plan.steps_per_epoch)
            if not isinstance(rate, float):  # a plain rate is in the checkpoint already
                model.optimizer.learning_rate = rate
    else:
        model = build_model(settings.arch, input_shape=list(plan.input_shape), num_classes=plan.data.num_classes,
                            **settings.builder_options())
        apply_l2(model, settings.l2)
        compile_model(model, run_optimizer(settings, plan.steps_per_epoch), plan.jit_compile,
                      plan.steps_per_execution, plan.tricks)
    transform = input_transform(plan)
    if transform is None:
        return model
    from kerascnn.training.trainer import TrainingModel

    images = np.asarray(plan.data.x_train) if settings.data_on_device == "on" else None  # held on the device
    trainer = TrainingModel(model, transform, images)
    # one optimizer: saving `model` saves its state
    compile_model(trainer, model.optimizer, plan.jit_compile, plan.steps_per_execution, plan.tricks)
    return trainer


def run_optimizer(settings, steps_per_epoch=None):
    """The optimizer of a run, its learning rate the run's schedule over its
    epochs of `steps_per_epoch` steps (kerascnn.optim.schedules.learning_rate)."""
    from kerascnn.optim.schedules import learning_rate

    return make_optimizer(settings.optimizer, learning_rate(settings, steps_per_epoch), momentum=settings.momentum,
                          beta1=settings.beta1, beta2=settings.beta2, weight_decay=settings.weight_decay)


def compile_model(model, optimizer, jit_compile=None, steps_per_execution=1, tricks=None):
    """Compile for logits and integer labels, or one-hot or mixed ones when
    `tricks` (kerascnn.data.tricks.Tricks) need them; `jit_compile` None is
    resolve_jit("auto")."""
    import keras

    from kerascnn.data.tricks import loss_and_metric
    from kerascnn.config.tricks import Tricks

    if jit_compile is None:
        jit_compile = resolve_jit("auto")
    if jit_compile and keras.backend.backend() == "torch":
        static_shapes_for_torch_compile()
    # "mean_with_sample_weight": under data-parallel an evaluation's padding (weight 0) does not count
    reduction = "mean_with_sample_weight" if keras.distribution.distribution() is not None else "sum_over_batch_size"
    loss, accuracy = loss_and_metric(tricks or Tricks(), reduction)
    model.compile(
        optimizer=optimizer,
        loss=loss,
        metrics=[accuracy],
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution,
    )


def static_shapes_for_torch_compile():
    """Make torch.compile (Keras' `jit_compile=True` on torch) compile each
    batch shape it meets, as XLA does, instead of turning the batch size
    symbolic once a second shape appears: with a symbolic batch Inductor
    fails on ResNet-18 ("cannot determine truth value of Relational"; the
    class of pytorch/pytorch#164102), with one graph per shape it trains."""
    import torch._dynamo

    torch._dynamo.config.automatic_dynamic_shapes = False
