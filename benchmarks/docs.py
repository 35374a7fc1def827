"""Rerun the transcripts, tables and pictures in docs/.

Every block in docs/ between `<!-- docs.py ID -->` and `<!-- /docs.py -->`
is written by the entry ID below (report.write_block replaces it). Most
entries run the commands shown, in a fresh folder (so `saved_models/` starts
empty), with the real datasets of ../shared/data (or $KERASCNN_DATA_DIR), and
paste what they printed (stdout and stderr, as a user sees them in a file or
pipe), ending with the command, machine and date; pictures go to
docs/images/. The others are rendered from a benchmark's results JSON by
that benchmark's `--write-docs` (`--list` names it), and name the command,
data and machine that measured them.

    python benchmarks/docs.py --list
    python benchmarks/docs.py                 # every cheap entry (minutes)
    python benchmarks/docs.py --only cli-fit cli-evaluate
    python benchmarks/docs.py --all           # also the long ones

Entries that share runs (the lenet_relu_max model) run in one session, in
the order listed. Run it with nothing else on the machine: transcripts
include training times.
"""

import argparse
import contextlib
import datetime
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import defaults
import gpu
import performance
import scratch
from harness import REPO, RESULTS_DIR, data_dir, machine, versions
from report import DOCS, write_block

IMAGES = DOCS / "images"
ENTRIES = {}
RENDERED = {}  # blocks a benchmark writes from its results JSON: name -> (command, write())


def entry(name, doc, long=False):
    """Register `fn(session) -> markdown` as the block `name` of docs/`doc`."""
    def register(fn):
        ENTRIES[name] = (doc, long, fn)
        return fn
    return register


def rendered(name, doc, command, write):
    """Register the block `name` of docs/`doc`, which `command` (`write()`)
    renders from a benchmark's results JSON, naming how they were measured."""
    ENTRIES[name] = (doc, False, None)
    RENDERED[name] = (command, write)


rendered("zoo-defaults", "zoo.md", "python benchmarks/defaults.py --write-docs", defaults.write_docs)
rendered("gpu", "gpu.md", "python benchmarks/gpu.py --write-docs", gpu.write_docs)
rendered("scratch-speed", "results.md", "python benchmarks/scratch.py --write-docs", scratch.write_docs)
for _name in performance.BLOCKS:
    rendered(_name, "performance.md", "python benchmarks/performance.py --write-docs",
             lambda: performance.write_docs(RESULTS_DIR / "performance.json", performance.DOC))


class Session:
    """A scratch folder to run commands in, as a user would in theirs."""

    def __init__(self, data_dir, work):
        self.work = Path(work)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("KERAS_BACKEND", "TF_CPP"))}
        self.env.update(KERASCNN_DATA_DIR=str(data_dir), COLUMNS="100")
        self.data_dir = data_dir

    def run(self, command, *, lines=None, env=None, code=0, stdout=True):
        """`$ command` and what it printed, as text; `lines` keeps a slice
        of the output; `code` is the exit code it must end with; without
        `stdout`, only what went to stderr."""
        args = shlex.split(command)
        argv = [sys.executable, str(REPO / "cli.py"), *args[1:]] if args[0] == "kerascnn" else args
        proc = subprocess.run(argv, cwd=self.work, env={**self.env, **(env or {})}, text=True,
                              stdout=subprocess.PIPE, timeout=7200,
                              stderr=subprocess.STDOUT if stdout else subprocess.PIPE)
        if not stdout:
            proc.stdout = proc.stderr
        if proc.returncode != code:
            sys.exit(f"`{command}` exited {proc.returncode} (expected {code}):\n{proc.stdout[-3000:]}")
        out = proc.stdout.rstrip("\n").splitlines()
        if lines is not None:
            out = out[lines]
        shown = " ".join(f"{k}={v}" for k, v in (env or {}).items())
        return "\n".join([f"$ {shown + ' ' if shown else ''}{command}", *out])

    def record(self, name):
        return json.loads((self.work / "saved_models" / f"{name}.run.json").read_text())

    def image(self, name, as_name=None):
        """Copy saved_models/<name> into docs/images and return its doc path."""
        target = IMAGES / (as_name or name)
        shutil.copyfile(self.work / "saved_models" / name, target)
        return f"images/{target.name}"


def block(*transcripts):
    return "```\n" + "\n\n".join(transcripts) + "\n```"


FIT_RELU = ("kerascnn fit --arch lenet --activation relu --pool max --epochs 10 --dataset fashion_mnist "
            "--batch-size 256 --optimizer adamw --lr 1e-3 --name lenet_relu_max")
