"""One run configuration: `FitConfig` holds every option of `fit` once, with
its default, its choices or range and its help text.

The command line's options, `<name>.run.json`, the resume check and the
Python API all come from the fields below, so adding an option is one edit.
A FitConfig checks itself when it is made, before Keras or TensorFlow is
imported, and names a bad option as the user typed it: the keyword in
Python, `--flag` on the command line.

A run's record (`<name>.run.json`, format 2) keeps the options as given
(`"given"`, None where a default was left to the family or the data) and,
at the top level, the options as resolved, beside the facts of the run
(normalization, class names, backend, test accuracy, ...). That is what
`kerascnn fit --config` and `FitConfig.from_file` replay.
"""

import dataclasses
import json
import os
from pathlib import Path

from kerascnn.config import choices, families
from kerascnn.errors import KerasCNNError
from kerascnn.config.tricks import Tricks
from kerascnn.config.readers import EXPECTS, READERS, range_text
from kerascnn.config.spelling import FIELD_FLAGS, OptionError, spell, spell_set

RUN_FORMAT = 2  # run.json layout; 1 = before FitConfig (flat, no "given")
# Model options that came with format 2, as every format-1 run had them (whatever today's family default).
FORMAT_1_MODEL = {"init": "glorot"}
# Options added since, as every run saved without them had them (a model option only where the family takes it).
ADDED = {"padding": "same", "resize": "resize", "log_every": 0, "label_smoothing": 0.0, "mixup": 0.0, "cutmix": 0.0,
         "randaugment": False, "randaugment_strength": Tricks.randaugment_strength, "data_on_device": "off",
         "test_size": choices.TEST_SIZE, "color_mode": "auto", "normalize": "dataset"}

MODEL_OPTIONS = ("activation", "pool", "kernel", "padding", "channels", "batchnorm", "init", "width", "dense_units",
                 "dropout", "depth_multiplier")

def _option(default, help, *, kind, group, match=False, replay=True, **meta):
    """A FitConfig field. `kind` says how values are read (see `_coerce`);
    `match`: a resumed run must agree on it (every model option must);
    `replay`: `--config` takes it from a file (not --resume or --overwrite,
    which are acts, not settings)."""
    return dataclasses.field(default=default, metadata=dict(help=help, kind=kind, group=group, replay=replay,
                                                            match=match or group == "model", **meta))


