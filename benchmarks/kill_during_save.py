"""Kill a process at random moments while it saves through kerascnn.runs.storage, and
check that every file left is the previous complete one or the new one.

    python benchmarks/kill_during_save.py --kills 200 --seed 0

A saver process writes, over and over with a new number k each round, the
files of a run the way `kerascnn fit` does: a LeNet `.keras` with its state
inside (`storage.save_model`, every weight set to k, state {"k": k}), the same
file rewritten by `storage.update_state`, a history CSV, a run.json and an
activations .npz. It reports each step on a pipe ("begin", fsync, rename,
"end"), so that its last word says where it died. This process waits a
random time (either anywhere over about two rounds, or within the measured
duration of one chosen save) and sends SIGKILL. Then it loads what is left:
the model with `storage.load_model` (Keras' safe mode), the rest with csv, json
and numpy; a file must hold either what was there before or the complete new
round, and may be missing only if it was never saved. The folder is reused
(leftover temporary files must not disturb a loader and are removed by the
next save of the same file) and now and then emptied, to kill the first save.

Savers are forked from this process, which has imported Keras once: a kill
costs milliseconds, not a Python and Keras start-up. Keras runs on its numpy
backend here because forking a process that runs TensorFlow or JAX is
unsafe; the files are written by the same code on every backend. Prints a
summary and writes benchmarks/results/kill_during_save.json; exits 1 if any
file was broken.
"""

import argparse
import csv
import json
import os
import random
import select
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ["KERAS_BACKEND"] = "numpy"  # before Keras: see above
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np

from harness import machine_text  # noqa: E402
from kerascnn.runs import storage  # noqa: E402

STEPS = ("model", "state", "csv", "json", "npz")  # one round, in this order
FILES = {"model": "run.keras", "state": "run.keras", "csv": "run.history.csv", "json": "run.run.json",
         "npz": "run.activations.npz"}
ROWS = 200  # history rows and JSON entries, so that those saves take some time too
PHASES = {"b": "writing the temporary file", "f": "flushing it (fsync)", "r": "renaming it",
          "R": "renamed, not yet returned", "e": "between saves"}


def make_model():
    from kerascnn.models import build_model

    return build_model("lenet", input_shape=(28, 28, 1), num_classes=10)


def save(step, folder, model, k):
    """Write the file of `step` for round k, through kerascnn.runs.storage."""
    path = folder / FILES[step]
    if step == "model":
        model.set_weights([np.full(w.shape, k, w.dtype) for w in model.get_weights()])
        storage.save_model(model, path, state={"k": k})
    elif step == "state":
        storage.update_state(path, status=f"checked {k}")
    elif step == "csv":
        storage.write_csv(path, [{"epoch": i + 1, "k": k, "loss": 1.0 / (i + 1)} for i in range(ROWS)])
    elif step == "json":
        storage.write_json(path, {"k": k, "history": [{"epoch": i + 1, "k": k} for i in range(ROWS)]})
    else:
        storage.write_npz(path, {"k": np.array(k), "maps": np.full((ROWS, 8, 8), k, np.float16)})


def content(step, k):
    """What the file of `step` holds once round k has saved it."""
    return (k, None) if step == "model" else (k, f"checked {k}") if step == "state" else k


def saver(folder, model, first_k, fd):
    """The body of a forked saver: rounds k = first_k, first_k + 1, ...,
    each step announced on `fd`. Never returns."""
    def say(word):
        os.write(fd, f"{word}\n".encode())

    real_fsync, real_replace = storage._fsync, os.replace

    def fsync(path):
        say("f")
        real_fsync(path)

    def replace(src, dst):
        say("r")
        real_replace(src, dst)
        say("R")

    storage._fsync, os.replace = fsync, replace
    try:
        for k in range(first_k, first_k + 10**6):
            for step in STEPS:
                say(f"b {step} {k}")
                save(step, folder, model, k)
                say(f"e {step} {k}")
    except BaseException as e:  # noqa: BLE001 - report it, whatever it is
        say(f"x {type(e).__name__}: {e}")
    finally:
        os._exit(1)


