"""The `kerascnn` command line: options in, library calls out.

Every command is a thin wrapper over a function a notebook can call too
(kerascnn.training.fit.fit, kerascnn.evaluate.evaluate, kerascnn.visualize.visualize,
kerascnn.models.summary). `fit`'s options are made from the fields of
kerascnn.config.options.FitConfig, which also checks them, before TensorFlow or Keras
is imported: those load inside the commands, so `kerascnn --help` and a
mistyped option answer at once.
"""

import os
from pathlib import Path

import click
from click.core import ParameterSource

from kerascnn import __version__
from kerascnn.runtime.backend import DEBUG_ENV, start_quietly, use_compilation_cache
from kerascnn.config.choices import EXPLAIN_METHODS, LR_FIND_RULES
from kerascnn.config.families import ARCH_NAMES
from kerascnn.cli.options import Group, backend_option, config_option, config_options, debug_callback, unsafe_option
from kerascnn.config.options import FIELDS, MODEL_OPTIONS, FitConfig
from kerascnn.studies.presets import PRESETS
from kerascnn.runs.saved import Run

# Quiet TensorFlow's C++ start-up chatter unless the user asked for it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Under JAX, keep compiled programs between commands (see kerascnn.runtime.backend).
use_compilation_cache()

HELP = f"""Train, evaluate and look inside the classic CNNs on MNIST, Fashion-MNIST,
CIFAR-10 and scikit-learn's digits.

Architectures (--arch): {", ".join(ARCH_NAMES)}. `kerascnn COMMAND --help`
tells more."""