_OPTIMIZER_LR = ", ".join(f"{name} {lr:g}" for name, lr in choices.DEFAULT_LR.items())


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """Everything `fit` needs to know to train and save one run.

    None means "the default of the family or the data"; `resolve` fills
    those in once the data and the device are known.
    """

    # the model
    arch: str = _option("lenet", "Architecture.", kind="choice", group="model", match=True,
                        choices=families.ARCH_NAMES, noun="architecture")
    activation: str = _option(None, "Hidden activation: sigmoid, tanh, relu, gelu, ... "
                              f"[{families.family_defaults('activation')}]", kind="str", group="model")
    pool: str = _option(None, f"Pooling [{families.family_defaults('pool')}].", kind="choice", group="model",
                        choices=choices.POOLS, noun="pooling")
    kernel: int = _option(None, f"Conv kernel size, odd [{families.family_defaults('kernel')}].", kind="int",
                          group="model", low=1)
    padding: str = _option(None, "The first convolution's padding: same keeps the size, valid shrinks it by "
                           "kernel - 1 (LeNet-5 on 32x32: 28x28x6 after conv1) "
                           f"[{families.family_defaults('padding')}].", kind="choice", group="model",
                           choices=choices.PADDINGS, noun="padding")
    channels: tuple = _option(None, f"The two conv widths, e.g. 16,32 [{families.family_defaults('channels')}].",
                              kind="ints", group="model", low=1, count=2)
    batchnorm: bool = _option(None, f"Batch normalization [{families.family_defaults('batchnorm')}].",
                              kind="bool", group="model", flags=("--batchnorm/--no-batchnorm",))
    init: str = _option(None, "Conv kernel initializer: glorot (Keras' default) or he (He normal, fan-out, as "
                        f"torchvision) [{families.family_defaults('init')}].", kind="choice", group="model",
                        choices=choices.INITS, noun="initializer")
    width: float = _option(None, f"Channel width multiplier [{families.family_defaults('width')}].",
                           kind="float", group="model", low=0, open_low=True)
    dense_units: tuple = _option(None, f"Dense layer widths [{families.family_defaults('dense_units')}].",
                                 kind="ints", group="model", low=1)
    dropout: float = _option(None, f"Dropout rate [{families.family_defaults('dropout')}].", kind="float",
                             group="model", low=0, high=1, open_high=True)
    depth_multiplier: int = _option(None, f"Depthwise multiplier [{families.family_defaults('depth_multiplier')}].",
                                    kind="int", group="model", low=1)
    # the data
    dataset: str = _option("fashion_mnist", "Dataset: a name, a folder of images, one subfolder per class, or "
                           "tfds:NAME[/CONFIG], a TensorFlow Datasets image dataset (docs/your-data.md).",
                           kind="choice", group="data", match=True, choices=choices.DATASETS,
                           folders=True)
    data_dir: str = _option(None, "Folder with <dataset>/ files [env KERASCNN_DATA_DIR].", kind="path",
                            group="data")
    val_size: float = _option(0.1, "Validation images held out of training: a fraction or a count.",
                              kind="size", group="data", match=True)
    test_size: float = _option(choices.TEST_SIZE, "Test images held out of a folder --dataset without train/ and "
                               "test/: a fraction or a count, stratified by class, the same whatever --seed.",
                               kind="size", group="data", match=True)
    train_size: float = _option(None, "Train on a random subset: a fraction or a count.", kind="size",
                                group="data", match=True)
    image_size: int = _option(None, "Train at this size [lenet: the data's; others: textbook size with a GPU, "
                              "smallest without].", kind="int", group="data", low=1, match=True)
    resize: str = _option("resize", "How images reach --image-size: resize them, or pad them (centred on a "
                          "border of black, pixel 0, before normalization; needs --image-size at least the data's).",
                          kind="choice", group="data", match=True, choices=choices.RESIZE_MODES,
                          noun="resize mode")
    normalize: str = _option("dataset", "Input normalization: the training images' per-channel mean and std, or "
                             "half (mean 0.5, std 0.5: pixels to [-1, 1], as PyTorch's tutorials normalize).",
                             kind="choice", group="data", match=True, choices=choices.NORMALIZATIONS,
                             noun="normalization")
    color_mode: str = _option("auto", "The channels the model takes: the data's (auto: a folder is RGB when any "
                              "image is colour), or grayscale or rgb, converted on the way in.", kind="choice",
                              group="data", match=True, choices=choices.COLOR_MODES, noun="color mode")
    augment: tuple = _option((), "Training-batch augmentation (repeat or comma-separate).", kind="names",
                             group="data", match=True, choices=tuple(choices.TRANSFORMS), noun="augmentation",
                             metavar=",".join(choices.TRANSFORMS))
    randaugment: bool = _option(False, "Keras' RandAugment on the training images: 2 of its 11 operations a batch "
                                "(shear, rotation, contrast, ...), each image at its own random strength, up to "
                                "--randaugment-strength.", kind="flag", group="data", match=True)
    randaugment_strength: float = _option(
        Tricks.randaugment_strength, "RandAugment's strength, Keras' factor: each operation's range from 0, e.g. "
        "rotations of 0 to 360 degrees x STRENGTH, shifts of 0 to STRENGTH of the size (one way) [Keras' 0.5].",
        kind="float", group="data", low=0, high=1, open_low=True, match=True, metavar="STRENGTH")
    mixup: float = _option(0.0, "Mixup: each training image blended with another of its batch, and their labels, "
                           "the share drawn from Beta(ALPHA, ALPHA), e.g. 0.2; 0: off.", kind="float", group="data",
                           low=0, match=True, metavar="ALPHA")
    cutmix: float = _option(0.0, "Cutmix: a box of another image of the batch pasted in, the labels mixed by area, "
                            "the area drawn from Beta(ALPHA, ALPHA), e.g. 1.0; 0: off. With --mixup too, each batch "
                            "takes one of the two.", kind="float", group="data", low=0, match=True, metavar="ALPHA")
    label_smoothing: float = _option(0.0, "Label smoothing of the cross-entropy's targets, e.g. 0.1; 0: off.",
                                     kind="float", group="training", low=0, high=1, open_high=True, match=True)
    sampling: str = _option("shuffle", "Order of training samples per epoch; bootstrap draws with replacement.",
                            kind="choice", group="data", match=True, choices=choices.SAMPLINGS)
    seed: int = _option(0, "Seed of the split, the initial weights, the order and the augmentation.", kind="int",
                        group="data", match=True)
    # the optimization
    epochs: int = _option(10, "Epochs to train.", kind="int", group="training", low=1)
    batch_size: int = _option(None, f"Batch size [{families.family_defaults(None, 'batch_size')}].", kind="int",
                              group="training", low=1, match=True, flags=("-b", "--batch-size"))
    optimizer: str = _option(None, f"Optimizer [{families.family_defaults(None, 'optimizer')}].", kind="choice",
                             group="training",
                             match=True, choices=choices.OPTIMIZERS, flags=("--optimizer", "--opt"))
    lr: float = _option(None, f"Learning rate [{families.family_defaults(None, 'lr')}; with another "
                        f"--optimizer: {_OPTIMIZER_LR}].",
                        kind="float", group="training", low=0, open_low=True, match=True)
    momentum: float = _option(0.9, "Momentum, for momentum and nesterov.", kind="float", group="training", low=0,
                              high=1, open_high=True, match=True)
    beta1: float = _option(0.9, "Adam's beta_1.", kind="float", group="training", low=0, high=1, open_high=True,
                           match=True)
    beta2: float = _option(0.999, "Adam's beta_2.", kind="float", group="training", low=0, high=1, open_high=True,
                           match=True)
    weight_decay: float = _option(None, "Decoupled weight decay [adamw: 0.004, others: none].", kind="float",
                                  group="training", low=0, match=True)
    warmup: float = _option(None, "Linear learning-rate warm-up over the first N epochs (fractions allowed) "
                            f"[{families.family_defaults(None, 'warmup')}].", kind="float", group="training", low=0,
                            match=True)
    l2: float = _option(None, "L2 penalty on conv and dense kernels, e.g. 5e-4.", kind="float", group="training",
                        low=0, match=True)
    schedule: str = _option("constant", "Learning-rate schedule. Per epoch: constant, step, exponential, cosine, "
                            "plateau. Per step: onecycle (Smith's one-cycle, as PyTorch's OneCycleLR: a cosine rise "
                            "from lr/25 to --lr over the first 25% of the steps, then a cosine fall to lr/250000).",
                            kind="choice", group="training", match=True, choices=choices.SCHEDULES)
    decay_rate: float = _option(None, "Factor per decay [step 0.7 (the MNIST report's text; its table's 0.8 is "
                                "scratch's and the lenet5-mnist preset's), exponential 0.9, plateau 0.5].",
                                kind="float", group="training", low=0, high=1, open_low=True, match=True)
    decay_after: int = _option(None, "step: decay every epoch after this one [10]; exponential/cosine: hold "
                               "until it [0]; plateau: epochs without improvement [2].", kind="int",
                               group="training", low=0, match=True)
    patience: int = _option(None, "Stop early after this many epochs without a better validation loss.",
                            kind="int", group="training", low=1)
    # the files
    output: str = _option("saved_models", "Folder for the run's files.", kind="path", group="files")
    name: str = _option(None, "File name of the run [the arch].", kind="str", group="files")
    save_every: int = _option(None, "Also keep <name>.epoch-NNN.keras every N epochs.", kind="int", group="files",
                              low=1)
    record_layers: tuple = _option((), "Record this layer's activations on a probe batch every epoch "
                                   "(repeatable).", kind="names", group="files", flags=("--record-layer",),
                                   metavar="LAYER")
    probe_size: int = _option(4, "Test images the recorded activations are taken on.", kind="int",
                              group="files", low=1)
    tensorboard: str = _option(None, "Also write TensorBoard logs to this folder.", kind="path", group="files")
    log_every: int = _option(0, "Every N training steps (counted over the run), the mean training loss and accuracy "
                             "of those steps into <name>.steps.csv, and, when the output is not a terminal, a "
                             "`loss: ... [seen/total]` line; 0: off.", kind="int", group="files", low=0, match=True)
    resume: bool = _option(False, "Continue the interrupted (or extend the finished) run from "
                           "<name>.last.keras.", kind="flag", group="files", replay=False)
    overwrite: bool = _option(False, "Start over even if an unfinished run of this name exists; let a --config "
                              "replay replace a finished one.", kind="flag",
                              group="files", replay=False)
    # the machine
    distribute: str = _option(None, "mirrored: tf.distribute over all GPUs (tensorflow); multi-worker: "
                              "tf.distribute.MultiWorkerMirroredStrategy over the machines TF_CONFIG names "
                              "(tensorflow; the chief writes the run); data-parallel: keras.distribution over all "
                              "devices (jax), of several processes when KERAS_DISTRIBUTION_* name them (process 0 "
                              "writes the run).", kind="choice", group="system",
                              choices=choices.DISTRIBUTE, noun="distribution")
    mixed_precision: bool = _option(False, "Mixed precision on a GPU: bfloat16 compute on Ampere and later, float16 "
                                    "with loss scaling before (run.json's dtype_policy says which; ignored, with "
                                    "a warning, on CPU).",
                                    kind="flag", group="system")
    jit: str = _option("auto", "XLA compilation [auto: on with a GPU or JAX, off on CPU].", kind="choice",
                       group="system", choices=choices.JIT_MODES, noun="jit mode")
    data_on_device: str = _option("auto", "Keep the uint8 training set on the accelerator and gather each batch by "
                                  "index inside the step (jax, torch; the same batches and results as off) [auto: on "
                                  "when a GPU is visible and the set takes at most a quarter of its free memory; off "
                                  "on tensorflow and with --distribute].", kind="choice", group="system",
                                  choices=choices.DATA_ON_DEVICE, noun="data placement")
    steps_per_execution: int = _option(None, "Training steps per call into the compiled function (the batch "
                                       "callbacks run after each call; results are the same); tensorflow and jax [auto: the "
                                       "largest divisor of an epoch's steps up to 16; torch and --distribute: 1].",
                                       kind="int", group="system", low=1, auto=True, metavar="N|auto")

    def __post_init__(self):
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _coerce(f, getattr(self, f.name)))
        _check_together(self)

    @property
    def family(self):
        return families.FAMILIES[self.arch]

    def replace(self, **changes):
        """A copy with `changes`, checked like any FitConfig."""
        unknown = sorted(set(changes) - set(FIELDS))
        if unknown:
            raise OptionError(f"unknown option{'s' * (len(unknown) > 1)} {', '.join(map(repr, unknown))}; "
                              f"the options are: {', '.join(FIELDS)}")
        return dataclasses.replace(self, **changes)

    def describe(self):
        """One line: what trains on what, and how (of a resolved configuration)."""
        size = f"{self.image_size}x{self.image_size}" if self.image_size else "its default size"
        size += " (padded)" if self.resize == "pad" else ""
        return (f"{self.arch} on {self.dataset} at {size}: {self.recipe()}, "
                f"{self.epochs} epoch{'s' * (self.epochs != 1)}, seed {self.seed}")

    def recipe(self):
        """How it trains: "adamw lr 0.001, weight decay 0.004, batch 64" and
        the schedule, initializer, warm-up and batch norm where they are not the plain ones."""
        parts = [f"{self.optimizer} lr {self.lr:g}" + (f" ({self.schedule} schedule)" if self.schedule not in
                                                        (None, "constant") else "")]
        parts += [f"weight decay {self.weight_decay:g}"] if self.weight_decay else []
        parts += [f"warm-up {self.warmup:g} epochs"] if self.warmup else []
        parts += [f"batch {self.batch_size}"]
        parts += [f"init {self.init}"] if self.init not in (None, "glorot") else []
        parts += ["batch norm"] if self.batchnorm else []
        tricks = Tricks.of(self).describe()
        parts += [tricks] if tricks else []
        return ", ".join(parts)

    def to_dict(self):
        """Every option, JSON-ready (tuples as lists)."""
        return {f: _jsonable(getattr(self, f)) for f in FIELDS}

    def model_options(self):
        """The model options given (None left out), as run.json has always kept them."""
        return {k: _jsonable(getattr(self, k)) for k in MODEL_OPTIONS if getattr(self, k) is not None}

    def builder_options(self):
        """Keyword arguments for the family's builder: the options given."""
        options = {k: getattr(self, k) for k in MODEL_OPTIONS if getattr(self, k) is not None}
        if "dense_units" in options and self.arch != "lenet":
            options["dense_units"] = options["dense_units"][0]
        return options

    @classmethod
    def from_dict(cls, mapping, source="the configuration"):
        """A FitConfig from option names (keywords or --flags) and values."""
        options = {}
        for key, value in mapping.items():
            name = option_name(key, source)
            if FIELDS[name].metadata["replay"]:
                options[name] = value
        return cls(**options)

    @classmethod
    def from_file(cls, path):
        """Read a configuration: a run's `<name>.run.json` (the options it was
        given), or a TOML, YAML or JSON file of options."""
        return cls.from_dict(read_options(path), source=str(path))


