"""The `kerascnn` command line: options in, library calls out.

Every command is a thin wrapper over a function a notebook can call too
(kerascnn.train.fit, kerascnn.evaluate.evaluate, kerascnn.visualize.visualize,
kerascnn.summary). TensorFlow and Keras are imported inside the commands so
that `kerascnn --help` answers at once.
"""

import os
import sys

import click

from kerascnn.backend import use_compilation_cache
from kerascnn.errors import KerasCNNError

# Quiet TensorFlow's C++ start-up chatter unless the user asked for it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Under JAX, keep compiled programs between commands (see kerascnn.backend).
use_compilation_cache()

DATASETS = ("mnist", "fashion_mnist", "cifar10", "digits")


def _channels(ctx, param, value):
    if value is None:
        return None
    try:
        widths = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected two widths such as 16,32, got {value!r}") from None
    if len(widths) != 2 or min(widths) < 1:
        raise click.BadParameter(f"expected two positive widths such as 16,32, got {value!r}")
    return widths


def _size(ctx, param, value):
    """A fraction below 1 or a whole count."""
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        raise click.BadParameter(f"expected a fraction such as 0.1 or a count such as 5000, got {value!r}") from None
    if number < 0 or (number >= 1 and number != int(number)):
        raise click.BadParameter(f"expected a fraction below 1 or a whole count, got {value!r}")
    return number if number < 1 else int(number)