FIT_SIGMOID = ("kerascnn fit --arch lenet --epochs 10 --dataset fashion_mnist --batch-size 256 --optimizer adamw "
               "--lr 1e-3 --name lenet_sigmoid_avg")


@entry("cli-summary", "cli.md")
def cli_summary(s):
    full = s.run("kerascnn summary --arch lenet --kernel 7")
    full = "\n".join(line for line in full.splitlines() if not set(line) <= set("├─┼┤│ "))
    tail = s.run("kerascnn summary --arch lenet --channels 16,32 --batchnorm", lines=slice(-5, None))
    return (block(full) + "\n(the separator rows Keras draws between layers are left out here.)\n\n"
            + "The last lines with `--channels 16,32 --batchnorm`:\n\n" + block(tail))


@entry("cli-fit", "cli.md")
def cli_fit(s):
    relu = s.run(FIT_RELU)
    s.run(FIT_SIGMOID)
    rows = ["| variant | command | test accuracy | training time |", "| --- | --- | --- | --- |"]
    for label, command, name in (("ReLU, max pooling", FIT_RELU, "lenet_relu_max"),
                                 ("sigmoid, average pooling (the default)", FIT_SIGMOID, "lenet_sigmoid_avg")):
        r = s.record(name)
        rows.append(f"| {label} | `{command}` | **{100 * r['test_accuracy']:.2f}%** | {r['train_seconds']:.1f} s |")
    return (block(relu) + "\n\nIn a terminal, Keras' progress bar shows each epoch instead of the one-line summaries "
            "above (which is what a log file, CI or a pipe gets).\n\nThe textbook LeNet against its modern variant, "
            "same settings (AdamW, learning rate 1e-3, weight decay 0.004, batch 256, 10 epochs, seed 0):\n\n"
            + "\n".join(rows))


@entry("cli-errors", "cli.md")
def cli_errors(s):
    return block(s.run("kerascnn fit --arch resnet18 --pool avg", code=2), s.run("kerascnn fit --lr -1", code=2),
                 s.run("kerascnn fit --dataset digits --optimizer sgd --lr 1e12 --epochs 3", code=1,
                       lines=slice(-1, None)))


@entry("cli-evaluate", "cli.md")
def cli_evaluate(s):
    text = s.run("kerascnn evaluate saved_models/lenet_relu_max.keras")
    return block(text) + f"\n\n![confusion matrix]({s.image('lenet_relu_max.confusion.png')})"


@entry("cli-visualize", "cli.md")
def cli_visualize(s):
    model = "saved_models/lenet_relu_max.keras"
    text = block(s.run(f"kerascnn visualize --layer conv1 --model {model} --index 0"),
                 s.run(f"kerascnn visualize --layer fc1 --model {model}", code=1))
    s.run(f"kerascnn visualize --layer conv2 --model {model} --index 0")
    kernels, maps, maps2, curves = (s.image(f"lenet_relu_max.{n}.png") for n in
                                    ("conv1.kernels", "conv1.maps.0", "conv2.maps.0", "curves"))
    return (text + "\n\nThe six learned 5×5 `conv1` kernels, and what they make of test image 0 (an ankle boot):\n\n"
            f"![conv1 kernels]({kernels})\n\n![conv1 feature maps]({maps})\n\n"
            f"`conv2` (`--layer conv2`), 16 maps of 10×10:\n\n![conv2 feature maps]({maps2})\n\n"
            f"Training curves of the same run:\n\n![training curves]({curves})")


@entry("cli-no-data", "cli.md")
def cli_no_data(s):
    env = {k: v for k, v in s.env.items() if k != "KERASCNN_DATA_DIR"}
    saved, s.env = s.env, env
    try:
        return block(s.run("kerascnn fit --dataset mnist", code=1))
    finally:
        s.env = saved


@entry("cli-study", "cli.md")
def cli_study(s):
    text = s.run("kerascnn study --vary activation=sigmoid,relu --vary pool=avg,max --ablate --dataset digits "
                 "--epochs 5 -b 32 --seeds 3 --name pools")
    table = without_title(s.work / "saved_models" / "pools" / "results.md")
    again = s.run("kerascnn study --vary activation=sigmoid,relu --vary pool=avg,max --ablate --dataset digits "
                  "--epochs 5 -b 32 --seeds 3 --name pools", lines=slice(0, 1))
    report = s.run("kerascnn report saved_models/pools")
    return block(text) + "\n\n`results.md`:\n\n" + table + "\n\nThe same command again:\n\n" + block(again, report)


