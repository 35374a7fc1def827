"""Each Keras backend on the same two networks (LeNet 28 px batch 256,
ResNet-18 32 px batch 64, `CASES`), measured two ways, each backend in its own
process, one after another:

    python benchmarks/backends.py [--steps 30] [--repeats 2]
    python benchmarks/performance.py --only backends

The first, this script's own: random uint8 images (speed does not depend on
the pixels), AdamW, `--jit auto`; for each backend `fit` throughput through
kerascnn's tf.data training pipeline (median over the epochs after the
first), the first epoch's seconds (compilation included) and `train_on_batch`
throughput on one batch already in memory (the backend without any input
pipeline). TensorFlow runs twice, with XLA off (what `--jit auto` picks on a
CPU) and on (the compiler behind JAX). Prints a Markdown table and writes
benchmarks/results/backends.json.

The second, section "backends" of performance.py (`section`, `render`):
kerascnn's fit path on each backend against a training step written in that
framework (loops.py), on Fashion-MNIST; performance.py's side-by-side and
profile sections use the same networks (`cases`).
"""

import argparse
import json
import sys

from harness import RESULTS_DIR, child_env, record, result_of, run_child, write_json
from loops import RELU_LENET
from report import failures, number, rate, ratio, table

CASES = {"lenet": (28, 256), "resnet18": (32, 64)}

WORKER = """
import json, statistics, sys, time
import keras, numpy as np
from kerascnn.data.tf_pipeline import make_training_pipeline
from kerascnn.models import build_model
from kerascnn.optim.optimizers import make_optimizer
from kerascnn.training.plan import compile_model, resolve_jit

steps, repeats = int(sys.argv[1]), int(sys.argv[2])
cases, jit = json.loads(sys.argv[3]), resolve_jit(sys.argv[4])
backend = keras.backend.backend()
out = {"backend": backend, "version": __import__(backend).__version__, "jit": jit}
rng = np.random.default_rng(0)
for arch, (size, batch) in cases.items():
    n = batch * steps
    x = rng.integers(0, 256, size=(n, 28, 28, 1), dtype=np.uint8)
    y = rng.integers(0, 10, size=n)
    keras.utils.set_random_seed(0)
    model = build_model(arch, input_shape=(size, size, 1), num_classes=10)
    compile_model(model, make_optimizer("adamw"), jit_compile=jit)
    ds, per_epoch = make_training_pipeline(x, y, input_shape=(size, size, 1), mean=[0.5], std=[0.25],
                                           batch_size=batch, epochs=repeats + 1)
    timer = []
    class T(keras.callbacks.Callback):
        def on_epoch_begin(self, e, logs=None): self.t = time.perf_counter()
        def on_epoch_end(self, e, logs=None): timer.append(time.perf_counter() - self.t)
    model.fit(ds, steps_per_epoch=per_epoch, epochs=repeats + 1, verbose=0, callbacks=[T()], shuffle=False)
    # The same model on one batch already in memory: what the backend does
    # without any input pipeline. fit / resident near 1 = the pipeline costs nothing.
    xb, yb = next(iter(ds.take(1)))
    xb, yb = np.asarray(xb), np.asarray(yb)
    model.train_on_batch(xb, yb)
    resident = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            model.train_on_batch(xb, yb)
        resident.append(n / (time.perf_counter() - start))
    out[arch] = {"fit": n / statistics.median(timer[1:]), "first_epoch_s": timer[0],
                 "epoch_s": timer[1:], "resident": statistics.median(resident)}
print("RESULT " + json.dumps(out))
"""


def cases(budget):
    """performance.py's networks under `budget`: {net: (size, batch, training images)}."""
    (lenet_size, lenet_batch), (resnet_size, resnet_batch) = CASES["lenet"], CASES["resnet18"]
    return {"lenet": (lenet_size, budget.batch(lenet_batch), budget.lenet_images),
            "resnet18": (resnet_size, budget.batch(resnet_batch), budget.resnet_steps * budget.batch(resnet_batch))}


def framework_params(net, size, batch, images, budget):
    """A hand-written loop's worker parameters (loops.raw_tf, raw_jax, raw_torch, bare_fit)."""
    return {"net": net, "size": size, "batch": batch, "train_images": images, "epochs": budget.epochs}


def kerascnn_params(net, size, batch, images, budget, jit="auto"):
    """loops.kerascnn_fit's parameters for the same configuration."""
    options = {"batch_size": batch, "image_size": size, "jit": jit, **(RELU_LENET if net == "lenet" else {})}
    return {"arch": net, "options": options, "train_images": images, "epochs": budget.epochs}