@click.group(cls=Group, help=HELP, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
# The version from the source, not the installed metadata: `python cli.py --version` in a checkout is right too.
@click.version_option(__version__, prog_name="kerascnn")
@click.option("--debug", is_flag=True, is_eager=True, expose_value=False, callback=debug_callback,
              help=f"Show TensorFlow's start-up logs and the traceback of an error [env {DEBUG_ENV}=1].")
@backend_option
def cli():
    pass


@cli.command()
@backend_option
@click.option("--config", "config_file", type=click.Path(), metavar="FILE",
              help="Repeat a run from its <name>.run.json, or read options from a .toml/.yaml/.json file; "
                   "options typed here override it.")
@config_options(*FIELDS)
@click.pass_context
def fit(ctx, config_file, **options):
    """Train a model and save it with its history and run configuration."""
    from kerascnn.training.fit import fit as fit_run

    given = _given_config(ctx, config_file, options)
    start_quietly()
    result = fit_run(given)
    for path in result.paths:
        click.echo(f"wrote {path}")


def _given_config(ctx, config_file, options):
    """The run's configuration as given (training.plan.Given), made once for
    fit's library functions: the --config file with the options typed over
    it, else a FitConfig of the options; checked here, so that a mistake is
    said before TensorFlow starts."""
    from kerascnn.training.plan import make_config

    if config_file:
        typed = {k: v for k, v in options.items() if ctx.get_parameter_source(k) == ParameterSource.COMMANDLINE}
        config = (Path(config_file), typed)
    else:
        config = (FitConfig(**options), {})
    return make_config(config[0], None, config[1])


LR_FIND_OPTIONS = [n for n in FIELDS if n not in ("output", "resume", "overwrite")]


@cli.command("lr-find")
@backend_option
@click.option("--config", "config_file", type=click.Path(), metavar="FILE",
              help="Take the options of a run's <name>.run.json or of a .toml/.yaml/.json file; options typed here "
                   "override it.")
@click.option("--start-lr", type=float, default=1e-7, show_default=True, metavar="X", help="The sweep's first rate.")
@click.option("--end-lr", type=float, default=10.0, show_default=True, metavar="X",
              help="Its last: the rate grows exponentially from one to the other.")
@click.option("--steps", type=int, default=200, show_default=True, metavar="N",
              help="Training steps (batches) of the sweep, one rate each; it stops early once the smoothed loss "
                   "passes 4x its minimum.")
@click.option("--suggest", type=click.Choice(tuple(LR_FIND_RULES)), default="valley", show_default=True,
              help="valley: fastai's valley rule; steepest: where the smoothed loss falls fastest (it lags, as "
                   "the loss is smoothed, and suggests rates too high: docs/explain.md).")
@click.option("--output", type=click.Path(), metavar="PNG",
              help="The plot to write [saved_models/<name>.lr_find.png, beside the run fit would save].")
@config_options(*LR_FIND_OPTIONS)
@click.pass_context
def lr_find(ctx, config_file, start_lr, end_lr, steps, suggest, output, **options):
    """Find a learning rate: train from the initial weights of the model fit
    would train, one batch per rate while the rate grows exponentially,
    plot the loss against the rate and suggest one. Takes fit's options
    (the schedule and warm-up aside: the sweep sets the rate)."""
    from kerascnn.training.lr_finder import check_sweep, lr_find as find_lr

    check_sweep(start_lr, end_lr, steps, suggest, output)
    given = _given_config(ctx, config_file, options)
    start_quietly()
    click.echo(find_lr(given, start_lr=start_lr, end_lr=end_lr, steps=steps, suggest=suggest, output=output))


@cli.command()
@backend_option
@click.argument("model", type=click.Path())
@config_option("dataset", default=None, show_default=False, help="[the dataset the model was trained on]")
@config_option("data_dir")
@click.option("-b", "--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--output", type=click.Path(), help="Folder for the PNG and JSON [the model's folder].")
@click.option("--top-losses", type=click.IntRange(min=0), default=16, show_default=True, metavar="K",
              help="Draw the K test images of highest loss (<stem>.top_losses.png) and list them in the "
                   "metrics JSON; 0 for none.")
@unsafe_option
def evaluate(model, dataset, data_dir, batch_size, output, top_losses, unsafe):
    """Test loss and accuracy, per-class report, most-confused classes, the
    confusion matrix and the test images of highest loss of a saved model."""
    from kerascnn.analysis.evaluation import evaluate as evaluate_model

    run = Run.load(model, unsafe=unsafe)
    start_quietly()
    r = evaluate_model(run, dataset, data_dir=data_dir, batch_size=batch_size, output=output, top_losses=top_losses)
    click.echo(f"test loss: {r.loss:.4f}  test accuracy: {r.accuracy:.4f} ({int(r.confusion.sum())} images)")
    click.echo(r.report)
    click.echo("most confused pairs:")
    for a, b, n, ab, ba in r.confused_pairs:
        click.echo(f"  {a} and {b}: {n} cases ({a} as {b}: {ab}, {b} as {a}: {ba})")
    if r.top_losses:
        click.echo(f"highest losses ({min(5, len(r.top_losses))} of the {len(r.top_losses)} listed):")
    for w in r.top_losses[:5]:
        click.echo(f"  test #{w['index']}: {w['true']} predicted as {w['predicted']} ({w['probability']:.1%}), "
                   f"loss {w['loss']:.3f}")
    for path in r.paths:
        click.echo(f"wrote {path}")


SHOW_BATCH_OPTIONS = ("arch", "dataset", "data_dir", "val_size", "test_size", "train_size", "image_size", "resize",
                      "augment", "randaugment", "randaugment_strength", "mixup", "cutmix", "label_smoothing",
                      "sampling", "batch_size", "seed")


@cli.command("show-batch")
@backend_option
@click.option("--config", "config_file", type=click.Path(), metavar="FILE",
              help="Show the batch of a run's <name>.run.json (or of a .toml/.yaml/.json of fit's options); "
                   "options typed here override it.")
@config_options(*SHOW_BATCH_OPTIONS)
@click.option("--count", type=click.IntRange(min=1), default=64, show_default=True,
              help="Images of the batch to draw.")
@click.option("--output", type=click.Path(), help="The PNG to write [<arch>.<dataset>.batch.png].")
@click.pass_context
def show_batch(ctx, config_file, count, output, **options):
    """Draw the first training batch as the model receives it from fit's own
    pipeline (resized, channels adapted, augmented, normalized), with the
    normalization undone for display."""
    from kerascnn.analysis.preview import show_batch as draw_batch
    from kerascnn.analysis.visualization import check_figure_path

    given = _given_config(ctx, config_file, options)
    if output:
        check_figure_path(output)
    start_quietly()
    click.echo(f"wrote {draw_batch(given, output=output, count=count).path}")


@cli.command()
@backend_option
@click.argument("model", type=click.Path())
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--top-k", type=click.IntRange(min=1), default=3, show_default=True, metavar="K",
              help="Classes to list per image, most probable first.")
@click.option("--invert", is_flag=True,
              help="Invert the images first: dark digits on white paper become light on black, as in MNIST.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of {file, top: [{class, index, "
                                                      "probability}]} instead of the table.")
