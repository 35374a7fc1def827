"""The jax/torch input path against the tf.data path it replaced, on this CPU.

    python benchmarks/input_paths.py            # about 6 minutes on 2 cores
    python benchmarks/input_paths.py --quick    # seconds: a smoke test
    python benchmarks/input_paths.py --arch lenet --repeat 3   # each path 3 times, alternating

For each backend (jax, torch) and network (LeNet at 28 px, batch 256, on
Fashion-MNIST's 54,000 training images; ResNet-18 at 32 px, batch 64, on
2,048 of them), `model.fit` with crop+flip augmentation fed two ways, each in
its own process, one after the other in one run:
  tf.data   kerascnn.data.tf_pipeline.make_training_pipeline (tf.data: gather, scale,
            augment with Keras' layers in TensorFlow, normalize) into the
            network, as every backend trained before
  inputs    kerascnn.data.host.TrainingBatches (numpy) into a TrainingModel:
            scaling, augmentation and normalization in the training step
images/s of the timed epochs (after one warm-up epoch) and their ratio (with
--repeat N the paths alternate N times and each keeps its median), into
benchmarks/results/input_paths.json. Needs TensorFlow (for the old path) and
the data in $KERASCNN_DATA_DIR or ../shared/data.
"""

import argparse
import json
import os
import sys
from pathlib import Path

from harness import REPO, RESULTS_DIR, child_env, results_of, run_child, write_rows

RESULTS = RESULTS_DIR / "input_paths.json"
CASES = {"lenet": (28, 256, None), "resnet18": (32, 64, 2048)}

CHILD = r"""
import json, sys, time
import keras, numpy as np
from kerascnn.data.datasets import load_dataset
from kerascnn.data.tf_pipeline import make_training_pipeline
from kerascnn.data.host import TrainingBatches
from kerascnn.training.trainer import TrainingModel
from kerascnn.models import build_model
from kerascnn.training.plan import compile_model, resolve_jit
from kerascnn.data.device_transforms import InputTransform
from kerascnn.data.tf_augment import Augmenter

path, arch, size, batch, images, epochs = json.loads(sys.argv[1])
data = load_dataset("fashion_mnist", train_size=images)
mean, std = data.stats()
keras.utils.set_random_seed(0)
options = {"activation": "relu", "pool": "max"} if arch == "lenet" else {}
net = build_model(arch, input_shape=(size, size, 1), num_classes=10, **options)
jit = resolve_jit("auto")
if path == "tf.data":
    stream, steps = make_training_pipeline(data.x_train, data.y_train, input_shape=(size, size, 1), mean=mean,
                                           std=std, batch_size=batch, epochs=epochs,
                                           augment=Augmenter(("crop", "flip"), size))
    model = net
    compile_model(model, keras.optimizers.AdamW(1e-3), jit)
else:
    batches = TrainingBatches(data.x_train, data.y_train, batch_size=batch, epochs=epochs, augment=("crop", "flip"),
                              image_size=size)
    transform = InputTransform((size, size, 1), mean, std, augment=("crop", "flip"))
    stream, steps = batches.stream(), batches.steps
    compile_model(net, keras.optimizers.AdamW(1e-3), jit)
    model = TrainingModel(net, transform)
    compile_model(model, net.optimizer, jit)

class Timer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()
    def on_epoch_end(self, epoch, logs=None):
        seconds.append(time.perf_counter() - self.start)

seconds = []
model.fit(stream, steps_per_epoch=steps, epochs=epochs, verbose=0, callbacks=[Timer()])
n = len(data.x_train)
print("RESULT " + json.dumps({"images_per_s": n * (epochs - 1) / sum(seconds[1:]), "first_epoch_s": seconds[0],
                              "epoch_s": seconds[1:], "images": n, "jit_compile": jit}))
"""


def measure(backend, path, arch, epochs, quick):
    size, batch, images = CASES[arch]
    images = 512 if quick else images
    env = child_env(backend, os.environ.get("KERASCNN_DATA_DIR") or REPO.parent / "shared" / "data")
    child = run_child([sys.executable, "-c", CHILD, json.dumps([path, arch, size, batch, images, epochs])], env,
                      timeout=1800, cwd=REPO)
    found = results_of(child.out)
    if child.code or not found:
        return {"error": child.err.strip().splitlines()[-1:] or [f"exit {child.code}"]}
    return found[-1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--results", type=Path, default=None)
    parser.add_argument("--backend", nargs="+", default=["jax", "torch"], choices=["jax", "torch"])
    parser.add_argument("--arch", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--repeat", type=int, default=1, help="alternate the two paths this many times")
    args = parser.parse_args()
    epochs = 2 if args.quick else 3
    rows = []
    for backend in args.backend:
        for arch in args.arch:
            row = {"backend": backend, "arch": arch, "size": CASES[arch][0], "batch": CASES[arch][1]}
            tries = {"tf.data": [], "inputs": []}
            for _ in range(args.repeat):
                for path in tries:
                    tries[path].append(measure(backend, path, arch, epochs, args.quick))
            for path, results in tries.items():
                good = sorted((r for r in results if "error" not in r), key=lambda r: r["images_per_s"])
                row[path] = good[len(good) // 2] if good else results[-1]
                if args.repeat > 1:
                    row[path]["tries_images_per_s"] = [r.get("images_per_s") for r in results]
            if "error" not in row["tf.data"] and "error" not in row["inputs"]:
                row["ratio"] = round(row["inputs"]["images_per_s"] / row["tf.data"]["images_per_s"], 2)
            print(json.dumps(row), flush=True)
            rows.append(row)
    write_rows("input_paths.py", rows, args.results or (Path("/tmp/input_paths.json") if args.quick else RESULTS))


if __name__ == "__main__":
    main()
