"""Training throughput of LeNet and ResNet-18 on each Keras backend, fed by
kerascnn's tf.data training pipeline, measured in one run (each backend in
its own process, one after another, on the same machine).

    python benchmarks/backends.py [--steps 30] [--repeats 2]

Random uint8 images (speed does not depend on the pixels): LeNet 28x28x1
batch 256, ResNet-18 32x32x1 (its CPU size) batch 64. Prints a Markdown
table and writes benchmarks/results/backends.json.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

CASES = {"lenet": (28, 256), "resnet18": (32, 64)}

WORKER = """
import json, sys, time
import keras, numpy as np
from kerascnn.data import make_training_pipeline
from kerascnn.models import build_model
from kerascnn.optimizers import make_optimizer
from kerascnn.train import compile_model, resolve_jit

steps, repeats = int(sys.argv[1]), int(sys.argv[2])
cases = json.loads(sys.argv[3])
out = {"backend": keras.backend.backend(), "jit": resolve_jit("auto")}
rng = np.random.default_rng(0)
for arch, (size, batch) in cases.items():
    n = batch * steps
    x = rng.integers(0, 256, size=(n, 28, 28, 1), dtype=np.uint8)
    y = rng.integers(0, 10, size=n)
    keras.utils.set_random_seed(0)
    model = build_model(arch, input_shape=(size, size, 1), num_classes=10)
    compile_model(model, make_optimizer("adamw"))
    ds, per_epoch = make_training_pipeline(x, y, input_shape=(size, size, 1), mean=[0.5], std=[0.25],
                                           batch_size=batch, epochs=repeats + 1)
    timer = []
    class T(keras.callbacks.Callback):
        def on_epoch_begin(self, e, logs=None): self.t = time.perf_counter()
        def on_epoch_end(self, e, logs=None): timer.append(time.perf_counter() - self.t)
    model.fit(ds, steps_per_epoch=per_epoch, epochs=repeats + 1, verbose=0, callbacks=[T()], shuffle=False)
    out[arch] = n / min(timer[1:])  # the first epoch compiles
print(json.dumps(out))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "backends.json"))
    args = parser.parse_args()
    rows = []
    for backend in ("tensorflow", "jax", "torch"):
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="",
                   JAX_PLATFORMS="cpu")
        proc = subprocess.run([sys.executable, "-c", WORKER, str(args.steps), str(args.repeats), json.dumps(CASES)],
                              capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            print(f"{backend}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    report = {
        "command": f"python benchmarks/backends.py --steps {args.steps} --repeats {args.repeats}",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "cases": CASES,
        "results": rows,
    }
    print("| backend | XLA/jit | LeNet 28px b256 (images/s) | ResNet-18 32px b64 (images/s) |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['backend']} | {'on' if r['jit'] else 'off'} | {r['lenet']:.0f} | {r['resnet18']:.0f} |")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
