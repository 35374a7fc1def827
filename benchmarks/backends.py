"""Training throughput of LeNet and ResNet-18 on each Keras backend, fed by
kerascnn's tf.data training pipeline, measured in one run (each backend in
its own process, one after another, on the same machine).

    python benchmarks/backends.py [--steps 30] [--repeats 2]

Random uint8 images (speed does not depend on the pixels): LeNet 28x28x1
batch 256, ResNet-18 32x32x1 (its CPU size) batch 64, AdamW, `--jit auto`.
For each: `fit` throughput through the tf.data pipeline (median over the
epochs after the first), the first epoch's seconds (compilation included) and
`train_on_batch` throughput on one batch already in memory (the backend
without any input pipeline). TensorFlow runs twice, with XLA off (what
`--jit auto` picks on a CPU) and on (the compiler behind JAX). Prints a Markdown table and writes
benchmarks/results/backends.json.
"""

import argparse
from importlib import metadata
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

CASES = {"lenet": (28, 256), "resnet18": (32, 64)}

WORKER = """
import json, statistics, sys, time
import keras, numpy as np
from kerascnn.data import make_training_pipeline
from kerascnn.models import build_model
from kerascnn.optimizers import make_optimizer
from kerascnn.preparation import compile_model, resolve_jit

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
print(json.dumps(out))
"""


def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "backends.json"))
    args = parser.parse_args()
    rows = []
    # TensorFlow twice: as `--jit auto` runs it on a CPU (XLA off) and with XLA
    # on, the compiler JAX always uses.
    for backend, jit in (("tensorflow", "auto"), ("tensorflow", "on"), ("jax", "auto"), ("torch", "auto")):
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="",
                   JAX_PLATFORMS="cpu")
        proc = subprocess.run([sys.executable, "-c", WORKER, str(args.steps), str(args.repeats), json.dumps(CASES), jit],
                              capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            print(f"{backend}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    report = {
        "command": f"python benchmarks/backends.py --steps {args.steps} --repeats {args.repeats}",
        "machine": f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "keras": metadata.version("keras"),
        "cases": CASES,
        "results": rows,
    }
    print("| backend | jit | LeNet 28 px b256, images/s | first epoch | resident batch | "
          "ResNet-18 32 px b64, images/s | first epoch | resident batch |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        cells = [f"{r['backend']} {r['version']}", "on" if r["jit"] else "off"]
        for arch in CASES:
            c = r[arch]
            cells += [f"{c['fit']:,.0f}", f"{c['first_epoch_s']:.1f} s", f"{c['resident']:,.0f}"]
        print("| " + " | ".join(cells) + " |")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