def read_file(step, path):
    """What the file holds (as content() says it), None if absent; raises
    if it is broken."""
    if not path.exists():
        return None
    if step in ("model", "state"):
        weights = storage.load_model(path).get_weights()
        values = set(np.unique(np.concatenate([w.ravel() for w in weights])).tolist())
        state = storage.read_state(path) or {}
        if len(values) != 1 or values != {state.get("k")}:
            raise ValueError(f"weights {sorted(values)[:3]} but state {state}")
        return state["k"], state.get("status")
    if step == "csv":
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        ks = {r["k"] for r in rows}
        if [int(r["epoch"]) for r in rows] != list(range(1, ROWS + 1)) or len(ks) != 1:
            raise ValueError(f"{len(rows)} rows, k in {sorted(ks)[:3]}")
        return int(ks.pop())
    if step == "json":
        obj = storage.read_json(path)
        if len(obj["history"]) != ROWS or {r["k"] for r in obj["history"]} != {obj["k"]}:
            raise ValueError("history incomplete or mixed")
        return obj["k"]
    with np.load(path) as f:
        k, maps = int(f["k"]), f["maps"]
    if maps.shape != (ROWS, 8, 8) or not (maps == k).all():
        raise ValueError(f"maps {maps.shape} not all {k}")
    return k