def model_options(f):
    """The knobs shared with build_lenet; None leaves the builder's default."""
    options = [
        click.option("--activation", help="Hidden activation: sigmoid, tanh, relu, ... "
                                          "[lenet: sigmoid, mobilenet: relu6, others: relu]"),
        click.option("--pool", type=click.Choice(["avg", "max"]), help="Pooling [lenet: avg, others: max]."),
        click.option("--kernel", type=click.IntRange(min=1), help="LeNet's conv kernel size, odd [5]."),
        click.option("--channels", callback=_channels, help="LeNet's two conv widths, e.g. 16,32 [6,16]."),
        click.option("--width", type=float, help="Channel width multiplier (MobileNet's alpha) [1]."),
        click.option("--batchnorm/--no-batchnorm", default=None,
                     help="Batch normalization [on for resnet18 and mobilenet, off for the others]."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


BACKENDS = ("tensorflow", "jax", "torch")


def _set_backend(ctx, param, value):
    """Select the Keras backend before anything imports Keras."""
    if value is None:
        return None
    if "keras" in sys.modules:
        import keras

        if keras.backend.backend() != value:
            raise click.BadParameter(f"Keras is already running on {keras.backend.backend()} in this process; "
                                     f"set KERAS_BACKEND={value} before starting it")
        return value
    os.environ["KERAS_BACKEND"] = value
    return value


def backend_option(f):
    """--backend on every command (and on the group): KERAS_BACKEND for this run."""
    return click.option("--backend", type=click.Choice(BACKENDS), callback=_set_backend, expose_value=False,
                        is_eager=True, help="Keras backend [env KERAS_BACKEND, else tensorflow].")(f)


def _knobs(**kwargs):
    return {k: v for k, v in kwargs.items() if v is not None}


class Group(click.Group):
    """Turns every user mistake, a bad option or a KerasCNNError, into one
    line on stderr and a non-zero exit: 1 for errors, 2 for bad usage."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KerasCNNError as e:
            raise click.ClickException(str(e)) from None

    def main(self, args=None, prog_name=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, standalone_mode=False, **extra)
        except click.ClickException as e:
            click.echo(f"error: {e.format_message()}", err=True)
            sys.exit(e.exit_code)
        except click.exceptions.Abort:
            click.echo("error: interrupted; nothing was saved", err=True)
            sys.exit(130)
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="kerascnn")
@backend_option
def cli():
    """Train, evaluate and look inside the classic CNNs (LeNet ... MobileNet)
    on MNIST, Fashion-MNIST, CIFAR-10 and scikit-learn's digits."""


@cli.command()
@backend_option
@click.option("--arch", default="lenet", show_default=True, help="Architecture (see `kerascnn summary`).")
@model_options
@click.option("--dataset", type=click.Choice(DATASETS), default="fashion_mnist", show_default=True)
@click.option("--data-dir", type=click.Path(), help="Folder with <dataset>/ files [env KERASCNN_DATA_DIR].")
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("-b", "--batch-size", type=click.IntRange(min=1), help="[the family's: lenet 256, nin/googlenet/mobilenet 32, others 64]")
@click.option("--optimizer", "--opt", "optimizer",
              help="sgd, momentum, nesterov, adagrad, rmsprop, adam or adamw [the family's: adamw].")
@click.option("--lr", type=float, help="Learning rate [the family's with its optimizer, else 1e-3 for "
                                       "adam/adamw/rmsprop, 0.1 sgd, 0.05 others].")
@click.option("--momentum", type=float, default=0.9, show_default=True, help="For momentum and nesterov.")
@click.option("--beta1", type=float, default=0.9, show_default=True)
@click.option("--beta2", type=float, default=0.999, show_default=True)
@click.option("--weight-decay", type=float, help="Decoupled weight decay [adamw: 0.004, others: none].")
@click.option("--val-size", callback=_size, default="0.1", show_default=True,
              help="Validation images held out of training: a fraction or a count.")
@click.option("--train-size", callback=_size, help="Train on a random subset: a fraction or a count.")
@click.option("--image-size", type=click.IntRange(min=1),
              help="Train at this size [lenet: the data's; others: textbook size with a GPU, smallest without].")
@click.option("--l2", type=click.FloatRange(min=0), help="L2 penalty on conv and dense kernels, e.g. 5e-4.")
@click.option("--schedule", type=click.Choice(["constant", "step", "exponential", "cosine", "plateau"]),
              default="constant", show_default=True, help="Learning-rate schedule, applied per epoch.")
@click.option("--decay-rate", type=float,
              help="Factor per decay [step 0.7, exponential 0.9, plateau 0.5].")
@click.option("--decay-after", type=click.IntRange(min=0),
              help="step: decay every epoch after this one [10]; exponential/cosine: hold until it [0]; "
                   "plateau: epochs without improvement [2].")
@click.option("--augment", multiple=True, metavar="crop,flip,rotate,translate",
              help="Training-batch augmentation (repeat or comma-separate).")
@click.option("--sampling", type=click.Choice(["shuffle", "sequential", "bootstrap"]), default="shuffle",
              show_default=True, help="Order of training samples per epoch; bootstrap draws with replacement.")
@click.option("--patience", type=click.IntRange(min=1), help="Stop early after this many epochs without a "
                                                            "better validation loss.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--output", type=click.Path(), default="saved_models", show_default=True, help="Folder for the run's files.")
@click.option("--name", help="File name of the run [the arch].")
@click.option("--save-every", type=click.IntRange(min=1), help="Also keep <name>.epoch-NNN.keras every N epochs.")
@click.option("--resume", is_flag=True, help="Continue the interrupted run from <name>.last.keras.")
@click.option("--overwrite", is_flag=True, help="Start over even if an unfinished run of this name exists.")
@click.option("--record-layer", "record_layers", multiple=True,
              help="Record this layer's activations on a probe batch every epoch (repeatable).")
@click.option("--tensorboard", type=click.Path(), help="Also write TensorBoard logs to this folder.")
@click.option("--distribute", type=click.Choice(["mirrored", "data-parallel"]),
              help="mirrored: tf.distribute over all GPUs (tensorflow); data-parallel: keras.distribution (jax).")
@click.option("--mixed-precision", is_flag=True, help="float16 compute on a GPU (ignored, with a warning, on CPU).")
@click.option("--jit", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
              help="XLA compilation [auto: on with a GPU or JAX, off on CPU].")
def fit(arch, activation, pool, kernel, channels, width, batchnorm, **kwargs):
    """Train a model and save it with its history and run configuration."""
    import keras

    from kerascnn.train import fit as fit_model

    click.echo(f"backend: {keras.backend.backend()} (Keras {keras.__version__})")

    result = fit_model(arch, **kwargs, **_knobs(activation=activation, pool=pool, kernel=kernel,
                                                channels=channels, width=width, batchnorm=batchnorm))
    for path in result.paths:
        click.echo(f"wrote {path}")


@cli.command()
@backend_option
@click.argument("model", type=click.Path())
@click.option("--dataset", type=click.Choice(DATASETS), help="[the dataset the model was trained on]")
@click.option("--data-dir", type=click.Path(), help="Folder with <dataset>/ files [env KERASCNN_DATA_DIR].")
@click.option("-b", "--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--output", type=click.Path(), help="Folder for the PNG and JSON [the model's folder].")
def evaluate(model, dataset, data_dir, batch_size, output):
    """Test loss and accuracy, per-class report, most-confused classes and
    the confusion matrix of a saved model."""
    from kerascnn.evaluate import evaluate as evaluate_model

    r = evaluate_model(model, dataset, data_dir=data_dir, batch_size=batch_size, output=output)
    click.echo(f"test loss: {r.loss:.4f}  test accuracy: {r.accuracy:.4f} ({int(r.confusion.sum())} images)")
    click.echo(r.report)
    click.echo("most confused pairs:")
    for a, b, n, ab, ba in r.confused_pairs:
        click.echo(f"  {a} and {b}: {n} cases ({a} as {b}: {ab}, {b} as {a}: {ba})")
    for path in r.paths:
        click.echo(f"wrote {path}")


@cli.command()
@backend_option
@click.option("--layer", default="conv1", show_default=True, help="Any layer with spatial output.")
@click.option("--model", "model_path", type=click.Path(), help="[the newest .keras in saved_models/]")
@click.option("--index", type=click.IntRange(min=0), default=0, show_default=True, help="Test image to run.")
@click.option("--dataset", type=click.Choice(DATASETS), help="[the dataset the model was trained on]")
@click.option("--data-dir", type=click.Path(), help="Folder with <dataset>/ files [env KERASCNN_DATA_DIR].")
@click.option("--output", type=click.Path(), help="Folder for the PNGs [the model's folder].")
@click.option("--epochs", "by_epoch", is_flag=True,
              help="How the maps and kernels evolved over training (needs fit --record-layer); "
                   "--index is then a probe image.")
def visualize(layer, model_path, index, dataset, data_dir, output, by_epoch):
    """Draw a layer's kernels and feature maps, and the training curves."""
    from kerascnn.visualize import visualize as visualize_model, visualize_epochs

    if by_epoch:
        r = visualize_epochs(model_path, layer, index=index, output=output)
    else:
        r = visualize_model(model_path, layer, index=index, dataset=dataset, data_dir=data_dir, output=output)
    click.echo(f"model: {r.model_path}  layer: {r.layer}")
    for path in r.paths:
        click.echo(f"wrote {path}")


@cli.command()
@backend_option
@click.argument("models", nargs=-1, required=True, type=click.Path())
@click.option("--output", type=click.Path(), default="comparison.png", show_default=True, help="The PNG to write.")
@click.option("--title", default="training curves compared", show_default=True)
def compare(models, output, title):
    """Overlay the training curves of saved runs in one PNG and print a
    Markdown table of their settings and accuracies."""
    from kerascnn.visualize import compare_runs

    table, path = compare_runs(models, output, title=title)

    def cell(v):
        if isinstance(v, float):
            return f"{v:.4f}" if v < 1 and v > 1e-3 else f"{v:g}"
        return "" if v is None else str(v)

    keys = list(table[0])
    click.echo("| " + " | ".join(keys) + " |")
    click.echo("|" + "|".join("---" for _ in keys) + "|")
    for row in table:
        click.echo("| " + " | ".join(cell(row[k]) for k in keys) + " |")
    click.echo(f"wrote {path}")


def _model_for_listing(arch, model_path, image_size, in_channels, classes, knobs):
    if model_path:
        from kerascnn.io import load_model

        return load_model(model_path)
    from kerascnn.models import build_model, get_arch

    spec = get_arch(arch)
    size = image_size or spec.default_size or 28
    return build_model(arch, input_shape=(size, size, in_channels), num_classes=classes, **knobs)


def listing_options(f):
    for option in reversed([
        click.option("--arch", default="lenet", show_default=True),
        click.option("--model", "model_path", type=click.Path(), help="A saved .keras model instead of --arch."),
        click.option("--image-size", type=click.IntRange(min=1), help="[the family's default size]"),
        click.option("--in-channels", type=click.Choice(["1", "3"]), default="1", show_default=True),
        click.option("--classes", type=click.IntRange(min=2), default=10, show_default=True),
    ]):
        f = option(f)
    return f


@cli.command()
@backend_option
@listing_options
@model_options
def summary(arch, model_path, image_size, in_channels, classes, **knobs):
    """The layer table and the parameters of the encoder and the head."""
    from kerascnn.summary import format_parameter_table, parameter_counts

    model = _model_for_listing(arch, model_path, image_size, int(in_channels), classes, _knobs(**knobs))
    model.summary(print_fn=lambda line, **_: click.echo(line))
    click.echo("Parameters by part (weights = kernels without biases; batchnorm = trainable gamma and beta;")
    click.echo("non_trainable = batch-norm moving statistics):")
    click.echo(format_parameter_table(parameter_counts(model)))


@cli.command()
@backend_option
@listing_options
@model_options
def layers(arch, model_path, image_size, in_channels, classes, **knobs):
    """Every layer name with its type, output shape and part; any layer with
    a 4-D output works with `visualize --layer`."""
    from kerascnn.summary import layer_table

    model = _model_for_listing(arch, model_path, image_size, int(in_channels), classes, _knobs(**knobs))
    rows = [("name", "type", "output shape", "params", "part")]
    rows += [(n, t, str(s), f"{p:,}", part) for n, t, s, p, part in layer_table(model)]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def main(argv=None):
    """The console script."""
    cli.main(args=argv, prog_name="kerascnn")