FIELDS = {f.name: f for f in dataclasses.fields(FitConfig)}
FIELD_FLAGS.update({name: f.metadata["flags"] for name, f in FIELDS.items() if f.metadata.get("flags")})


def option_name(key, source="the configuration"):
    """The field an option is written as in a file or mapping (a keyword,
    or a --flag), or an OptionError naming `source`."""
    name = str(key).lstrip("-").replace("-", "_")
    name = {"record_layer": "record_layers", "opt": "optimizer"}.get(name, name)
    if name not in FIELDS:
        raise OptionError(f"{source}: unknown option {key!r}; the options are: {', '.join(FIELDS)}")
    return name


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value


def _fail(name, message):
    raise OptionError(message.replace("{option}", spell(name)))  # not format: values may hold braces


def coerce_option(name, value):
    """One option's value read and checked as FitConfig reads it."""
    return _coerce(FIELDS[name], value)


def _coerce(field, value):
    """The value in the field's type, or an OptionError naming the option."""
    meta, name, kind = field.metadata, field.name, field.metadata["kind"]
    if meta.get("folders") and isinstance(value, os.PathLike):
        value = os.fspath(value)
    if value is None or meta.get("auto") and isinstance(value, str) and value.strip().lower() == "auto":
        return () if kind == "names" else None
    try:
        value = READERS[kind](value)
    except (TypeError, ValueError):
        _fail(name, f"{{option}} expects {EXPECTS[kind]}{' or auto' * bool(meta.get('auto'))}, got {value!r}")
    noun = meta.get("noun", name)
    if kind == "choice" and value not in meta["choices"] and not (meta.get("folders") and choices.is_decoded(value)):
        also = ", a folder of images (a path), or tfds:NAME" if meta.get("folders") else ""
        _fail(name, f"{{option}}: unknown {noun} {value!r}; choose one of: {', '.join(meta['choices'])}{also}")
    if kind == "names" and meta.get("choices"):
        value = tuple(v for v in dict.fromkeys(value) if v != "none")
        unknown = [v for v in value if v not in meta["choices"]]
        if unknown:
            _fail(name, f"{{option}}: unknown {noun} {', '.join(map(repr, unknown))}; choose from: "
                        f"{', '.join(meta['choices'])}")
    if kind == "ints" and meta.get("count") and len(value) != meta["count"]:
        _fail(name, f"{{option}} expects {meta['count']} values such as 16,32, got {_jsonable(value)}")
    for v in value if kind == "ints" else (value,):
        _check_range(name, meta, v)
    return value


