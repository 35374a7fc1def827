"""Runs of a study in one process (Keras' state cleared between them) against
one process per run: time per run and memory growth.

    python benchmarks/study_memory.py --runs 12

Trains the same small run (LeNet on the digits, 1 epoch) `--runs` times
through kerascnn.studies.study in this process, reading the resident memory (RSS)
after each, then `--subprocess-runs` times as separate `kerascnn fit`
processes. Writes benchmarks/results/study_memory.json.
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import REPO, RESULTS_DIR, record, write_json

RUN = dict(dataset="digits", epochs=1, train_size=512, activation="relu", pool="max")


def rss_mb():
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return kb / 1024


def in_process(runs, folder):
    from kerascnn.studies.study import Study, Variant, run_study

    marks = []

    def echo(line):
        if line.startswith("["):
            marks.append((time.perf_counter(), rss_mb()))

    study = Study("memory", RUN, (Variant("lenet", {}),), tuple(range(runs)))
    start = time.perf_counter()
    run_study(study, folder, echo=echo)
    times = [b[0] - a[0] for a, b in zip([(start, 0)] + marks, marks)]
    return {"seconds_per_run": times, "rss_mb_after_each_run": [round(m[1], 1) for m in marks]}


def per_process(runs, folder):
    times = []
    for seed in range(runs):
        args = [sys.executable, str(REPO / "cli.py"), "fit", *[f"--{k.replace('_', '-')}={v}" for k, v in RUN.items()],
                "--seed", str(seed), "--output", str(Path(folder) / f"s{seed}")]
        start = time.perf_counter()
        subprocess.run(args, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return {"seconds_per_run": times}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=12)
    parser.add_argument("--subprocess-runs", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        one = in_process(args.runs, Path(work) / "study")
        many = per_process(args.subprocess_runs, Path(work) / "fits")
    rss = one["rss_mb_after_each_run"]
    median = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    result = {
        **record(f"python benchmarks/study_memory.py --runs {args.runs} --subprocess-runs {args.subprocess_runs}"),
        "run": RUN, "in_process": one, "per_process": many,
        "median_seconds_in_process": round(median(one["seconds_per_run"][1:]), 2),
        "median_seconds_per_process": round(median(many["seconds_per_run"]), 2),
        "rss_growth_mb_per_run": round((rss[-1] - rss[1]) / max(len(rss) - 2, 1), 1),
    }
    write_json(RESULTS_DIR / "study_memory.json", result)
    print(f"in one process: {result['median_seconds_in_process']} s a run (median after the first), RSS "
          f"{rss[0]:.0f} MB after run 1, {rss[-1]:.0f} MB after run {len(rss)} "
          f"({result['rss_growth_mb_per_run']} MB a run after the first)")
    print(f"one process per run: {result['median_seconds_per_process']} s a run (median)")


if __name__ == "__main__":
    main()
