"""Fuzz the loaders: random mutations of real files must load or raise
KerasCNNError, within a time and memory bound, never anything else.

    python benchmarks/fuzz_loaders.py [--inputs 200] [--seed 0] [--formats keras,idx,npz]
                                      [--timeout 60] [--memory-gb 4] [--work DIR]

It makes the real files first: a checkpoint of a tiny LeNet trained one
epoch on digits (`keras`: loaded with kerascnn.runs.saved.Run.load and .model()),
an IDX pair of images and labels, raw and gzipped (`idx`: kerascnn.data.sources.read_idx),
and an .npz dataset (`npz`: kerascnn.data.datasets.load_dataset over its folder).
Each input is a mutation of one of them: bytes flipped, set, inserted,
zeroed, duplicated or cut off; and, so that the parsers behind a checksum
are reached, the same inside a zip entry
(config.json, model.weights.h5, the training state, an .npy) or inside the
gzip stream, rewritten with a valid CRC, or an edit of a JSON value.

Each format's inputs run in a worker subprocess with an address-space limit
(RLIMIT_AS) that reads paths on stdin and reports one line per input; the
parent times each input out and restarts a worker that died, so a crash in C
code or a hang is counted. (TensorFlow needs about 2.3 GB of address space
to start: with 1.5 GB its import fails; 4 GB leaves room for a model.)
Outcomes: `loaded`, `refused` (KerasCNNError), and the failures `exception`
(any other), `crash` (a signal or an exit), `timeout`. Prints a summary per
format, writes benchmarks/results/fuzz_loaders.json, keeps the failing
inputs in --work.
"""

import argparse
import collections
import gzip
import io
import json
import os
import random
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = Path(__file__).resolve().parent
FORMATS = ("keras", "idx", "npz")
INTERESTING = [0, 1, 0x7F, 0x80, 0xFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0x10000, 0x7FFF]
READY_SECONDS = 300  # a worker's start: importing TensorFlow and loading the real file once


# --- the real files

def make_seeds(folder):
    """The real files to mutate, {format: [paths]}, made in `folder`."""
    import numpy as np

    folder = Path(folder)
    seeds = {}
    from kerascnn.training.fit import fit

    fit("lenet", "digits", epochs=1, batch_size=64, train_size=64, channels=(2, 4), activation="relu",
        output=folder / "run", verbose=0)
    (folder / "keras").mkdir()
    seeds["keras"] = [shutil.copy(folder / "run" / "lenet.last.keras", folder / "keras" / "lenet.last.keras")]
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (12, 28, 28), dtype=np.uint8), np.arange(12, dtype=np.uint8) % 10
    (folder / "idx").mkdir()
    seeds["idx"] = []
    for name, array in (("images-idx3-ubyte", images), ("labels-idx1-ubyte", labels)):
        raw = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape) + array.tobytes()
        (folder / "idx" / name).write_bytes(raw)
        (folder / "idx" / f"{name}.gz").write_bytes(gzip.compress(raw, mtime=0))
        seeds["idx"] += [folder / "idx" / name, folder / "idx" / f"{name}.gz"]
    (folder / "npz" / "cifar10").mkdir(parents=True)
    x = rng.integers(0, 256, (24, 8, 8, 3), dtype=np.uint8)
    np.savez(folder / "npz" / "cifar10" / "subset.npz", x_train=x[:16], y_train=np.arange(16) % 10,
             x_test=x[16:], y_test=np.arange(8) % 10, class_names=np.array([f"c{i}" for i in range(10)]))
    seeds["npz"] = [folder / "npz" / "cifar10" / "subset.npz"]
    return {k: [Path(p) for p in v] for k, v in seeds.items()}


# --- mutations

def mutate_bytes(data, rng):
    """One random byte-level mutation of `data`: (name, new bytes)."""
    data = bytearray(data)
    kind = rng.choice(["flip", "set", "int", "insert", "zero", "duplicate", "truncate"])
    n = len(data)
    if n == 0:
        return "insert", bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(n)] ^= 1 << rng.randrange(8)
    elif kind == "set":
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(n)] = rng.choice([rng.randrange(256), 0, 0xFF, 0x7F, 0x80])
    elif kind == "int":
        value = rng.choice(INTERESTING + [rng.randrange(2 ** 32)])
        at = rng.randrange(max(1, n - 3))
        data[at:at + 4] = value.to_bytes(4, rng.choice(["big", "little"]))
    elif kind == "insert":
        at = rng.randrange(n + 1)
        data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    elif kind == "zero":
        at = rng.randrange(n)
        size = rng.randint(1, 1024)
        data[at:at + size] = bytes(len(data[at:at + size]))
    elif kind == "duplicate":
        at, to = rng.randrange(n), rng.randrange(n)
        data[to:to] = data[at:at + rng.randint(1, 256)]
    else:
        data = data[:rng.randrange(n)]
    return kind, bytes(data)