def _check_range(name, meta, value):
    low, high = meta.get("low"), meta.get("high")
    if low is None and high is None or not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    too_low = low is not None and (value <= low if meta.get("open_low") else value < low)
    too_high = high is not None and (value >= high if meta.get("open_high") else value > high)
    if too_low or too_high:
        _fail(name, f"{{option}} must be {range_text(meta)}, got {value}")


def _check_together(config):
    """The checks that involve more than one option or the family's data."""
    family = config.family
    taken = [k for k in MODEL_OPTIONS if getattr(config, k) is not None and not family.takes(k)]
    if taken:
        _fail(taken[0], f"{config.arch} does not take {', '.join(spell(k) for k in taken)}; its options are: "
                        f"{', '.join(spell(k) for k in MODEL_OPTIONS if family.takes(k))}")
    if config.kernel is not None and families.kernel_problem(config.kernel):
        _fail("kernel", f"{{option}} {families.kernel_problem(config.kernel)}, got {config.kernel}")
    if config.dense_units is not None:
        count = len(family.options["dense_units"]) if isinstance(family.options["dense_units"], tuple) else 1
        if len(config.dense_units) != count:
            _fail("dense_units", f"{{option}}: {config.arch} has {count} dense layer{'s' * (count > 1)}, "
                                 f"got {len(config.dense_units)} widths")
    if config.image_size is not None and config.image_size < family.min_size:
        _fail("image_size", f"{config.arch} needs images of at least {family.min_size}x{family.min_size}; "
                            f"{{option}} {config.image_size} is too small")
    name = config.name
    if name is not None and (not name or "/" in name or "\\" in name or name.startswith(".")):
        _fail("name", f"{{option}} must be a plain file name, got {name!r}")
    if config.randaugment_strength not in (None, FIELDS["randaugment_strength"].default) and not config.randaugment:
        _fail("randaugment_strength", f"{{option}} sets the strength of {spell('randaugment')}; give that too")
    if config.resume and config.overwrite:
        _fail("resume", f"{{option}} and {spell('overwrite')} contradict each other; give one")
    if config.schedule in choices.STEP_SCHEDULES:
        given = [k for k in ("decay_rate", "decay_after") if getattr(config, k) is not None]
        if given:
            _fail(given[0], f"{{option}} does not apply to {spell_set('schedule', config.schedule)}, which sets "
                            f"the rate of every step from {spell('lr')} (its peak) and {spell('epochs')}; leave "
                            f"{{option}} out")


