"""The NumPy LeNet-5 (kerascnn.scratch) against the Keras one it mirrors, on this CPU.

    python benchmarks/scratch.py               # about 4 minutes on 2 cores
    python benchmarks/scratch.py --quick       # seconds: a smoke test
    python benchmarks/scratch.py --write-docs  # docs/results.md's block from the results

Times, one after the other in one run, on MNIST (batch 200, 32x32 inputs):
  loops   the report's convolution and pooling (a loop over output pixels):
          seconds per training iteration (forward, backward, Adam), median of
          `--repeat` rounds, each `--steps` iterations after one warm-up
  im2col  the same network with im2col convolutions and whole-window pooling
  keras   `kerascnn fit` with the lenet5-mnist preset's settings on tensorflow,
          in a child process: the seconds of its epochs after the first
          (which compiles)
and a NumPy epoch as 295 iterations (59,000 images) at that rate. Nothing
else should run meanwhile. Writes benchmarks/results/scratch.json.
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from harness import REPO, RESULTS_DIR, child_env, machine_text, read_json, record, run_child, write_json
from report import table, write_block

RESULTS = RESULTS_DIR / "scratch.json"
DOC = REPO / "docs" / "results.md"
ITERATIONS_PER_EPOCH = 295  # 59,000 training images in batches of 200
KERAS_FIT = ["fit", "--arch", "lenet", "--dataset", "mnist", "--activation", "relu", "--pool", "max", "--padding",
             "valid", "--image-size", "32", "--resize", "pad", "--optimizer", "adam", "--lr", "1e-3", "--batch-size",
             "200", "--val-size", "1000", "--sampling", "sequential"]


def numpy_rates(steps, repeat, batch=200):
    """Median seconds per iteration of each path, the paths alternating."""
    sys.path.insert(0, str(REPO))
    from kerascnn.scratch import LeNet5, Solver
    from kerascnn.scratch.experiment import load_scratch_data

    _, arrays = load_scratch_data("mnist")
    times = {"loops": [], "im2col": []}
    for _ in range(repeat):
        for path in times:
            solver = Solver(LeNet5(fast=path == "im2col"), arrays, batch_size=batch, print_every=0)
            x, y = arrays["x_train"], arrays["y_train"]
            solver.step(x[:batch], y[:batch])  # warm-up
            start = time.perf_counter()
            for i in range(1, steps[path] + 1):
                solver.step(x[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch])
            times[path].append((time.perf_counter() - start) / steps[path])
            print(f"{path}: {times[path][-1] * 1000:.0f} ms per iteration", flush=True)
    return {path: {"seconds_per_iteration": statistics.median(t), "rounds": t} for path, t in times.items()}


def keras_epoch(epochs, train_size=None):
    """Seconds per epoch of `kerascnn fit` (epochs after the first), tensorflow."""
    with tempfile.TemporaryDirectory() as out:
        argv = [sys.executable, str(REPO / "cli.py"), *KERAS_FIT, "--epochs", str(epochs), "--output", out,
                "--name", "lenet5", *(["--train-size", str(train_size)] if train_size else [])]
        child = run_child(argv, child_env("tensorflow"), timeout=1800, cwd=REPO)
        if child.code != 0:
            sys.exit(f"kerascnn fit failed:\n{child.out[-2000:]}")
        history = json.loads((Path(out) / "lenet5.history.json").read_text())
    seconds = [row["seconds"] for row in history[1:]]
    return {"seconds_per_epoch": statistics.median(seconds), "epochs": seconds, "command": "kerascnn " + " ".join(KERAS_FIT)}


def write_docs(path=RESULTS):
    r = read_json(path)
    if r is None:
        sys.exit(f"no results in {path}: run python benchmarks/scratch.py first")
    keras_s = r["keras"]["seconds_per_epoch"]
    rows = [[f"NumPy, {name}", f"{p['seconds_per_iteration'] * 1000:.0f}",
             f"{p['seconds_per_iteration'] * ITERATIONS_PER_EPOCH:.0f}",
             f"{p['seconds_per_iteration'] * ITERATIONS_PER_EPOCH / keras_s:.0f}x"] for name, p in r["numpy"].items()]
    rows.append(["Keras (`kerascnn fit`, tensorflow)", f"{keras_s / ITERATIONS_PER_EPOCH * 1000:.0f}",
                 f"{keras_s:.1f}", "1x"])
    loops, im2col = (r["numpy"][k]["seconds_per_iteration"] for k in ("loops", "im2col"))
    text = (table(["LeNet-5, MNIST, batch 200", "ms per iteration", "s per epoch (295 iterations)",
                   "against Keras"], rows)
            + f"\n\nim2col is **{loops / im2col:.1f}x** faster than the loops. NumPy rows: median of "
              f"{len(r['numpy']['loops']['rounds'])} rounds; Keras: median of its epochs after the first (its "
              f"validation pass included), per iteration that over 295. "
              f"Measured by `python benchmarks/scratch.py` ({machine_text(r['machine'])}, {r['date']}).\n")
    write_block(DOC, "scratch-speed", text)
    print(f"wrote {DOC}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few iterations and a small fit: a smoke test")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    if args.write_docs:
        return write_docs(args.results)
    steps = {"loops": 2, "im2col": 3} if args.quick else {"loops": 20, "im2col": 60}
    results = record("python benchmarks/scratch.py" + (" --quick" if args.quick else ""))
    results["numpy"] = numpy_rates(steps, 1 if args.quick else args.repeat)
    results["keras"] = keras_epoch(2 if args.quick else 4, train_size=2000 if args.quick else None)
    if not args.quick:
        write_json(args.results, results)
    print(json.dumps({k: v for k, v in results.items() if k in ("numpy", "keras")}, indent=1))


if __name__ == "__main__":
    main()
