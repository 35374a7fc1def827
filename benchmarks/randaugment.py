"""RandAugment per batch: Keras' own `transform_images` (all eleven
operations computed for each of its two, the drawn one kept with `where`)
against `kerascnn.data.tricks.drawn_operations` (only the drawn ones, by a
switch), on each backend, the same draws for both, interleaved in one
process. Behind `kerascnn fit --randaugment`.

    python benchmarks/randaugment.py                 # about 2 minutes on 2 cores
    python benchmarks/randaugment.py --quick         # seconds: a smoke test

A batch of 256 random 28x28x1 images in [0, 1] (the time does not depend on
the pixels), each call with a new seed pair (new operations drawn); as it
runs in training: inside a `tf.function` on tensorflow (tf.data maps run as
graphs), inside `jax.jit` on jax, eagerly on torch. Milliseconds a batch,
the median and the mean of the timed calls after warm-up ones (the mean is
what an epoch pays: some operations, equalization above all, cost far more
than others), into benchmarks/results/randaugment.json.
"""

import argparse
import json
import sys
import time
from pathlib import Path

from harness import RESULTS_DIR, child_env, print_result, result_of, run_child, write_rows

RESULTS = RESULTS_DIR / "randaugment.json"
BACKENDS = ("tensorflow", "jax", "torch")


def measure(batch, calls, warmup):
    """In a child: ms a batch of each way, the same seeds for both."""
    import keras
    import numpy as np

    from kerascnn.data import tricks

    layer = tricks.keras_layers()[2]

    def keras_own(x, seed):  # kerascnn's RandAugment before drawn_operations
        seeds = tricks.batch_seed(keras.ops.cast(seed, "uint32"))
        object.__setattr__(layer, "_get_seed_generator", lambda backend=None: seeds)
        try:
            return layer.transform_images(x, layer.get_random_transformation(x, training=True, seed=seeds))
        finally:
            object.__delattr__(layer, "_get_seed_generator")

    ways = {"keras_own": keras_own, "drawn_only": tricks.rand_augment}
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        ways = {k: tf.function(f) for k, f in ways.items()}
    elif backend == "jax":
        import jax

        ways = {k: jax.jit(f) for k, f in ways.items()}
    x = keras.ops.convert_to_tensor(np.random.default_rng(0).random((batch, 28, 28, 1)).astype(np.float32))
    times = {k: [] for k in ways}
    for i in range(warmup + calls):
        seed = keras.ops.convert_to_tensor(np.array([i, 7 * i + 1], np.int32))
        for name, way in ways.items():
            start = time.perf_counter()
            keras.ops.convert_to_numpy(way(x, seed))  # waits for the result
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    ms = {k: round(1000 * float(np.median(v)), 2) for k, v in times.items()}
    mean = {k: round(1000 * float(np.mean(v)), 2) for k, v in times.items()}
    return {"backend": backend, "ms_per_batch": ms, "speedup": round(ms["keras_own"] / ms["drawn_only"], 2),
            "mean_ms_per_batch": mean, "mean_speedup": round(mean["keras_own"] / mean["drawn_only"], 2),
            "batch": batch, "calls": calls, "warmup": warmup}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--backend", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--results", type=Path, default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print_result(measure(**json.loads(args.child)))
        return
    params = {"batch": 32, "calls": 3, "warmup": 1} if args.quick else {"batch": 256, "calls": 20, "warmup": 3}
    rows = []
    for backend in args.backend:
        child = run_child([sys.executable, __file__, "--child", json.dumps(params)], child_env(backend), timeout=900)
        row = result_of(child, 900)
        row.setdefault("backend", backend)
        print(json.dumps(row), flush=True)
        rows.append(row)
    write_rows("randaugment.py", rows, args.results or (Path("/tmp/randaugment.json") if args.quick else RESULTS))


if __name__ == "__main__":
    main()