@unsafe_option
def predict(model, images, top_k, invert, as_json, unsafe):
    """The most probable classes of your own PNG or JPEG images (or folders
    of them), converted as the model's training data was: channels, size
    (the run's resize or pad), scaling and normalization."""
    import json

    from kerascnn.analysis.prediction import format_table, predict as predict_images

    run = Run.load(model, unsafe=unsafe)
    start_quietly()
    predictions = predict_images(run, images, top_k=top_k, invert=invert)
    if as_json:
        click.echo(json.dumps(predictions, indent=2))
    else:
        click.echo("\n".join(format_table(predictions)))


@cli.command()
@backend_option
@click.option("--layer", help="Any layer with spatial output (`kerascnn layers` lists them) "
                             "[the model's first convolution].")
@click.option("--model", "model_path", type=click.Path(), help="[the newest .keras in saved_models/]")
@click.option("--index", type=click.IntRange(min=0), default=0, show_default=True, help="Test image to run.")
@config_option("dataset", default=None, show_default=False, help="[the dataset the model was trained on]")
@config_option("data_dir")
@click.option("--output", type=click.Path(), help="Folder for the PNGs [the model's folder].")
@click.option("--by-epoch", is_flag=True,
              help="How the maps and kernels evolved over training (needs fit --record-layer); "
                   "--index is then a probe image.")
@unsafe_option
def visualize(layer, model_path, index, dataset, data_dir, output, by_epoch, unsafe):
    """Draw a layer's kernels and feature maps, and the training curves."""
    from kerascnn.analysis.visualization import visualize as visualize_model, visualize_epochs

    run = Run.load(model_path, unsafe=unsafe) if model_path else Run.newest(unsafe=unsafe)
    start_quietly()
    if by_epoch:
        r = visualize_epochs(run, layer, index=index, output=output)
    else:
        r = visualize_model(run, layer, index=index, dataset=dataset, data_dir=data_dir, output=output)
    click.echo(f"model: {r.model_path}  layer: {r.layer}")
    for path in r.paths:
        click.echo(f"wrote {path}")


def _index_list(ctx, param, values):
    """Test-image indices from `--index 3 --index 5,9`."""
    try:
        indices = [int(i) for value in values for i in value.split(",") if i.strip()]
    except ValueError:
        indices = [-1]
    if any(i < 0 for i in indices):
        raise click.BadParameter(f"expects test-image numbers from 0, such as 3 or 0,5,9; got {' '.join(values)}")
    return tuple(indices)


@cli.command()
@backend_option
@click.argument("model", type=click.Path())
@click.option("--method", type=click.Choice(EXPLAIN_METHODS), default="gradcam", show_default=True,
              help="Grad-CAM or Grad-CAM++ of a convolution's maps, or the gradient of the pixels: saliency, "
                   "or SmoothGrad's mean over 25 noisy copies.")
@click.option("--layer", help="The convolution Grad-CAM weighs [the last one whose maps are at least 4x4].")
@click.option("--index", "indices", multiple=True, metavar="N[,N...]", callback=_index_list,
              help="Test images to explain (comma-separated or repeated) [the first 8].")
@click.option("--misclassified", type=click.IntRange(min=1), metavar="K",
              help="Explain the first K misclassified test images instead.")
@click.option("--class", "class_name", metavar="C",
              help="Explain class C (an index or a class name) [each image's predicted class].")
@config_option("dataset", default=None, show_default=False, help="[the dataset the model was trained on]")
@config_option("data_dir")
@click.option("--output", type=click.Path(),
              help="The PNG to write, or a folder for <model>.<method>.png [the model's folder]; the maps go "
                   "beside it as .npz.")
@unsafe_option
def explain(model, method, layer, indices, misclassified, class_name, dataset, data_dir, output, unsafe):
    """Heat maps of what a saved model's decisions rest on, over test
    images, with predicted and true classes."""
    from kerascnn.analysis.explanation import explain as explain_model

    run = Run.load(model, unsafe=unsafe)
    start_quietly()
    r = explain_model(run, method, layer=layer, indices=list(indices) or None, misclassified=misclassified,
                      class_index=class_name, dataset=dataset, data_dir=data_dir, output=output)
    click.echo(f"model: {r.model_path}  method: {r.method}" + (f"  layer: {r.layer}" if r.layer else ""))
    names = r.class_names
    for i, p, t, e, prob in zip(r.indices, r.predicted, r.true, r.explained, r.probabilities):
        target = "" if e == p else f"; map of {names[e]}"
        click.echo(f"  test #{i}: predicted {names[p]} ({prob[p]:.1%}), true {names[t]}{target}")
    for path in r.paths:
        click.echo(f"wrote {path}")


