"""Section "scale-out" of performance.py: one process against two on this
machine: fit under MultiWorkerMirroredStrategy on 1 and 2 workers (127.0.0.1,
TF_CONFIG) against plain fit, and a study in one process against two
`--shard` processes.
"""

import json
import os
import sys
import tempfile
import time
from pathlib import Path

from harness import REPO, Child, child_env, error_of, results_of, run_child, run_children, summary
from loops import RELU_LENET, rates
from report import failures, number, rate, ratio, table


FIT_PROCESS = r"""
import json, sys
from kerascnn.training.fit import fit
r = fit(**json.loads(sys.argv[1]), verbose=0)
print("RESULT " + json.dumps({"seconds": [row["seconds"] for row in r.history], "chief": r.chief,
                              "images": r.config["train_images"], "replicas": r.config.get("replicas"),
                              "steps_per_execution": r.config.get("steps_per_execution"),
                              "test_accuracy": r.test_accuracy}))
"""


def cluster_envs(runner, workers):
    """Each worker's environment: TF_CONFIG naming `workers` free ports on 127.0.0.1."""
    import socket

    sockets = [socket.socket() for _ in range(workers)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    cluster = [f"127.0.0.1:{sock.getsockname()[1]}" for sock in sockets]
    for sock in sockets:
        sock.close()
    return [dict(child_env("tensorflow", runner.data_dir), TF_CONFIG=json.dumps(
        {"cluster": {"worker": cluster}, "task": {"type": "worker", "index": i}})) for i in range(workers)]


def fit_processes(runner, options, workers, label):
    """`fit(**options)` in `workers` processes at once (a MultiWorkerMirroredStrategy cluster when
    options ask for it, else one plain process): the chief's epoch times, images/s after the first epoch."""
    with tempfile.TemporaryDirectory(prefix="kerascnn-perf-") as out:
        options = {**options, "output": out}
        envs = cluster_envs(runner, workers) if options.get("distribute") else [child_env("tensorflow",
                                                                                         runner.data_dir)]
        load = os.getloadavg()[0]
        done = run_children([([sys.executable, "-c", FIT_PROCESS, json.dumps(options)], env, None) for env in envs],
                            runner.budget.timeout)
    failed = [child for child in done if child.code != 0]
    if failed:
        result = {"error": error_of(failed[0], runner.budget.timeout)}
    else:
        chief = next(r for r in (results_of(child.out)[-1] for child in done) if r["chief"])
        result = {**chief, **rates(chief["seconds"][0], chief["seconds"][1:], chief["images"]),
                  "processes": workers, "wall_s": round(max(child.wall for child in done), 2),
                  "peak_rss_mb": [round(child.rss) for child in done], "load_before": round(load, 2)}
    print(f"  {label}: {summary({**result, 'peak_rss_mb': sum(result.get('peak_rss_mb', [0]))})}", flush=True)
    return result


def study_processes(runner, shards, images):
    """A four-run study (LeNet, ReLU and sigmoid, 2 seeds, 1 epoch) as one `kerascnn study` process or
    as `shards` `--shard i/N` processes at once, then `kerascnn report`: the wall time to the report."""
    with tempfile.TemporaryDirectory(prefix="kerascnn-perf-") as work:
        base = [sys.executable, str(REPO / "cli.py"), "study", "--arch", "lenet", "--vary", "activation=relu,sigmoid",
                "--seeds", "2", "--epochs", "1", "--train-size", str(images), "--dataset", "fashion_mnist",
                "--output", str(Path(work) / "study")]
        env = child_env("tensorflow", runner.data_dir)
        jobs = [(base + (["--shard", f"{i}/{shards}"] if shards > 1 else []), env, work) for i in range(shards)]
        load = os.getloadavg()[0]
        start = time.perf_counter()
        done = run_children(jobs, runner.budget.timeout)
        report = run_child([sys.executable, str(REPO / "cli.py"), "report", str(Path(work) / "study")], env,
                           runner.budget.timeout, cwd=work) if shards > 1 else Child(0, "", "", 0, 0)
        wall = time.perf_counter() - start
        failed = [child for child in [*done, report] if child.code != 0]
        rows = (Path(work) / "study" / "results.csv").read_text().splitlines() if not failed else []
    if failed:
        result = {"error": error_of(failed[0], runner.budget.timeout)}
    else:
        result = {"wall_s": round(wall, 2), "processes": shards, "runs": 4, "variants": len(rows) - 1,
                  "shard_wall_s": [round(child.wall, 2) for child in done], "report_s": round(report.wall, 2),
                  "peak_rss_mb": [round(child.rss) for child in done], "load_before": round(load, 2)}
    print(f"  study in {shards} process(es): {result.get('error') or str(result['wall_s']) + ' s'}", flush=True)
    return result


def section(runner):
    """fit on one and two MultiWorkerMirroredStrategy workers; a study in one process and in two shards."""
    b = runner.budget
    nets = {}
    for net, (batch, images, n_epochs) in b.scale_out.items():
        options = {"config": net, "dataset": "fashion_mnist", "epochs": n_epochs, "batch_size": batch,
                   **({"train_size": images} if images else {}), **(RELU_LENET if net == "lenet" else {})}
        nets[net] = {"batch": batch, "epochs": n_epochs, "rows": [
            ("one process, no strategy", fit_processes(runner, options, 1, f"{net} plain fit")),
            ("one process, no strategy, 1 step a call",
             fit_processes(runner, {**options, "steps_per_execution": 1}, 1, f"{net} plain fit, 1 step a call")),
            ("1 worker", fit_processes(runner, {**options, "distribute": "multi-worker"}, 1, f"{net} 1 worker")),
            ("2 workers", fit_processes(runner, {**options, "distribute": "multi-worker"}, 2, f"{net} 2 workers")),
        ]}
    studies = [study_processes(runner, shards, b.study_images) for shards in (1, 2)]
    return {"nets": nets, "studies": studies, "study_images": b.study_images}


def render(s):
    rows = []
    for net, n in s["nets"].items():
        base = dict(n["rows"])["one process, no strategy, 1 step a call"]
        for label, r in n["rows"]:
            rows.append([net, label, n["batch"], number(r.get("images")), rate(r), ratio(r, base),
                         number(r.get("test_accuracy") and 100 * r["test_accuracy"]),
                         " + ".join(f"{x:,}" for x in r.get("peak_rss_mb", [])) or "–"])
    one, two = s["studies"]
    studies = [[f"{r['processes']} process{'es' * (r['processes'] > 1)}", number(r.get("wall_s")),
                ", ".join(f"{x:.1f}" for x in r.get("shard_wall_s", [])) or "–", number(r.get("report_s")),
                ratio({"images_per_s": 1 / r["wall_s"]}, {"images_per_s": 1 / one["wall_s"]})
                if "wall_s" in r and "wall_s" in one else "–"] for r in (one, two)]
    return ("`kerascnn fit` in separate processes on this one machine: plain (no strategy), and under "
            "`--distribute multi-worker` (tf.distribute.MultiWorkerMirroredStrategy) with TF_CONFIG naming 1 or "
            "2 workers on 127.0.0.1, each worker its own process, the batch size global (each of 2 workers "
            "computes half of each batch). LeNet (ReLU, max pooling) on all 54,000 training images of "
            "Fashion-MNIST, ResNet-18 at 32 px on a subset; images/s of the chief's epochs after the first, "
            "validation included; the ratio is to one plain process at 1 step a call, which is what "
            "the strategy runs.\n\n"
            + table(["network", "how", "batch", "images an epoch", "images/s", "ratio", "test accuracy %",
                     "peak RSS MB"], rows, text=2)
            + f"\n\nA study of 4 runs (LeNet, `--vary activation=relu,sigmoid --seeds 2`, 1 epoch, "
            f"{s['study_images']:,} training images each) as one `kerascnn study` process, and as two "
            "`--shard i/2` processes started together on the same folder followed by `kerascnn report` (which "
            "merges them); the time to the finished report:\n\n"
            + table(["study", "wall s", "each shard s", "report s", "speed-up"], studies)
            + failures(*((f"{net} {label}", r) for net, n in s["nets"].items() for label, r in n["rows"]),
                       *((f"study, {r.get('processes')} processes", r) for r in s["studies"])))