# ----------------------------------------------------------------------------- the record: run.json


def upgrade(saved):
    """A run record in the current format. Format 1 (before FitConfig) kept
    the options flat, the learning rate, optimizer and batch size resolved
    and the weight decay as given: its options become both the given and
    the resolved ones. Options added since (ADDED) get the value its run had."""
    version = saved.get("format", 1)
    if version > RUN_FORMAT:
        raise KerasCNNError(f"this run was saved by a newer kerascnn (run format {version}; this one reads up to "
                            f"{RUN_FORMAT}): upgrade kerascnn to use it")
    if version == RUN_FORMAT:
        return with_added(saved)
    options = {k: saved[k] for k in FIELDS if k in saved and FIELDS[k].metadata["replay"]}
    options.update(saved.get("model_options") or {})
    if "input_shape" in saved:
        options["image_size"] = saved["input_shape"][0]
    upgraded = {**saved, "format": RUN_FORMAT, "given": options, "image_size": options.get("image_size")}
    family = families.FAMILIES.get(saved.get("arch"))
    for k in MODEL_OPTIONS:
        default = FORMAT_1_MODEL.get(k, ADDED.get(k, family.options.get(k))) if family and family.takes(k) else None
        upgraded[k] = _jsonable((saved.get("model_options") or {}).get(k, default))
    if saved.get("weight_decay") is None:
        upgraded["weight_decay"] = (saved.get("optimizer_config") or {}).get("weight_decay")
    return with_added(upgraded)


