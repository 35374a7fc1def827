"""Rerun the transcripts, tables and pictures in docs/.

Every block in docs/ between `<!-- docs.py ID -->` and `<!-- /docs.py -->`
is written by the entry ID below: it runs the commands shown, in a fresh
folder (so `saved_models/` starts empty), with the real datasets of
../shared/data (or $KERASCNN_DATA_DIR), and pastes what they printed (stdout
and stderr, as a user sees them in a file or pipe). Pictures go to
docs/images/. Each block ends with the command, machine and date.

    python benchmarks/docs.py --list
    python benchmarks/docs.py                 # every cheap entry (minutes)
    python benchmarks/docs.py --only cli-fit cli-evaluate
    python benchmarks/docs.py --all           # also the long ones

Entries that share runs (the lenet_relu_max model) run in one session, in
the order listed. Run it with nothing else on the machine: transcripts
include training times.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
IMAGES = DOCS / "images"
ENTRIES = {}


def entry(name, doc, long=False):
    """Register `fn(session) -> markdown` as the block `name` of docs/`doc`."""
    def register(fn):
        ENTRIES[name] = (doc, long, fn)
        return fn
    return register


class Session:
    """A scratch folder to run commands in, as a user would in theirs."""

    def __init__(self, data_dir, work):
        self.work = Path(work)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("KERAS_BACKEND", "TF_CPP"))}
        self.env.update(KERASCNN_DATA_DIR=str(data_dir), COLUMNS="100")
        self.data_dir = data_dir

    def run(self, command, *, lines=None, env=None, code=0):
        """`$ command` and what it printed, as text; `lines` keeps a slice
        of the output; `code` is the exit code it must end with."""
        args = shlex.split(command)
        argv = [sys.executable, str(REPO / "cli.py"), *args[1:]] if args[0] == "kerascnn" else args
        proc = subprocess.run(argv, cwd=self.work, env={**self.env, **(env or {})}, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=7200)
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


@entry("training-optimizers", "training.md")
def training_optimizers(s):
    for o in ("momentum", "adagrad", "adam"):
        s.run(f"kerascnn fit --arch lenet --activation relu --pool max --dataset mnist --epochs 10 --optimizer {o} "
              f"--name lenet_{o}")
    title = "LeNet (ReLU, max pooling) on MNIST: SGD+momentum vs AdaGrad vs Adam"
    table = s.run("kerascnn compare saved_models/lenet_momentum.keras saved_models/lenet_adagrad.keras "
                  f"saved_models/lenet_adam.keras --output saved_models/optimizers_mnist.png --title {shlex.quote(title)}")
    image = s.image("optimizers_mnist.png")
    return block(table) + f"\n\n![optimizers on MNIST]({image})"


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


@entry("zoo-vgg16", "zoo.md", long=True)
def zoo_vgg16(s):
    return block(s.run("kerascnn fit --arch vgg16 --epochs 3 --train-size 10000"))


def machine():
    import keras

    versions = [f"Python {platform.python_version()}", f"Keras {keras.__version__}"]
    for package in ("tensorflow", "jax", "torch"):
        try:
            versions.append(f"{package} {__import__(package).__version__}")
        except ImportError:
            pass
    return f"{os.cpu_count()}-core {platform.machine()} CPU, " + ", ".join(versions)


def paste(doc, name, markdown, stamp):
    path = DOCS / doc
    text = path.read_text()
    pattern = re.compile(rf"(<!-- docs.py {re.escape(name)} -->\n).*?(<!-- /docs.py -->)", re.S)
    if not pattern.search(text):
        sys.exit(f"docs/{doc} has no block `<!-- docs.py {name} -->` ... `<!-- /docs.py -->`")
    body = f"{markdown}\n\n*Written by `python benchmarks/docs.py --only {name}` ({stamp}).*\n"
    path.write_text(pattern.sub(lambda m: m.group(1) + body + m.group(2), text, count=1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(ENTRIES), metavar="ID")
    parser.add_argument("--all", action="store_true", help="include the long entries")
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args()
    if args.list:
        for name, (doc, long, fn) in ENTRIES.items():
            print(f"{name:22} docs/{doc:14} {'long' if long else 'cheap'}")
        return
    data_dir = Path(os.environ.get("KERASCNN_DATA_DIR") or REPO.parent / "shared" / "data").resolve()
    if not (data_dir / "fashion_mnist").is_dir():
        sys.exit(f"no fashion_mnist/ in {data_dir}: set KERASCNN_DATA_DIR")
    names = args.only or [n for n, (_, long, _) in ENTRIES.items() if args.all or not long]
    if any(n in ("cli-evaluate", "cli-visualize") for n in names) and "cli-fit" not in names:
        names.insert(0, "cli-fit")  # they read its model
    stamp = f"{machine()}, {datetime.date.today().isoformat()}"
    with tempfile.TemporaryDirectory(prefix="kerascnn-docs-") as work:
        session = Session(data_dir, work)
        for name in [n for n in ENTRIES if n in names]:
            doc, _, fn = ENTRIES[name]
            print(f"{name} ...", flush=True)
            paste(doc, name, fn(session), stamp)


if __name__ == "__main__":
    main()