@cli.command()
@backend_option
@click.argument("models", nargs=-1, required=True, type=click.Path())
@click.option("--output", type=click.Path(), default="comparison.png", show_default=True,
              help="The PNG to write (a .png name, in a folder that exists).")
@click.option("--title", default="training curves compared", show_default=True)
def compare(models, output, title):
    """Overlay the training curves of saved runs in one PNG and print a
    Markdown table of their settings and accuracies."""
    from kerascnn.analysis.visualization import check_figure_path, compare_runs

    check_figure_path(output)
    runs = [Run.load(m) for m in models]  # records and histories only: no Keras to start
    table, path = compare_runs(runs, output, title=title)

    def cell(key, v):  # accuracies to 4 decimals; the learning rate and seconds as given
        if isinstance(v, float):
            return f"{v:.4f}" if "accuracy" in key else f"{v:g}"
        return "" if v is None else str(v)

    keys = list(table[0])
    click.echo("| " + " | ".join(keys) + " |")
    click.echo("|" + "|".join("---" for _ in keys) + "|")
    for row in table:
        click.echo("| " + " | ".join(cell(k, row[k]) for k in keys) + " |")
    click.echo(f"wrote {path}")


def _model_for_listing(arch, model_path, image_size, in_channels, classes, knobs, unsafe=False):
    if model_path:
        run = Run.load(model_path, unsafe=unsafe)
        start_quietly()
        return run.model()
    settings = FitConfig(arch=arch, image_size=image_size, **knobs)  # checked before Keras loads
    start_quietly()
    from kerascnn.models import build_model
    from kerascnn.training.plan import resolve_image_size

    # the size `fit` would train at: LeNet at MNIST's 28, the others by the devices
    size = resolve_image_size(settings.family, image_size, 28, echo=click.echo)
    from kerascnn.config.defaults import resolve

    click.echo(f"fit's defaults for {arch}: {resolve(settings, image_size=size, accelerator=False).recipe()}")
    return build_model(arch, input_shape=(size, size, in_channels), num_classes=classes,
                       **settings.builder_options())


def listing_options(f):
    for option in reversed([
        config_option("arch"),
        click.option("--model", "model_path", type=click.Path(), help="A saved .keras model instead of --arch."),
        config_option("image_size", help="[the size `fit` trains at: lenet 28; others: the textbook size "
                                         "with a GPU, the smallest they take without]"),
        click.option("--in-channels", type=click.Choice(["1", "3"]), default="1", show_default=True),
        click.option("--classes", type=click.IntRange(min=2), default=10, show_default=True),
        config_options(*MODEL_OPTIONS),
        unsafe_option,
    ]):
        f = option(f)
    return f


@cli.command()
@backend_option
@listing_options
def summary(arch, model_path, image_size, in_channels, classes, unsafe, **knobs):
    """The layer table and the parameters of the encoder and the head."""
    model = _model_for_listing(arch, model_path, image_size, int(in_channels), classes, knobs, unsafe)
    from kerascnn.models.summary import format_parameter_table, parameter_counts

    model.summary(print_fn=lambda line, **_: click.echo(line))
    click.echo("Parameters by part (weights = kernels without biases; batchnorm = trainable gamma and beta;")
    click.echo("non_trainable = batch-norm moving statistics):")
    click.echo(format_parameter_table(parameter_counts(model)))


@cli.command()
@backend_option
@listing_options
def layers(arch, model_path, image_size, in_channels, classes, unsafe, **knobs):
    """Every layer name with its type, output shape and part; any layer with
    a 4-D output works with `visualize --layer`."""
    model = _model_for_listing(arch, model_path, image_size, int(in_channels), classes, knobs, unsafe)
    from kerascnn.models.summary import layer_table

    rows = [("name", "type", "output shape", "params", "part")]
    rows += [(n, t, str(s), f"{p:,}", part) for n, t, s, p, part in layer_table(model)]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


STUDY_FIT_OPTIONS = [n for n in FIELDS if n not in ("output", "name", "resume", "overwrite")]


@cli.command()
@backend_option
@click.argument("study_file", required=False, type=click.Path())
@click.option("--preset", help=f"A study course reports run: {', '.join(PRESETS)}.",
              shell_complete=lambda ctx, param, incomplete: [p for p in PRESETS if p.startswith(incomplete)])
@click.option("--vary", multiple=True, metavar="OPTION=V1,V2",
              help="Values of an option to try (repeatable: a full grid); a list value is written 6/16.")