def with_added(saved):
    """A record with the options added since it was written (ADDED), at the
    value its run had; a model option only where its family takes it."""
    family = families.FAMILIES.get(saved.get("arch"))
    missing = {k: v for k, v in ADDED.items()
               if k not in saved and (k not in MODEL_OPTIONS or family is not None and family.takes(k))}
    return {**saved, **missing} if missing else saved


def read_options(path):
    """The options in a configuration file: a run.json's given options, or a
    TOML, YAML or JSON mapping of options."""
    path = Path(path)
    if not path.is_file():
        raise OptionError(f"{spell('config')}: no configuration file at {path}")
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
        if suffix == ".toml":
            options = _toml().loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            options = yaml.safe_load(text)
        elif suffix == ".json":
            options = json.loads(text)
        else:
            raise OptionError(f"{path}: a configuration is a .json (a run's run.json), .toml or .yaml file")
    except (OSError, UnicodeDecodeError, ValueError) as e:  # the parsers' errors are ValueErrors
        raise OptionError(f"cannot read the configuration {path}: {str(e).splitlines()[0]}") from None
    except Exception as e:  # noqa: BLE001 - yaml.YAMLError
        raise OptionError(f"cannot read the configuration {path}: {str(e).splitlines()[0]}") from None
    if isinstance(options, dict) and ("test_accuracy" in options or "given" in options):  # a run's record
        options = replayed(options)
    if not isinstance(options, dict):
        raise OptionError(f"{path} holds no mapping of options")
    return options


def replayed(saved):
    """The options a run's record replays: those it was given, its folder of
    images by the absolute path it trained on (found from anywhere)."""
    saved = upgrade(saved)
    given = saved.get("given")
    if str(saved.get("data_source")).startswith("folder:") and isinstance(given, dict):
        given = {**given, "dataset": saved["dataset"]}
    return given


def _toml():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    return tomllib