def section(runner):
    """kerascnn on each backend against a step written in that framework."""
    b = runner.budget
    nets = {}
    for net, (size, batch, images) in cases(b).items():
        p = framework_params(net, size, batch, images, b)
        compiled = b.compile_resnet or net == "lenet"
        k = kerascnn_params(net, size, batch, images, b)
        skipped = {"error": "skipped (--quick)"}
        nets[net] = {"size": size, "batch": batch, "rows": [
            ("tensorflow", runner.measure("kerascnn_fit", k, label=f"{net} kerascnn"),
             runner.measure("raw_tf", p, label=f"{net} raw tf.function")),
            ("jax", runner.measure("kerascnn_fit", k, "jax", label=f"{net} kerascnn"),
             runner.measure("raw_jax", p, "jax", label=f"{net} raw jax.jit")),
            ("torch", runner.measure("kerascnn_fit", k, "torch", label=f"{net} kerascnn"),
             runner.measure("raw_torch", {**p, "compile": False}, "torch", label=f"{net} torch eager")),
            ("torch, compiled", runner.measure("kerascnn_fit", kerascnn_params(net, size, batch, images, b, "on"),
                                               "torch", label=f"{net} kerascnn --jit on") if compiled else skipped,
             runner.measure("raw_torch", {**p, "compile": True}, "torch", label=f"{net} torch.compile")
             if compiled else skipped),
        ]}
    return {"nets": nets, "repeats": b.repeats}


def render(s):
    raw_names = {"tensorflow": "tf.function + GradientTape", "jax": "jax.jit(value_and_grad), Keras' layers",
                 "torch": "plain PyTorch loop, eager", "torch, compiled": "torch.compile"}
    rows, failed = [], []
    for net, n in s["nets"].items():
        for backend, k, raw in n["rows"]:
            label = "kerascnn `--jit on`" if backend == "torch, compiled" else "kerascnn"
            rows.append([f"{net} {n['size']} px b{n['batch']}", backend, raw_names[backend], rate(k), rate(raw),
                         ratio(k, raw), number(k.get("first_epoch_s")), number(raw.get("first_epoch_s"))])
            failed += [(f"{net}, {backend}, {label}", k), (f"{net}, {backend}, {raw_names[backend]}", raw)]
    return (
        f"kerascnn's fit path (as in section 2, with `KERAS_BACKEND` set) against a training step written in "
        f"the backend's own framework, on the same network, data in memory, hand-written AdamW with Keras' "
        f"constants, one warm-up epoch then the median of {s['repeats']} timed epochs:\n\n"
        "- **tensorflow**: a `tf.function` (XLA off, as `--jit auto` runs TensorFlow on a CPU) of a "
        "`GradientTape` over kerascnn's Keras model called directly: Keras' layers, not Keras' trainer;\n"
        "- **jax**: \"raw JAX with Keras' layers\": `jax.jit` of `jax.value_and_grad` over "
        "`model.stateless_call` (flax and optax are not installed, so the layers stay Keras'); kerascnn runs "
        "JAX with jit on;\n"
        "- **torch**: the plain PyTorch loop of section 2 (the network in `torch.nn`, NCHW); kerascnn runs "
        "torch eagerly under `--jit auto`; the last row compiles both (kerascnn `--jit on`, which makes Keras "
        "call `torch.compile`).\n\n"
        + table(["network", "backend", "raw step", "kerascnn images/s", "raw images/s", "kerascnn / raw",
                 "kerascnn warm-up s", "raw warm-up s"], rows, text=3)
        + failures(*failed))


def measure(steps, repeats):
    """This script's own measurement: one row per (backend, jit)."""
    rows = []
    # TensorFlow twice: as `--jit auto` runs it on a CPU (XLA off) and with XLA
    # on, the compiler JAX always uses.
    for backend, jit in (("tensorflow", "auto"), ("tensorflow", "on"), ("jax", "auto"), ("torch", "auto")):
        child = run_child([sys.executable, "-c", WORKER, str(steps), str(repeats), json.dumps(CASES), jit],
                          child_env(backend), timeout=7200)
        result = result_of(child, 7200)
        if "error" in result:
            print(f"{backend}: failed\n{child.err[-2000:]}", file=sys.stderr)
            continue
        rows.append(result)
    return rows


def print_table(rows):
    print("| backend | jit | LeNet 28 px b256, images/s | first epoch | resident batch | "
          "ResNet-18 32 px b64, images/s | first epoch | resident batch |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        cells = [f"{r['backend']} {r['version']}", "on" if r["jit"] else "off"]
        for arch in CASES:
            c = r[arch]
            cells += [f"{c['fit']:,.0f}", f"{c['first_epoch_s']:.1f} s", f"{c['resident']:,.0f}"]
        print("| " + " | ".join(cells) + " |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--output", default=str(RESULTS_DIR / "backends.json"))
    args = parser.parse_args()
    rows = measure(args.steps, args.repeats)
    print_table(rows)
    write_json(args.output, {**record(f"python benchmarks/backends.py --steps {args.steps} --repeats {args.repeats}"),
                             "cases": CASES, "results": rows}, indent=2)


if __name__ == "__main__":
    main()
