"""XLA on or off: LeNet training throughput with `jit_compile` True and
False, measured in one process, interleaved, so that the ratio is fair on a
noisy machine. Behind the CPU default of `kerascnn fit --jit auto`.

    python benchmarks/jit.py [--arch lenet] [--steps 60] [--repeats 3] [--batch-size 256]

Uses random 28x28 images (speed does not depend on the pixels). Prints a
table and writes benchmarks/results/jit.json.
"""

import argparse
import os
import time

from harness import RESULTS_DIR, record, write_json

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def images_per_second(model, x, y, steps, batch_size):
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size).repeat().prefetch(2)
    model.fit(ds, steps_per_epoch=5, epochs=1, verbose=0, shuffle=False)  # compile and warm up
    start = time.perf_counter()
    model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False)
    return steps * batch_size / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="lenet")
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--output", default=str(RESULTS_DIR / "jit.json"))
    args = parser.parse_args()

    import keras
    import numpy as np

    from kerascnn.models import build_model
    from kerascnn.optim.optimizers import make_optimizer
    from kerascnn.training.plan import compile_model

    rng = np.random.default_rng(0)
    n = args.batch_size * 8
    x = rng.normal(size=(n, args.image_size, args.image_size, 1)).astype("float32")
    y = rng.integers(0, 10, size=n).astype("int32")
    results = {"off": [], "on": []}
    for _ in range(args.repeats):
        for mode in ("off", "on"):
            keras.utils.set_random_seed(0)
            model = build_model(args.arch, input_shape=x.shape[1:], num_classes=10, activation="relu")
            compile_model(model, make_optimizer("adamw"), jit_compile=mode == "on")
            results[mode].append(images_per_second(model, x, y, args.steps, args.batch_size))
            keras.backend.clear_session()
    median = {m: float(np.median(v)) for m, v in results.items()}
    report = {
        **record("python benchmarks/jit.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
                                                        if k != "output")),
        "backend": keras.backend.backend(),
        "images_per_second": results,
        "median": median,
        "xla_speedup": median["on"] / median["off"],
    }
    print(f"{args.arch} {args.image_size}px batch {args.batch_size}, {keras.backend.backend()} backend, "
          f"median of {args.repeats}:")
    print(f"  jit off: {median['off']:8.0f} images/s")
    print(f"  jit on:  {median['on']:8.0f} images/s   (on/off = {report['xla_speedup']:.2f})")
    write_json(args.output, report, indent=2)


if __name__ == "__main__":
    main()