@click.option("--ablate", is_flag=True, help="One change at a time against the baseline, not the grid.")
@click.option("--seeds", type=int, default=1, show_default=True, help="Runs per variant, seeds --seed, --seed+1, ...")
@click.option("--shard", metavar="I/N", help="Run only slice I (from 0) of N of the study's runs.")
@click.option("--output", type=click.Path(), help="The study folder [saved_models/<study name>].")
@click.option("--name", help="The study's name [the preset's, the file's, or 'study'].")
@config_options(*STUDY_FIT_OPTIONS)
@click.pass_context
def study(ctx, study_file, preset, vary, ablate, seeds, shard, output, name, **options):
    """Run a study: variants of a run, each over seeds, in one folder, with
    a results table and report.html. Options of fit given here set the
    baseline (and override a preset's or study file's)."""
    from kerascnn.studies.study import make_study, parse_shard, run_study

    typed = {k: v for k, v in options.items() if ctx.get_parameter_source(k) == ParameterSource.COMMANDLINE}
    first = typed.pop("seed", 0)
    spec = make_study(preset, study_file, vary=vary, ablate=ablate, seeds=seeds, seed=first, name=name, **typed)
    if shard is not None:
        shard = parse_shard(shard)
    start_quietly()
    run_study(spec, output, shard=shard, echo=click.echo)


@cli.command()
@backend_option
@click.argument("path", type=click.Path())
def report(path):
    """Rebuild a study's results (results.csv, results.md, curves.png,
    accuracy.png, report.html) from what its folder holds, or write
    <name>.report.html beside a single run (its model file, or its folder)."""
    from kerascnn.studies.report import write_report

    start_quietly()
    for written in write_report(path):
        click.echo(f"wrote {written}")


@cli.command()
@backend_option
@config_option("dataset", default="mnist")
@config_option("data_dir")
@config_option("epochs", default="40")
@config_option("batch_size", help="The batch size [200; digits: 20].")
@click.option("--optimizer", "--opt", type=click.Choice(["adam", "sgd"]), default="adam", show_default=True,
              help="The update rule: Adam, or plain SGD.")
@config_option("lr", default="0.001", show_default=True, help="Learning rate.")
@config_option("decay_rate", default="0.8", show_default=True,
               help="The rate is multiplied by this after epoch --decay-after and every epoch since.")
@config_option("decay_after", default="10", show_default=True, help="Epochs at the full rate.")
@config_option("val_size", default=None, show_default=False,
               help="Training images held out for validation: a count or a fraction [1000; digits: 0.1].")
@config_option("train_size")
@config_option("sampling", default="sequential")
@click.option("--weight-scale", type=click.FloatRange(min=0, min_open=True),
              help="Weights start from N(0, scale^2), biases at 0 [0.001; digits: 0.01].")
@click.option("--conv", type=click.Choice(["loops", "im2col"]), default="loops", show_default=True,
              help="The report's loops over output pixels, or im2col matrix products (several times faster).")
@click.option("--print-every", type=click.IntRange(min=0), default=100, show_default=True, metavar="N",
              help="Print 'loss: ... [seen/total]' every N iterations; 0 never.")
@config_option("seed", help="Seed of the validation split, the initial weights and the order.")
@config_option("output")
@config_option("name", default="lenet5_scratch", show_default=True, help="File name of the run.")
@click.option("--check", is_flag=True, help="Check every gradient instead of training (centred differences, and "
                                            "Keras' LeNet-5 on the current backend); exit 1 if one is off.")
def scratch(check, conv, weight_scale, print_every, **options):
    """LeNet-5 from scratch in NumPy, trained as the course report trained it
    (Adam 1e-3, batch 200, x0.8 after epoch 10, 40 epochs): progress, test
    accuracy, history, curves, confusion matrix."""
    if check:
        from kerascnn.scratch.check import run_checks

        start_quietly()
        if not run_checks(echo=click.echo):
            raise SystemExit(1)
        return
    from kerascnn.scratch.experiment import train_scratch

    result = train_scratch(**options, fast=conv == "im2col", weight_scale=weight_scale, print_every=print_every,
                           echo=click.echo)
    for a, b, n, ab, ba in result.confused_pairs[:3]:
        click.echo(f"  most confused: {a} and {b}, {n} cases ({a} as {b}: {ab}, {b} as {a}: {ba})")
    for path in result.paths:
        click.echo(f"wrote {path}")


def main(argv=None):
    """The console script."""
    cli.main(args=argv, prog_name="kerascnn")