@entry("training-by-epoch", "training.md")
def training_by_epoch(s):
    fit = ("kerascnn fit --arch lenet --activation relu --pool max --dataset digits --epochs 10 -b 32 "
           "--record-layer conv1 --name lenet_digits")
    s.run(fit)
    shown = s.run("kerascnn visualize --layer conv1 --by-epoch --index 0 --model saved_models/lenet_digits.keras")
    kernels = s.image("lenet_digits.conv1.kernels_by_epoch.png")
    maps = s.image("lenet_digits.conv1.maps_by_epoch.0.png")
    accuracy = s.record("lenet_digits")["test_accuracy"]
    return (block(f"$ {fit}\n...", shown) + f"\n\n![conv1 kernels by epoch]({kernels})\n![conv1 maps by epoch]({maps})"
            f"\n\n(The run above: {100 * accuracy:.2f}% test accuracy on the digits.)")


@entry("training-log-every", "training.md")
def training_log_every(s):
    fit = s.run("kerascnn fit --arch lenet --activation relu --pool max --dataset mnist --epochs 2 -b 64 "
                "--log-every 100 --name lenet_steps")
    head = s.run("head -4 saved_models/lenet_steps.steps.csv")
    s.run("kerascnn visualize --model saved_models/lenet_steps.keras")
    return block(fit, head) + f"\n\n![curves every 100 steps and per epoch]({s.image('lenet_steps.curves.png')})"


@entry("training-optimizers", "training.md")
def training_optimizers(s):
    fits = []
    for o in ("momentum", "adagrad", "adam"):
        fits.append(s.run(f"kerascnn fit --arch lenet --activation relu --pool max --dataset mnist --epochs 10 "
                          f"--optimizer {o} --name lenet_{o}", lines=slice(-7, -6)))
    title = "LeNet (ReLU, max pooling) on MNIST: SGD+momentum vs AdaGrad vs Adam"
    table = s.run("kerascnn compare saved_models/lenet_momentum.keras saved_models/lenet_adagrad.keras "
                  f"saved_models/lenet_adam.keras --output saved_models/optimizers_mnist.png --title {shlex.quote(title)}")
    image = s.image("optimizers_mnist.png")
    return block(*fits, table) + f"\n\n![optimizers on MNIST]({image})"


@entry("backends-digits", "backends.md")
def backends_digits(s):
    options = ("--epochs 3", "--epochs 10 -b 32", "--epochs 3 --activation relu --pool max -b 32")
    rows = ["| options | tensorflow | jax | torch |", "|---|---:|---:|---:|"]
    for i, extra in enumerate(options):
        cells = []
        for backend in ("tensorflow", "jax", "torch"):
            s.run(f"kerascnn fit --arch lenet --dataset digits {extra} --name {backend}{i}",
                  env={"KERAS_BACKEND": backend})
            cells.append(f"{100 * s.record(f'{backend}{i}')['test_accuracy']:.1f}%")
        rows.append(f"| `{extra}` | " + " | ".join(cells) + " |")
    return ("Test accuracy on the digits, `KERAS_BACKEND=X kerascnn fit --arch lenet --dataset digits OPTIONS`:\n\n"
            + "\n".join(rows))