def check(folder, known, words):
    """Compare each file with what it may hold after the kill: the content
    known before (None: never saved) or that of the save under way. Updates
    `known`; returns the problems and what was found, by file."""
    under_way = {}
    for word in words:
        if word[0] in "be":
            _, step, k = word.split()
            under_way[FILES[step]] = content(step, int(k)) if word[0] == "b" else None
            if word[0] == "e":
                known[FILES[step]] = content(step, int(k))
    problems, outcomes = [], {}
    for step in ("model", "csv", "json", "npz"):
        name = FILES[step]
        try:
            found = read_file(step, folder / name)
        except Exception as e:  # noqa: BLE001 - any failure to read it is a broken file
            problems.append(f"{name}: broken: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
            continue
        if found == known.get(name):
            outcomes[name] = "absent, never saved" if found is None else "previous"
        elif found is not None and found == under_way.get(name):
            outcomes[name] = "new"
        else:
            problems.append(f"{name}: holds {found}, expected {known.get(name)} or {under_way.get(name)}")
        known[name] = found
    return problems, outcomes


def leftovers(folder):
    """Temporary files in the folder, and whether a loader picks one."""
    temps = [p.name for p in folder.iterdir() if p.name.startswith(".") and ".tmp" in p.name]
    newest = storage.newest_model(folder).name if (folder / FILES["model"]).exists() else None
    return temps, newest not in (None, FILES["model"])


def calibrate(folder, model, rounds=5):
    """Median seconds of each save, measured here, not in a saver."""
    times = {step: [] for step in STEPS}
    for k in range(1, rounds + 1):
        for step in STEPS:
            start = time.perf_counter()
            save(step, folder, model, k)
            times[step].append(time.perf_counter() - start)
    shutil.rmtree(folder)
    folder.mkdir()
    return {step: statistics.median(t) for step, t in times.items()}


def read_words(fd, buffer, timeout):
    """Complete lines from the saver's pipe within `timeout` seconds;
    None at end of file."""
    ready, _, _ = select.select([fd], [], [], max(timeout, 0))
    if not ready:
        return []
    chunk = os.read(fd, 65536)
    if not chunk:
        return None
    buffer += chunk
    *lines, rest = buffer.split(b"\n")
    buffer[:] = rest
    return [line.decode() for line in lines]


def wait_and_kill(pid, fd, plan, durations):
    """Let the saver run until the planned moment, then SIGKILL it. Returns
    every word it said."""
    words, buffer = [], bytearray()
    round_time = sum(durations.values())
    start, deadline = time.monotonic(), None
    if plan["mode"] == "anytime":
        deadline = start + plan["fraction"] * 2 * round_time
    trigger = f"b {plan.get('step')} {plan.get('k')}"
    try:
        while deadline is None or time.monotonic() < deadline:
            if time.monotonic() - start > 30 + 10 * round_time:
                raise RuntimeError(f"the saver never reached {trigger!r}; it said {words[-3:]}")
            timeout = 0.002 if deadline is None else min(deadline - time.monotonic(), 0.002)
            new = read_words(fd, buffer, timeout)
            if new is None:
                break
            words += new
            if deadline is None and trigger in new:
                deadline = time.monotonic() + plan["fraction"] * 1.2 * durations[plan["step"]]
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    while (new := read_words(fd, buffer, 1.0)) is not None:
        words += new
    return words


def plan_kill(rng, first_k):
    """Where the next kill aims: anywhere in about two rounds, or inside
    the save of one step in one of the first three rounds."""
    fraction = rng.random()
    if rng.random() < 0.25:
        return {"mode": "anytime", "fraction": fraction}
    return {"mode": "aimed", "step": rng.choice(STEPS), "k": first_k + rng.randrange(3), "fraction": fraction}


def one_kill(folder, model, rng, first_k, known, durations):
    """Fork a saver, kill it as planned, check the files. Returns a record."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        saver(folder, model, first_k, write_end)
    os.close(write_end)
    try:
        words = wait_and_kill(pid, read_end, plan_kill(rng, first_k), durations)
    finally:
        os.close(read_end)
    errors = [w for w in words if w.startswith("x ")]
    if errors:
        raise RuntimeError(f"the saver failed: {errors[0][2:]}")
    problems, outcomes = check(folder, known, words)
    last = words[-1] if words else "e"
    begun = [w.split() for w in words if w.startswith("b ")]
    temps, loader_took_temp = leftovers(folder)
    return {"phase": PHASES[last[0]], "step": begun[-1][1] if begun else None, "rounds": len(begun) / len(STEPS),
            "problems": problems, "outcomes": outcomes, "temps": len(temps), "loader_took_temp": loader_took_temp,
            "last_k": int(begun[-1][2]) if begun else first_k - 1}


def final_save(folder, model, k):
    """One more round in this process: the temporary files left must go."""
    for step in STEPS:
        save(step, folder, model, k)
    return leftovers(folder)[0]


def campaign(kills, seed, folder, empty_every=0.15):
    """Run `kills` kills in `folder`; returns the report."""
    rng = random.Random(seed)
    model = make_model()
    folder.mkdir(parents=True, exist_ok=True)
    durations = calibrate(folder, model)
    known, next_k, records = {}, 1, []
    started = time.monotonic()
    for _ in range(kills):
        if rng.random() < empty_every:
            shutil.rmtree(folder)
            folder.mkdir()
            known = {}
        record = one_kill(folder, model, rng, next_k, known, durations)
        records.append(record)
        next_k = record["last_k"] + 1
    left = final_save(folder, model, next_k)
    return summarize(records, durations, left, time.monotonic() - started, kills, seed)


def summarize(records, durations, left_after_save, seconds, kills, seed):
    during = [r for r in records if r["phase"] != PHASES["e"]]
    outcomes = Counter(o for r in records for o in r["outcomes"].values())
    return {
        "command": f"python benchmarks/kill_during_save.py --kills {kills} --seed {seed}",
        "machine": machine_text(),
        "keras_backend": "numpy (forked savers; the files are written by the same code on every backend)",
        "save_ms_median": {step: round(1000 * t, 2) for step, t in durations.items()},
        "kills": len(records),
        "kills_during_a_save": len(during),
        "kills_by_phase": dict(Counter(r["phase"] for r in records)),
        "kills_during_a_save_by_step": dict(Counter(r["step"] for r in during)),
        "files_checked": sum(outcomes.values()),
        "files_found": dict(outcomes),
        "broken_files": sum(len(r["problems"]) for r in records),
        "problems": [p for r in records for p in r["problems"]][:50],
        "temp_files_left_by_a_kill": {"total": sum(r["temps"] for r in records),
                                      "most_at_once": max((r["temps"] for r in records), default=0)},
        "loader_picked_a_temp_file": sum(r["loader_took_temp"] for r in records),
        "temp_files_after_the_next_save": len(left_after_save),
        "seconds": round(seconds, 1),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "kill_during_save.json"))
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="kill-during-save-"))
    try:
        report = campaign(args.kills, args.seed, folder / "run")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"{report['kills']} kills, {report['kills_during_a_save']} during a save "
          f"({', '.join(f'{n} {s}' for s, n in report['kills_during_a_save_by_step'].items())}); "
          f"{report['files_checked']} files checked: {report['broken_files']} broken "
          f"({', '.join(f'{n} {o}' for o, n in report['files_found'].items())})")
    print(f"where the kills landed: {', '.join(f'{n} {p}' for p, n in report['kills_by_phase'].items())}")
    print(f"temporary files left by a kill: {report['temp_files_left_by_a_kill']['total']} in all, at most "
          f"{report['temp_files_left_by_a_kill']['most_at_once']} at once, picked by a loader "
          f"{report['loader_picked_a_temp_file']} times, {report['temp_files_after_the_next_save']} after the "
          f"next save; {report['seconds']} s")
    for problem in report["problems"]:
        print("  " + problem)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    sys.exit(1 if report["broken_files"] else 0)


if __name__ == "__main__":
    main()
