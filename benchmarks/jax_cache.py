"""JAX's persistent compilation cache (kerascnn.runtime.backend): wall time of
`kerascnn fit` then `kerascnn evaluate` under JAX with the cache off, with
a cold cache and with a warm one, measured in one run.

    python benchmarks/jax_cache.py [--arch resnet18] [--repeats 2]

Trains one epoch on 256 digits (the data is bundled with scikit-learn), so
that the time is mostly start-up and compilation, which is what the cache
saves. Prints a table and writes benchmarks/results/jax_cache.json.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import REPO, RESULTS_DIR, record, write_json


def timed(args, env, cwd):
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(REPO / "cli.py"), *args], capture_output=True, text=True, env=env,
                          cwd=cwd)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--output", default=str(RESULTS_DIR / "jax_cache.json"))
    args = parser.parse_args()
    fit = ["fit", "--backend", "jax", "--arch", args.arch, "--dataset", "digits", "--epochs", "1",
           "--train-size", "256", "--overwrite"]
    evaluate = ["evaluate", "--backend", "jax", f"saved_models/{args.arch}.keras"]
    times = {mode: {"fit": [], "evaluate": []} for mode in ("off", "cold", "warm")}
    with tempfile.TemporaryDirectory() as work:
        for repeat in range(args.repeats):
            cache = Path(work) / f"cache{repeat}"
            base = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
            base.update(CUDA_VISIBLE_DEVICES="", JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
                        KERASCNN_CACHE_DIR=str(cache))
            for mode in ("off", "cold", "warm"):  # cold fills the cache that warm reads
                env = dict(base, JAX_ENABLE_COMPILATION_CACHE="false") if mode == "off" else base
                times[mode]["fit"].append(timed(fit, env, work))
                times[mode]["evaluate"].append(timed(evaluate, env, work))
    median = {m: {c: statistics.median(v) for c, v in t.items()} for m, t in times.items()}
    report = {
        **record(f"python benchmarks/jax_cache.py --arch {args.arch} --repeats {args.repeats}"),
        "seconds": times,
        "median": median,
    }
    print(f"kerascnn under JAX, {args.arch}, 1 epoch on 256 digits, median of {args.repeats} (seconds):")
    print("| cache | fit | evaluate |")
    print("|---|---:|---:|")
    for mode, row in median.items():
        print(f"| {mode} | {row['fit']:.1f} | {row['evaluate']:.1f} |")
    write_json(args.output, report, indent=2)


if __name__ == "__main__":
    main()