def bad_data(root):
    """Data folders, each with one mistake, under `root`; returns their names."""
    import gzip
    import struct

    import numpy as np

    rng = np.random.default_rng(0)

    def idx(path, array, magic=None, cut=None, gz=False):
        array = np.asarray(array, np.uint8)
        data = struct.pack(">I", magic or 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
        data = (data + array.tobytes())[:cut]
        if gz:
            data = gzip.compress(data)[: -20 if cut else None]
        Path(str(path) + (".gz" if gz else "")).write_bytes(data)

    def mnist(name, n=60, labels=None, drop=None, **damage):
        folder = root / name / "mnist"
        folder.mkdir(parents=True)
        x, y = rng.integers(0, 255, (n, 28, 28)), np.arange(n) % 10 if labels is None else labels
        for stem, array in (("train-images-idx3-ubyte", x), ("train-labels-idx1-ubyte", y),
                            ("t10k-images-idx3-ubyte", x), ("t10k-labels-idx1-ubyte", y)):
            if stem != drop:
                idx(folder / stem, array, **(damage if stem == "train-images-idx3-ubyte" else {}))

    mnist("missing_file", drop="t10k-labels-idx1-ubyte")
    mnist("wrong_magic", magic=0x0D01)
    mnist("truncated", cut=30000)
    mnist("truncated_gz", cut=30000, gz=True)
    mnist("counts", labels=np.arange(59) % 10)
    mnist("labels", labels=np.arange(60) % 11)
    mnist("empty", n=0, labels=np.zeros(0))
    mnist("ok")
    x, y = rng.integers(0, 255, (30, 32, 32, 3)).astype(np.uint8), np.arange(30) % 3
    for name, arrays in (("npz_missing", dict(x_train=x, y_train=y, x_test=x)),
                         ("npz_object", dict(x_train=x, y_train=np.array(list(y), object), x_test=x, y_test=y)),
                         ("three_classes", dict(x_train=x, y_train=y, x_test=x, y_test=y,
                                                class_names=np.array(["a", "b", "c"])))):
        (root / name / "cifar10").mkdir(parents=True)
        np.savez(root / name / "cifar10" / "data.npz", **arrays)


def bad_models(root, good):
    """Model files a user might be sent, beside the good one."""
    import keras

    (root / "empty_folder").mkdir()
    (root / "notes.keras").write_text("my notes on the model\n")
    data = good.read_bytes()
    (root / "truncated.keras").write_bytes(data[: len(data) // 2])
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Lambda(lambda t: t * 2, name="double")(inputs)
    logits = keras.layers.Dense(10)(keras.layers.Flatten()(x))
    keras.Model(inputs, logits).save(root / "lambda.keras")

    class Sharpen(keras.layers.Layer):
        def call(self, t):
            return t * 2

    keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(Sharpen()(inputs)))).save(
        root / "custom.keras")
    (root / "bad_history").mkdir()
    for suffix in (".keras", ".run.json"):
        shutil.copyfile(str(good)[: -len(".keras")] + suffix, root / "bad_history" / f"lenet{suffix}")
    (root / "bad_history" / "lenet.history.json").write_text("")


BAD_INPUTS = [
    ("unknown architecture", "kerascnn fit --arch resnet50", 2),
    ("unknown dataset", "kerascnn fit --dataset svhn", 2),
    ("unknown optimizer", "kerascnn fit --optimizer adamx", 2),
    ("unknown schedule", "kerascnn fit --schedule linear", 2),
    ("unknown backend", "kerascnn --backend theano fit", 2),
    ("unknown layer", "kerascnn visualize --model models/lenet.keras --layer fc9", 1),
    ("zero epochs", "kerascnn fit --epochs 0", 2),
    ("negative batch size", "kerascnn fit --batch-size -4", 2),
    ("learning rate not positive", "kerascnn fit --lr 0", 2),
    ("a kernel that does not fit the input", "kerascnn fit --dataset digits --kernel 31", 1),
    ("image size below the architecture's minimum", "kerascnn fit --arch vgg11 --image-size 16", 2),
    ("model path that does not exist", "kerascnn evaluate models/lenet5.keras", 1),
    ("model path that is a folder", "kerascnn evaluate models/empty_folder", 1),
    ("model file that is not a zip", "kerascnn evaluate models/notes.keras", 1),
    ("truncated .keras", "kerascnn evaluate models/truncated.keras", 1),
    (".keras holding a Lambda layer", "kerascnn layers --model models/lambda.keras", 1),
    (".keras holding a Lambda layer, with --unsafe", "kerascnn layers --model models/lambda.keras --unsafe", 0),
    (".keras holding an unregistered class", "kerascnn layers --model models/custom.keras", 1),
    ("data folder that does not exist", "kerascnn fit --dataset mnist --data-dir nowhere", 1),
    ("an IDX file missing", "kerascnn fit --dataset mnist --data-dir data/missing_file", 1),
    ("wrong IDX magic number", "kerascnn fit --dataset mnist --data-dir data/wrong_magic", 1),
    ("truncated IDX file", "kerascnn fit --dataset mnist --data-dir data/truncated", 1),
    ("truncated gzipped IDX file", "kerascnn fit --dataset mnist --data-dir data/truncated_gz", 1),
    ("image and label counts disagree", "kerascnn fit --dataset mnist --data-dir data/counts", 1),
    ("labels out of range", "kerascnn fit --dataset mnist --data-dir data/labels", 1),
    ("empty dataset", "kerascnn fit --dataset mnist --data-dir data/empty", 1),
    (".npz without the expected arrays", "kerascnn fit --dataset cifar10 --data-dir data/npz_missing", 1),
    (".npz holding an object array (pickle)", "kerascnn fit --dataset cifar10 --data-dir data/npz_object", 1),
    ("class count that does not fit the model",
     "kerascnn evaluate models/lenet.keras --dataset cifar10 --data-dir data/three_classes", 1),
    ("data other than the model's own (same classes)",
     "kerascnn evaluate models/lenet.keras --dataset mnist --data-dir data/ok", 0),
    ("output folder that cannot be created", "kerascnn fit --dataset digits --output /proc/kerascnn", 1),
    ("output folder that is a file", "kerascnn fit --dataset digits --output models/notes.keras", 1),
    ("a diverging run", "kerascnn fit --dataset digits --optimizer sgd --lr 1e12 --epochs 3 --output diverged", 1),
    ("compare: empty history file", "kerascnn compare models/lenet.keras models/bad_history/lenet.keras", 1),
    ("compare: output not a PNG", "kerascnn compare models/lenet.keras --output out.txt", 2),
    ("compare: output folder missing", "kerascnn compare models/lenet.keras --output new/sub/cmp.png", 1),
]


@entry("reliability-inputs", "reliability.md")
def reliability_inputs(s):
    s.run("kerascnn fit --dataset digits --epochs 1 --train-size 128 --output models")
    bad_data(s.work / "data")
    bad_models(s.work / "models", s.work / "models" / "lenet.keras")
    rows = ["| bad input | command | exit | what the user sees (stderr) |", "|---|---|---|---|"]
    for label, command, code in BAD_INPUTS:
        text = s.run(command, code=code, stdout=False)
        said = [line for line in text.splitlines()[1:] if line.startswith(("error:", "warning:"))]
        if len(said) != (1 if code else len(said)) or (code and len(text.splitlines()) != 2):
            sys.exit(f"`{command}` did not answer in one line:\n{text}")
        cell = "<br>".join(f"`` {line} ``".replace("|", "\\|") for line in said) or "(nothing)"
        rows.append(f"| {label} | `{command}` | {code} | {cell} |")
    return "\n".join(rows)


def results(name):
    return json.loads((RESULTS_DIR / f"{name}.json").read_text())


@entry("reliability-kills", "reliability.md")
def reliability_kills(s):
    r = results("kill_during_save")
    phases = ", ".join(f"{n} {phase}" for phase, n in sorted(r["kills_by_phase"].items(), key=lambda kv: -kv[1]))
    steps = ", ".join(f"{n} {step}" for step, n in sorted(r["kills_during_a_save_by_step"].items(),
                                                           key=lambda kv: -kv[1]))
    found = ", ".join(f"{n} {what}" for what, n in r["files_found"].items())
    left = r["temp_files_left_by_a_kill"]
    return (f"`{r['command']}` ({r['machine']}; {r['keras_backend']}; {r['seconds']:.0f} s) starts a process that "
            "saves, over and over, a model with its training state, then rewrites that state, a history CSV, a "
            "run record and an activations `.npz`, each through the project's atomic writer, and kills it with "
            "SIGKILL at a random moment, aimed inside a save from measured save times (median "
            + ", ".join(f"{k} {v:g} ms" for k, v in r["save_ms_median"].items()) + "). After each kill it loads "
            "what is left with the project's loaders and checks it is whole and is either the previous version "
            "or the new one.\n\n"
            f"| kills | during a save | broken files | files checked | temp files left by kills | "
            f"left after the next save |\n|---|---|---|---|---|---|\n"
            f"| {r['kills']} | {r['kills_during_a_save']} | **{r['broken_files']}** | {r['files_checked']} | "
            f"{left['total']} (at most {left['most_at_once']} at once) | {r['temp_files_after_the_next_save']} |"
            f"\n\nWhere the kills landed: {phases}; by file: {steps}. What the files held afterwards: {found}. "
            f"A loader picked up a temporary file {r['loader_picked_a_temp_file']} times (they start with a dot, "
            "which loaders skip). `tests/test_storage.py` runs the same campaign with 10 kills.")


@entry("reliability-fuzz", "reliability.md")
def reliability_fuzz(s):
    r = results("fuzz_loaders")
    rows = ["| format | inputs | loaded | refused with the project's error | failures | seconds |",
            "|---|---|---|---|---|---|"]
    for fmt, f in r["formats"].items():
        rows.append(f"| {fmt} | {f['inputs']} | {f['outcomes'].get('loaded', 0)} | {f['outcomes'].get('refused', 0)} "
                    f"| **{len(f['failures'])}** | {f['seconds']:.0f} |")
    return (f"`{r['command']}` (Python {r['python']}, Keras {r['keras']}, {r['machine']}) mutates real files "
            "(a saved LeNet `.keras`, IDX files, an `.npz`): flipped, zeroed, inserted and duplicated bytes, "
            "truncation, and edits inside the zip's entries with their CRCs recomputed so that Keras' and h5py's "
            "own readers are reached. Each input is loaded in a worker process with a "
            f"{r['timeout_seconds']} s time limit and a {r['memory_gb']} GB memory limit; an exception other than "
            "the project's error, a crash (a signal) or a timeout counts as a failure.\n\n" + "\n".join(rows)
            + "\n\n`tests/test_storage.py` runs a small version of the campaign.")


def without_title(path):
    """A results.md without its own title line, to sit under a section of ours."""
    return "\n".join(line for line in path.read_text().strip().splitlines() if not line.startswith("# ")).strip()


def study_block(s, command, name, reported, screenshot=False):
    """A study's command, its last lines, its results table and plots (and
    a screenshot of its report.html in headless Chromium)."""
    text = s.run(command)
    lines = text.splitlines()
    shown = "\n".join(lines[:2] + ["..."] + [x for x in lines if x.startswith("[")][-1:])
    folder = s.work / "saved_models" / name
    table = without_title(folder / "results.md")
    images = []
    for plot in ("curves", "accuracy"):
        target = IMAGES / f"study_{name.replace('-', '_')}.{plot}.png"
        shutil.copyfile(folder / f"{plot}.png", target)
        images.append(f"![{name} {plot}](images/{target.name})")
    if screenshot:
        sys.path.insert(0, str(REPO))
        from tests.test_report import screenshot as take

        target = IMAGES / f"study_{name.replace('-', '_')}.report.png"
        take(folder / "report.html", target, height=1600)
        images.append(f"The top of its `report.html`, in headless Chromium:\n\n![{name} report](images/{target.name})")
    said = f"What the course reports give: {reported}\n\n" if reported else ""
    return f"{block(shown)}\n\n{table}\n\n{said}" + "\n\n".join(images)


@entry("cli-scratch", "cli.md")
def cli_scratch(s):
    train = s.run("kerascnn scratch --dataset digits --epochs 3")
    check = s.run("kerascnn scratch --check")
    lines = check.splitlines()
    keras_at = next(i for i, line in enumerate(lines) if "against Keras" in line)
    return block(train, "\n".join(lines[:4] + ["  ..."] + lines[keras_at:]))


@entry("results-lenet-ablation", "results.md", long=True)
def results_lenet_ablation(s):
    return study_block(s, "kerascnn study --preset lenet-ablation --seeds 3", "lenet-ablation",
                       "the sigmoid/average-pooling LeNet at about 82% on Fashion-MNIST; about 90% claimed after "
                       "7x7 kernels.")


@entry("results-lenet5-mnist", "results.md", long=True)
def results_lenet5_mnist(s):
    return study_block(s, "kerascnn study --preset lenet5-mnist", "lenet5-mnist",
                       "99.22% test accuracy for the modernised LeNet-5 (sequential sampling, lr x0.8 after "
                       "epoch 10).")


@entry("results-optimizers", "results.md", long=True)
def results_optimizers(s):
    return study_block(s, "kerascnn study --preset optimizers --train-size 10000 --epochs 3 --seeds 2",
                       "optimizers", None, screenshot=True)


@entry("results-optimizers-lenet", "results.md", long=True)
def results_optimizers_lenet(s):
    fits = [s.run(f"kerascnn fit --arch lenet --dataset mnist --optimizer {o} --lr 0.01 --momentum 0.9 --epochs 10 "
                  f"--name lenet_{o}", lines=slice(-7, -6)) for o in ("momentum", "adagrad")]
    return block(*fits)


KERNEL7 = ("kerascnn study --name kernel7 --vary kernel=5,7 --vary activation=sigmoid,relu --seeds 3 --arch lenet "
           "--dataset fashion_mnist --optimizer adamw --lr 1e-3 --weight-decay 0.01 --batch-size 256 --epochs 30")


@entry("results-kernel7", "results.md", long=True)
def results_kernel7(s):
    return study_block(s, KERNEL7, "kernel7", None)


OPTIMIZER_SWEEP = ("kerascnn study --name optimizer-sweep --vary optimizer=momentum,adagrad --vary lr=0.003,0.01,0.03,0.1 "
                   "--seeds 3 --arch lenet --activation relu --pool max --dataset mnist --momentum 0.9 --epochs 10")


@entry("results-optimizer-sweep", "results.md", long=True)
def results_optimizer_sweep(s):
    return study_block(s, OPTIMIZER_SWEEP, "optimizer-sweep", None)


@entry("results-modern-cnns", "results.md", long=True)
def results_modern_cnns(s):
    return study_block(s, "kerascnn study --preset modern-cnns --train-size 10000 --seeds 2", "modern-cnns", None)


@entry("results-tricks-lenet", "results.md", long=True)
def results_tricks_lenet(s):
    return study_block(s, "kerascnn study --preset tricks-lenet --seeds 3", "tricks-lenet", None)


@entry("results-tricks-resnet18", "results.md", long=True)
def results_tricks_resnet18(s):
    return study_block(s, "kerascnn study --preset tricks-resnet18 --train-size 10000 --seeds 3", "tricks-resnet18",
                       None)


LENET_FASHION = "saved_models/lenet_fashion.keras"


@entry("explain-lenet", "explain.md", long=True)
def explain_lenet(s):
    fit = s.run("kerascnn fit --arch lenet --activation relu --pool max --epochs 10 --name lenet_fashion")
    shown = [s.run(f"kerascnn explain {LENET_FASHION} --method {m}") for m in ("gradcam", "saliency")]
    s.run(f"kerascnn explain {LENET_FASHION} --method gradcam++")
    s.run(f"kerascnn explain {LENET_FASHION} --method smoothgrad")
    wrong = s.run(f"kerascnn explain {LENET_FASHION} --misclassified 8 --output saved_models/misclassified.png")
    images = {m: s.image(f"lenet_fashion.{m}.png") for m in ("gradcam", "saliency", "gradcam++", "smoothgrad")}
    return (block(fit, *shown) + f"\n\n![Grad-CAM]({images['gradcam']})\n\n![saliency]({images['saliency']})\n\n"
            f"The same images with `--method gradcam++` and `--method smoothgrad`:\n\n"
            f"![Grad-CAM++]({images['gradcam++']})\n\n![SmoothGrad]({images['smoothgrad']})\n\n"
            f"Its first eight mistakes (`--misclassified 8`), each map explaining the class it predicted:\n\n"
            + block(wrong) + f"\n\n![misclassified]({s.image('misclassified.png', 'lenet_fashion.misclassified.png')})")


@entry("explain-backends", "explain.md", long=True)
def explain_backends(s):
    import numpy as np

    maps, commands, cells = {}, [], []
    for backend in ("tensorflow", "jax", "torch"):
        command = f"kerascnn explain {LENET_FASHION} --index 0,1,2,3 --output saved_models/gradcam_{backend}.png"
        commands.append(s.run(command, env={"KERAS_BACKEND": backend}, lines=slice(0, 1)))
        maps[backend] = np.load(s.work / f"saved_models/gradcam_{backend}.npz")["normalized"]
        cells.append(f"![{backend}]({s.image(f'gradcam_{backend}.png', f'lenet_fashion.gradcam_{backend}.png')})")
    worst = max(float(np.abs(maps[b] - maps["tensorflow"]).max()) for b in ("jax", "torch"))
    return (block(*commands) + "\n\n| tensorflow | jax | torch |\n|---|---|---|\n| " + " | ".join(cells) + " |\n\n"
            f"Largest difference between the backends' maps (each scaled to [0, 1]), over the 4 images and every "
            f"pixel: **{worst:.1e}**.")


@entry("explain-top-losses", "explain.md", long=True)
def explain_top_losses(s):
    text = s.run(f"kerascnn evaluate {LENET_FASHION} --top-losses 24", lines=slice(-9, None))
    return block(text) + f"\n\n![top losses]({s.image('lenet_fashion.top_losses.png')})"


@entry("explain-predict", "explain.md", long=True)
def explain_predict(s):
    from PIL import Image

    from kerascnn.data.datasets import load_dataset

    test = load_dataset("fashion_mnist", s.data_dir, val_size=0)
    folder = s.work / "my_images"
    folder.mkdir()
    for i in (0, 1, 2):
        Image.fromarray(test.x_test[i].squeeze()).save(folder / f"test{i}.png")
    Image.fromarray(255 - test.x_test[3].squeeze()).save(folder / "test3_on_white.jpg", quality=95)
    made = "Four images made from the Fashion-MNIST test set (#3 saved dark on white, as a photo of paper would be):"
    return (made + "\n\n" + block(s.run(f"kerascnn predict {LENET_FASHION} my_images"),
                                   s.run(f"kerascnn predict {LENET_FASHION} my_images/test3_on_white.jpg --invert"))
            + "\n\nTheir true classes: " + ", ".join(f"test{i} {test.class_names[int(test.y_test[i])]}"
                                                    for i in range(4)) + ".")


@entry("explain-resnet", "explain.md", long=True)
def explain_resnet(s):
    fit = s.run("kerascnn fit --arch resnet18 --dataset cifar10 --image-size 64 --augment flip,crop --epochs 8 "
                "--name resnet18_cifar")
    batch = s.run("kerascnn show-batch --arch resnet18 --dataset cifar10 --image-size 64 --augment flip,crop "
                  "--count 32 --output saved_models/cifar_batch.png")
    model = "saved_models/resnet18_cifar.keras"
    shown = [s.run(f"kerascnn explain {model} --method {m} --index 0,1,2,3,4,5,6,7") for m in ("gradcam", "saliency")]
    return (block(batch) + f"\n\n![a training batch]({s.image('cifar_batch.png', 'resnet18_cifar.batch.png')})\n\n"
            + block(fit, *shown) + f"\n\n![Grad-CAM]({s.image('resnet18_cifar.gradcam.png')})\n\n"
            f"![saliency]({s.image('resnet18_cifar.saliency.png')})")


@entry("explain-lr-find", "explain.md", long=True)
def explain_lr_find(s):
    valley = s.run("kerascnn lr-find --arch lenet --name lenet_sigmoid")
    found = s.run("kerascnn lr-find --arch lenet --suggest steepest --output saved_models/lenet_sigmoid.steepest.png")
    rates = [float(re.search(r"suggested learning rate (\S+)", t).group(1)) for t in (found, valley)]
    command = (f"kerascnn study --vary lr=0.001,{rates[0]:g},{rates[1]:g} --arch lenet --epochs 10 --seeds 3 "
               f"--name lr-find")
    lines = s.run(command).splitlines()
    table = without_title(s.work / "saved_models" / "lr-find" / "results.md")
    return (block(valley, found) + f"\n\n![lr-find, valley rule]({s.image('lenet_sigmoid.lr_find.png')})\n\n"
            + f"![lr-find, steepest]({s.image('lenet_sigmoid.steepest.png', 'lenet_sigmoid.lr_find_steepest.png')})\n\n"
            + block("\n".join(lines[:2] + ["..."] + lines[-5:])) + "\n\n" + table
            + f"\n\n![accuracy over seeds]({s.image('lr-find/accuracy.png', 'lenet_sigmoid.lr_find_study.png')})")


@entry("zoo-vgg16", "zoo.md", long=True)
def zoo_vgg16(s):
    return block(s.run("kerascnn fit --arch vgg16 --epochs 3 --train-size 10000"))


def stamp():
    """The machine, versions and date that end a transcript block."""
    m, v = machine(), versions(("keras", "tensorflow", "jax", "torch"))
    names = [f"Python {m['python']}", f"Keras {v.pop('keras')}", *(f"{k} {x}" for k, x in v.items() if x)]
    return f"{m['cores']}-core {m['arch']} CPU, " + ", ".join(names) + f", {datetime.date.today().isoformat()}"


def paste(doc, name, markdown, stamp):
    write_block(doc, name, f"{markdown}\n\n*Written by `python benchmarks/docs.py --only {name}` ({stamp}).*\n")


def run_entries(names, work=None):
    """Write the blocks `names`: rendered ones from their results, the others
    by running their commands in one session, in a temporary folder or in
    `work` (kept: a long entry run again there resumes its studies)."""
    for command in dict.fromkeys(RENDERED[n][0] for n in names if n in RENDERED):
        print(f"{command} ...", flush=True)
        next(write for c, write in RENDERED.values() if c == command)()
    names = [n for n in names if n not in RENDERED]
    if not names:
        return
    if any(n in ("cli-evaluate", "cli-visualize") for n in names) and "cli-fit" not in names:
        names.insert(0, "cli-fit")  # they read its model
    when = stamp()
    with contextlib.nullcontext(work) if work else tempfile.TemporaryDirectory(prefix="kerascnn-docs-") as folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        session = Session(data_dir(), folder)
        for name in [n for n in ENTRIES if n in names]:
            doc, _, fn = ENTRIES[name]
            print(f"{name} ...", flush=True)
            paste(doc, name, fn(session), when)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(ENTRIES), metavar="ID")
    parser.add_argument("--all", action="store_true", help="include the long entries")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--work", type=Path, metavar="DIR",
                        help="run the commands in DIR and keep it: run again, a long entry's studies resume there")
    args = parser.parse_args()
    if args.list:
        for name, (doc, long, _) in ENTRIES.items():
            how = RENDERED[name][0] if name in RENDERED else "long" if long else "cheap"
            print(f"{name:22} docs/{doc:14} {how}")
        return
    run_entries(args.only or [n for n, (_, long, _) in ENTRIES.items() if args.all or not long], args.work)


if __name__ == "__main__":
    main()