def mutate_json(data, rng):
    """One random edit of a JSON document's values: (name, new bytes)."""
    doc = json.loads(data)
    slots = []
    todo = [doc]
    while todo:
        node = todo.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, value in items:
            slots.append((node, key))
            todo.append(value)
    if not slots:
        return mutate_bytes(data, rng)
    node, key = rng.choice(slots)
    value = node[key]
    kind = rng.choice(["value", "value", "delete", "type"])
    if kind == "delete":
        del node[key]
    elif kind == "type":
        node[key] = rng.choice([None, True, [], {}, "", [value], {"x": value}])
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        node[key] = rng.choice([0, -1, 1, 2 ** 31, 2 ** 63, -2 ** 63, 1e300, float("nan"), 0.5, value * 1000, -value])
    elif isinstance(value, str):
        node[key] = rng.choice(["", "Lambda", "x" * 10000, value[::-1], value + "x", "keras.layers", "None"])
    else:
        node[key] = rng.choice([0, -1, 10 ** 9, "x", None])
    return f"json-{kind}", json.dumps(doc).encode()


def mutate_zip_entry(data, rng, names):
    """Mutate one entry of the zip `data`, its CRC recomputed: one drawn
    from `names` (a name twice is drawn twice as often), else any: (name, new bytes)."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        entries = [(i, z.read(i.filename)) for i in z.infolist()]
    wanted = rng.choice(names) if names else None
    info, content = next((e for e in entries if e[0].filename == wanted), None) or rng.choice(entries)
    if info.filename.endswith(".json") and rng.random() < 0.7:
        kind, content = mutate_json(content, rng)
    else:
        kind, content = mutate_bytes(content, rng)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for i, c in entries:
            z.writestr(i, content if i is info else c)
    return f"{info.filename}:{kind}", out.getvalue()


def mutate(fmt, path, rng):
    """A mutation of the real file at `path`: (how, bytes)."""
    data = Path(path).read_bytes()
    inner = rng.random() < (0.6 if fmt == "keras" else 0.5)
    if fmt == "keras" and inner:
        names = ["config.json"] * 3 + ["model.weights.h5"] * 3 + ["kerascnn_state.json", "metadata.json"]
        return mutate_zip_entry(data, rng, names)
    if fmt == "npz" and inner:
        return mutate_zip_entry(data, rng, [])
    if fmt == "idx" and inner and path.suffix == ".gz":
        kind, raw = mutate_bytes(gzip.decompress(data), rng)
        return f"gunzipped:{kind}", gzip.compress(raw, mtime=0)
    return mutate_bytes(data, rng)


# --- the worker: loads what it is told, one line per input

def load(fmt, path):
    """Load one input as a user would."""
    if fmt == "keras":
        from kerascnn.runs.saved import Run

        run = Run.load(path)
        _ = run.name, run.dataset, run.history, run.settings  # what commands read of a run
        run.model()
    elif fmt == "idx":
        from kerascnn.data.sources import read_idx

        read_idx(path)
    else:
        from kerascnn.data.datasets import load_dataset

        load_dataset("cifar10", Path(path).parents[1], allow_download=False)


def worker(fmt):
    """Read paths on stdin; for each, report {"outcome", "detail"} on the
    original stdout (what the loaders print goes to stderr)."""
    import traceback

    from kerascnn.errors import KerasCNNError

    report = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    for line in sys.stdin:
        path = line.rstrip("\n")
        try:
            load(fmt, path)
            result = {"outcome": "loaded"}
        except KerasCNNError as e:
            result = {"outcome": "refused", "detail": str(e)}
        except BaseException as e:  # noqa: BLE001 - each is reported: a failure unless refused
            frame = traceback.extract_tb(e.__traceback__)[-1]
            result = {"outcome": "exception", "detail": f"{type(e).__name__}: {str(e)[:300]} "
                                                        f"(at {frame.filename}:{frame.lineno})"}
        if "keras" in sys.modules:  # drop the loaded model: a long campaign must not grow
            sys.modules["keras"].backend.clear_session()
        report.write(json.dumps(result) + "\n")
        report.flush()


class Worker:
    """A worker subprocess for one format, restarted when it dies or hangs."""

    def __init__(self, fmt, warmup, memory, log):
        self.fmt, self.warmup, self.memory, self.log = fmt, warmup, memory, log
        self.proc = None
        self.restarts = -1

    def _limits(self):
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (self.memory, self.memory))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    def start(self):
        self.restarts += 1
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker", self.fmt], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log, text=True, bufsize=1,
                                     preexec_fn=self._limits, start_new_session=True)  # noqa: PLW1509
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.proc.stdout, selectors.EVENT_READ)
        ready = self.ask(self.warmup, READY_SECONDS)
        if ready["outcome"] != "loaded":
            raise RuntimeError(f"the {self.fmt} worker cannot load the real file: {ready}")

    def ask(self, path, timeout):
        """The worker's report on `path`, or a crash or timeout of its own."""
        if self.proc is None:
            self.start()
        try:
            self.proc.stdin.write(f"{path}\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        if self.selector.select(timeout):
            line = self.proc.stdout.readline()
            if line:
                return json.loads(line)
            return self._died()
        self.stop()
        return {"outcome": "timeout", "detail": f"no answer within {timeout} s"}

    def _died(self):
        code = self.proc.wait()
        self.proc = None
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
        return {"outcome": "crash", "detail": f"the worker died: {how}"}

    def stop(self):
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.proc = None


# --- the campaign

FAILURES = ("exception", "crash", "timeout")


def campaign(inputs, seed=0, formats=FORMATS, timeout=60, memory_gb=4, work=None, echo=print):
    """Run `inputs` mutations per format; the results as a dict (see main)."""
    work = Path(work or tempfile.mkdtemp(prefix="fuzz-loaders-"))
    seeds = make_seeds(work / "seeds")
    results = {}
    for fmt in formats:
        started = time.perf_counter()
        results[fmt] = run_format(fmt, seeds[fmt], inputs, random.Random(f"{seed}-{fmt}"), timeout,
                                  int(memory_gb * 1024 ** 3), work)
        results[fmt]["seconds"] = round(time.perf_counter() - started, 1)
        echo(summary_line(fmt, results[fmt]))
    return results


def run_format(fmt, seeds, inputs, rng, timeout, memory, work):
    """Mutate, load in the worker and classify `inputs` inputs of one format."""
    folder = work / fmt
    folder.mkdir(parents=True, exist_ok=True)
    outcomes, by_mutation, refusals, failures = (collections.Counter(), collections.Counter(),
                                                 collections.Counter(), [])
    with open(work / f"{fmt}.worker.log", "w") as log:
        pool = Worker(fmt, seeds[0], memory, log)
        try:
            for n in range(inputs):
                real = rng.choice(seeds)
                how, data = mutate(fmt, real, rng)
                case = folder / f"{n:05d}" / real.relative_to(real.parents[1] if fmt == "npz" else real.parent)
                case.parent.mkdir(parents=True, exist_ok=True)
                case.write_bytes(data)
                result = pool.ask(case, timeout)
                outcomes[result["outcome"]] += 1
                by_mutation[how.split(":")[0] if ":" in how else how] += 1
                if result["outcome"] == "refused":
                    refusals[refusal_kind(result["detail"], case)] += 1
                if result["outcome"] in FAILURES:
                    failures.append({"input": str(case), "from": real.name, "mutation": how, **result})
                else:
                    shutil.rmtree(folder / f"{n:05d}")
        finally:
            pool.stop()
    return {"inputs": inputs, "outcomes": dict(outcomes), "mutations": dict(by_mutation),
            "refusals": dict(refusals.most_common(30)), "worker_restarts": pool.restarts, "failures": failures}


def refusal_kind(message, case):
    """A refusal's message without the input's path and the details after it."""
    for path in (case, case.parent, case.parent.parent):
        message = message.replace(str(path), "<file>")
    return message[:90]


def summary_line(fmt, r):
    counts = ", ".join(f"{k} {v}" for k, v in sorted(r["outcomes"].items()))
    return f"{fmt}: {r['inputs']} inputs in {r.get('seconds', 0)} s: {counts}; failures: {len(r['failures'])}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=200, help="Mutated inputs per format.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--timeout", type=float, default=60, help="Seconds per input.")
    parser.add_argument("--memory-gb", type=float, default=4, help="Address-space limit of a worker.")
    parser.add_argument("--work", help="Folder for the inputs (kept when some fail) [a temporary one].")
    parser.add_argument("--output", default=str(HERE / "results" / "fuzz_loaders.json"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker)
    work = Path(args.work or tempfile.mkdtemp(prefix="fuzz-loaders-"))
    formats = [f for f in args.formats.split(",") if f]
    results = campaign(args.inputs, args.seed, formats, args.timeout, args.memory_gb, work)
    failures = [f for r in results.values() for f in r["failures"]]
    for f in failures:
        print(f"FAILURE {f['outcome']}: {f['input']} ({f['mutation']} of {f['from']}): {f.get('detail', '')}")
    from harness import machine, machine_text, versions  # beside this script; tests load it by path

    record = {"command": "python benchmarks/fuzz_loaders.py " + " ".join(sys.argv[1:]), "machine": machine_text(),
              "python": machine()["python"], "keras": versions()["keras"],
              "timeout_seconds": args.timeout, "memory_gb": args.memory_gb, "formats": results,
              "failures": len(failures)}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.output}" + (f"; failing inputs kept in {work}" if failures else ""))
    if not failures:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
