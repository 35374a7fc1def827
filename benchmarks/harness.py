"""What every benchmark shares: the machine and versions it ran on, one
configuration run in a child process (its result printed on a `RESULT` line),
and the results JSON.

Standard library only at module level: gpu.py imports it on machines without
TensorFlow, and the workers run in children that choose their own backend.
"""

import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections import namedtuple
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"
PACKAGES = ("keras", "tensorflow", "jax", "jaxlib", "torch", "torchvision", "flax", "optax", "numpy")


# ----------------------------------------------------------------------------- the machine


def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def memory_gb():
    try:
        kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal:"))
        return round(kb / 2**20, 1)
    except (OSError, StopIteration):
        return None


def gpu_name():
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def machine(gpu=False):
    """The machine a measurement ran on (with `gpu`, nvidia-smi's line too)."""
    found = {"gpu": gpu_name()} if gpu else {}
    return {**found, "cpu": cpu_model(), "arch": platform.machine(), "cores": os.cpu_count(),
            "memory_gb": memory_gb(), "system": f"{platform.system()} {platform.release()}",
            "python": platform.python_version()}


def machine_text(m=None):
    """The machine in a few words: "x86_64, 2 cores, Python 3.11.7"."""
    m = m or machine()
    return f"{m['arch']}, {m['cores']} cores, Python {m['python']}"


def versions(packages=PACKAGES):
    """Installed versions, read without importing the packages (None: not installed)."""
    found = {}
    for package in packages:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


def record(command):
    """The head of a results record: the command, the date, the machine, the versions."""
    return {"command": command, "date": datetime.date.today().isoformat(), "machine": machine(),
            "versions": versions()}


def data_dir():
    """The real datasets' folder ($KERASCNN_DATA_DIR, else ../shared/data); exits without Fashion-MNIST."""
    folder = Path(os.environ.get("KERASCNN_DATA_DIR") or REPO.parent / "shared" / "data").resolve()
    if not (folder / "fashion_mnist").is_dir():
        sys.exit(f"no fashion_mnist/ in {folder}: set KERASCNN_DATA_DIR")
    return folder


# ----------------------------------------------------------------------------- child processes


def child_env(backend, data=None, cpu=True, **extra):
    """A child's environment: Keras `backend`, this repository first on the
    path, the data folder, and (with `cpu`) no GPU."""
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3", **extra,
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    if data:
        env["KERASCNN_DATA_DIR"] = str(data)
    if cpu:
        env.update(CUDA_VISIBLE_DEVICES="", JAX_PLATFORMS="cpu")
    return env


Child = namedtuple("Child", "code out err wall rss")  # exit code, stdout, stderr, seconds, peak RSS in MB


def run_children(jobs, timeout):
    """Run every (argv, env, cwd) of `jobs` at once, to their ends or until
    `timeout` seconds (then killed with what they started): a Child each,
    its peak RSS from os.wait4's rusage."""
    with tempfile.TemporaryDirectory() as folder:
        start, procs = time.perf_counter(), []
        for i, (argv, env, cwd) in enumerate(jobs):
            out, err = open(Path(folder) / f"{i}.out", "w+"), open(Path(folder) / f"{i}.err", "w+")
            procs.append((subprocess.Popen(argv, stdout=out, stderr=err, env=env, cwd=cwd, text=True,
                                           start_new_session=True), out, err))
        done = {}
        while len(done) < len(procs):
            for i, (proc, _, _) in enumerate(procs):
                if i in done:
                    continue
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if not pid and time.perf_counter() - start > timeout:
                    os.killpg(proc.pid, signal.SIGKILL)  # the child and what it started (torch.compile's workers)
                    pid, status, usage = os.wait4(proc.pid, 0)
                if pid:
                    done[i] = (os.waitstatus_to_exitcode(status), time.perf_counter() - start, usage.ru_maxrss / 1024)
            time.sleep(0.05)
        children = []
        for i, (_, out, err) in enumerate(procs):
            out.seek(0)
            err.seek(0)
            code, wall, rss = done[i]
            children.append(Child(code, out.read(), err.read(), wall, rss))
            out.close()
            err.close()
        return children


def run_child(argv, env, timeout, cwd=None):
    """Run `argv` to its end (or `timeout`): a Child."""
    return run_children([(argv, env, cwd)], timeout)[0]


def print_result(result):
    """In a child: hand `result` (a dict) to the parent."""
    print("RESULT " + json.dumps(result), flush=True)


def results_of(out):
    """Every result a child printed, in order."""
    return [json.loads(line[len("RESULT "):]) for line in out.splitlines() if line.startswith("RESULT ")]


def error_of(child, timeout, lines=6, chars=1200):
    """Why a child failed, with the end of its stderr."""
    why = "timed out" if child.wall > timeout else f"exit code {child.code}"
    return f"{why}: " + " | ".join(child.err.strip().splitlines()[-lines:])[-chars:]


def result_of(child, timeout):
    """A child's last result, or {"error": ...}."""
    found = results_of(child.out)
    return found[-1] if child.code == 0 and found else {"error": error_of(child, timeout)}


# ----------------------------------------------------------------------------- workers and the results JSON

WORKERS = {}


def worker(fn):
    """Register `fn(**params) -> dict` as a worker a Runner can start in a child."""
    WORKERS[fn.__name__] = fn
    return fn


def run_worker(name, params):
    """In the child: the worker `name` on `params` (JSON), its result printed."""
    sys.path.insert(0, str(REPO))
    print_result(WORKERS[name](**json.loads(params)))


class Runner:
    """Measures configurations, each in a fresh process of `script`
    (`--worker NAME PARAMS`), and remembers them for the invocation: a
    configuration two sections share is measured once."""

    def __init__(self, script, budget, data):
        self.script, self.budget, self.data_dir = str(script), budget, data
        self.memo = {}

    def measure(self, worker_name, params, backend="tensorflow", label=None, repeat=0):
        """The worker's result on `params` in a child on Keras `backend`
        (`repeat`: another child for a configuration measured before)."""
        key = json.dumps([worker_name, params, backend, repeat], sort_keys=True)
        if key not in self.memo:
            argv = [sys.executable, self.script, "--worker", worker_name, json.dumps(params)]
            load = os.getloadavg()[0]
            child = run_child(argv, child_env(backend, self.data_dir), self.budget.timeout)
            result = result_of(child, self.budget.timeout)
            if "error" not in result:
                result.update(wall_s=round(child.wall, 2), peak_rss_mb=round(child.rss), load_before=round(load, 2))
            print(f"  {label or worker_name} [{backend}]: {summary(result)}", flush=True)
            self.memo[key] = result
        return self.memo[key]


def summary(result):
    """One result in a few words, for the console."""
    if "error" in result:
        return "FAILED " + result["error"]
    if "images_per_s" in result:
        return f"{result['images_per_s']:,.1f} images/s ({result['wall_s']:.0f} s, {result['peak_rss_mb']} MB)"
    if "median" in result:
        return f"{result['median']:,.1f} GFLOP/s"
    return f"done ({result['wall_s']:.0f} s)"


def write_rows(script, rows, path):
    """A benchmark's `rows` into `path`, under the command that ran (`script`
    and this process's arguments), the machine, the versions and the load."""
    result = {**record(" ".join(["python", f"benchmarks/{script}", *sys.argv[1:]])),
              "load_average": os.getloadavg(), "rows": rows}
    write_json(path, result)
    print(f"wrote {path}")


def read_json(path, default=None):
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else default


def write_json(path, data, indent=1):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=indent) + "\n")


def relative(path):
    """`path` relative to the repository when inside it."""
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)
