"""The prepared GPU run: kerascnn on jax and torch on one NVIDIA GPU, without
TensorFlow, against plain PyTorch and plain jax.jit loops, and the course
reports' studies at their textbook sizes.

    python benchmarks/gpu.py --part throughput --backend jax     # at most 6 minutes (the rows' budgets)
    python benchmarks/gpu.py --part throughput --backend torch   # at most 7 minutes; both: --part throughput
    python benchmarks/gpu.py --part modern-cnns         # about 5 minutes on one H200
    python benchmarks/gpu.py --part optimizers          # the optimizers study at full length
    python benchmarks/gpu.py --part optimizer-sweep --variant "vgg16 AdaGrad lr 0.03"   # the rate sweep, in pieces
    python benchmarks/gpu.py --tiny --part throughput --part modern-cnns   # the same code on a CPU, seconds
    python benchmarks/gpu.py --write-docs               # docs/gpu.md from the results

Parts (`--part`, repeatable; each fits a task's 15 minutes of GPU time with
the machine's start, a study part under 8 minutes):
  throughput   pairs of rows, like with like: images/s of `kerascnn.fit --mixed-precision` on jax
               and torch (torch also --jit on) against a plain jax.jit loop over the same Keras
               network and a plain PyTorch loop (channels_last, eager and torch.compile), all bf16,
               for LeNet (28 px), ResNet-18 (96, 224 px) and VGG-16 (224 px); whole stretches of
               steps timed between waits for the device, no per-step callback; compilation apart;
               each row in its own process with its own budget (PAIRS), a pair's two rows
               alternating which runs first; the input path alone (host batches, and the device
               transform) beside the step
  modern-cnns  `kerascnn study --preset modern-cnns` (VGG-11 224, NiN 224, GoogLeNet 96,
               ResNet-18 96; 3 epochs of full Fashion-MNIST) under jax: test accuracy and time
  optimizers   `kerascnn study --preset optimizers` (five families on MNIST, SGD+momentum and
               AdaGrad, 10 epochs) under jax
  optimizer-sweep  `kerascnn study --preset optimizer-sweep`: the same at four rates each (40
               runs: more than one part's time; `--variant LABEL` runs some, keeping earlier ones)

Needs: JAX and/or PyTorch (CUDA builds on the GPU machine), Keras, the
repository, and MNIST / Fashion-MNIST in `--data-dir` (default
$KERASCNN_DATA_DIR, else ../shared/data); no TensorFlow, no network. Each
measurement runs in its own process (a Keras backend is chosen per
process); a part's results replace its entry in the results JSON
(benchmarks/results/gpu.json; --tiny writes to the temporary folder unless
--results is given), so later runs add the parts earlier ones lacked.
"""

import argparse
import csv
import datetime
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from harness import REPO, RESULTS_DIR, child_env, machine, print_result, results_of, run_child, versions, write_json
from report import write_block

RESULTS = RESULTS_DIR / "gpu.json"
DOC = REPO / "docs" / "gpu.md"
PARTS = ("throughput", "modern-cnns", "optimizers", "optimizer-sweep")


# ----------------------------------------------------------------------------- child processes


def children(tasks, backend, data_dir, timeout):
    """Run `tasks` (dicts: "task" and its arguments) one after another in
    one fresh process on Keras `backend`; a result (a dict) for each, or
    {"error": ...} for one that failed, or that the process did not reach
    within `timeout` seconds."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(tasks)]
    child = run_child(argv, child_env(backend, data_dir, cpu=False), timeout, cwd=REPO)
    reason = f"not reached within the {timeout} s given to the process" if child.wall > timeout else \
        f"the process ended (exit {child.code}) before it"
    tail = " | ".join(child.err.strip().splitlines()[-2:])[-400:]
    results = results_of(child.out)
    return results + [{"error": f"{reason}: {tail}"} for _ in tasks[len(results):]]


def run_tasks(tasks):
    """In the child: each task in turn, its result (or error) printed at once."""
    import traceback

    for spec in tasks:
        spec = dict(spec)
        start = time.perf_counter()
        try:
            result = TASKS[spec.pop("task")](**spec)
        except Exception as e:  # noqa: BLE001 - recorded, and the next task still runs
            traceback.print_exc()
            result = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:400]}
        result["task_seconds"] = round(time.perf_counter() - start, 1)
        print_result(result)
        try:
            import keras

            keras.backend.clear_session()
        except Exception:  # noqa: BLE001
            pass


def sync(value):
    """Wait for the device: bring `value` (a tensor) to the host."""
    import keras

    return float(keras.ops.convert_to_numpy(value))


def timed_stretches(step, wait, chunk, count):
    """Seconds of `count` stretches of `chunk` calls of `step()`, each from
    the device idle (`wait()` waits for it) to the device idle again."""
    seconds = []
    for _ in range(count):
        start = time.perf_counter()
        for _ in range(chunk):
            step()
        wait()
        seconds.append(time.perf_counter() - start)
    return seconds


def stretch_rates(seconds, chunk, batch):
    """images/s over the stretches after the first (median), and the first
    stretch less `chunk - 1` steady steps: compilation and the first step."""
    step_s = statistics.median(seconds[1:]) / chunk
    return {"images_per_s": round(batch / step_s, 1), "step_ms": round(1000 * step_s, 3),
            "compile_s": round(seconds[0] - (chunk - 1) * step_s, 2), "stretch_s": [round(s, 3) for s in seconds]}


def fit_rate(arch, size, batch, chunk, stretches, mixed=False, jit="auto", tiny=False):
    """images/s of `kerascnn.fit` over epochs of `chunk` batches after the
    first (no validation; the test set cut to 1,000 images), timed by the
    run's own history: its HistoryRecorder is the first callback, so an
    epoch's seconds end when Keras has waited for the epoch's logs, before
    the checkpoint. No callback of the benchmark's own."""
    import keras
    import numpy as np

    from kerascnn.training import torch_native

    from kerascnn.training import fit
    from kerascnn.training.callbacks import count_log_syncs
    from kerascnn.data.datasets import load_dataset

    data = load_dataset("digits" if tiny else "fashion_mnist", None if tiny else os.environ["KERASCNN_DATA_DIR"],
                        val_size=0)
    folder = Path(tempfile.mkdtemp(prefix="kerascnn-gpu-"))
    images = batch * chunk
    reps = -(-images // len(data.x_train))
    npz = folder / "data" / data.name
    npz.mkdir(parents=True)
    np.savez(npz / "data.npz", x_train=np.concatenate([data.x_train] * reps)[:images],
             y_train=np.concatenate([data.y_train] * reps)[:images], x_test=data.x_test[:1000],
             y_test=data.y_test[:1000])
    options = {"activation": "relu", "pool": "max"} if arch == "lenet" else {}
    with count_log_syncs() as syncs:
        result = fit.fit(arch, data.name, data_dir=str(folder / "data"), image_size=size, batch_size=batch,
                           epochs=stretches, val_size=0, output=str(folder / "out"), mixed_precision=mixed, jit=jit,
                           verbose=0, **options)
    record = result.record
    return {**stretch_rates([row["seconds"] for row in result.history], chunk, batch),
            "log_syncs_per_step": round(syncs.per_step(chunk * stretches), 3),
            "dtype_policy": record.get("dtype_policy"), "jit_compile": record.get("jit_compile"),
            "steps_per_execution": record.get("steps_per_execution"), "data_on_device": record.get("data_on_device"),
            "params": int(result.model.count_params()), "backend": keras.backend.backend(),
            "torch_step": torch_native.used}  # "native" (kerascnn.training.torch_native), else why Keras' own step ran


def torch_vgg16(channels=1, classes=10):
    """VGG-16 (configuration D) as kerascnn builds it: 13 convolutions, 4096-4096-classes head with dropout."""
    from torch import nn

    layers, cin = [], channels
    for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"):
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=True)]
            cin = v
    return nn.Sequential(*layers, nn.Flatten(), nn.LazyLinear(4096), nn.ReLU(True), nn.Dropout(0.5),
                         nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(0.5), nn.Linear(4096, classes))


def torch_model(arch, size):
    from loops import torch_lenet, torch_resnet18  # the same networks as the CPU benchmarks

    return {"lenet": lambda: torch_lenet(size), "resnet18": torch_resnet18, "vgg16": torch_vgg16}[arch]()


def torch_loop(arch, size, batch, chunk, stretches, bf16=True, compile=False, tiny=False):
    """A plain PyTorch loop: images resident on the device, channels_last,
    bf16 autocast (or float32), AdamW, random batches resized on the device."""
    import torch
    import torch.nn.functional as F

    device = "cuda" if torch.cuda.is_available() else "cpu"
    bf16 = bf16 and device == "cuda"  # as kerascnn's --mixed-precision: on an accelerator only
    torch.manual_seed(0)
    model = torch_model(arch, size).to(device)
    x = torch.randint(0, 256, (max(batch * 4, 512), 1, 28, 28), dtype=torch.uint8, device=device)
    y = torch.randint(0, 10, (len(x),), device=device)
    with torch.no_grad():
        model(torch.zeros(2, 1, size, size, device=device))  # the lazy layer's shape
    model = model.to(memory_format=torch.channels_last)
    forward = torch.compile(model) if compile else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.004, eps=1e-7)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()

    def step():
        idx = torch.randint(0, len(x), (batch,), device=device)
        xb = x[idx].float() / 255.0
        if size != 28:
            xb = F.interpolate(xb, size=(size, size), mode="bilinear", antialias=False, align_corners=False)
        xb = xb.contiguous(memory_format=torch.channels_last)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(forward(xb), y[idx])
        loss.backward()
        optimizer.step()

    wait = torch.cuda.synchronize if device == "cuda" else lambda: None
    return {**stretch_rates(timed_stretches(step, wait, chunk, stretches), chunk, batch),
            "params": sum(p.numel() for p in model.parameters()), "bf16": bf16, "compile": compile,
            "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu"}


def jax_loop(arch, size, batch, chunk, stretches, bf16=True, tiny=False):
    """A plain jax.jit loop: value_and_grad over kerascnn's network through
    Model.stateless_call (Keras' layers, no Keras trainer), optax-free AdamW,
    images resident on the device, resized in the step; bf16 through Keras'
    mixed_bfloat16 policy, as kerascnn's --mixed-precision."""
    import functools

    import jax
    import jax.numpy as jnp
    import keras

    from kerascnn.models import build_model

    bf16 = bf16 and jax.devices()[0].platform == "gpu"  # as kerascnn's --mixed-precision: on an accelerator only
    if bf16:
        keras.config.set_dtype_policy("mixed_bfloat16")
    keras.utils.set_random_seed(0)
    options = {"activation": "relu", "pool": "max"} if arch == "lenet" else {}
    model = build_model(arch, input_shape=(size, size, 1), num_classes=10, **options)
    key = jax.random.PRNGKey(0)
    x = jax.random.randint(key, (max(batch * 4, 512), 28, 28, 1), 0, 256).astype(jnp.uint8)
    y = jax.random.randint(key, (len(x),), 0, 10)

    def loss_fn(trainable, non_trainable, xb, yb):
        logits, non_trainable = model.stateless_call(trainable, non_trainable, xb, training=True)
        logp = jax.nn.log_softmax(logits.astype(jnp.float32))
        return -jnp.mean(jnp.take_along_axis(logp, yb[:, None], axis=1)), non_trainable

    @functools.partial(jax.jit, donate_argnums=(0, 1, 2, 3))
    def train_step(trainable, non_trainable, m, v, t, idx):
        xb = x[idx].astype(jnp.float32) / 255.0
        if size != 28:
            xb = jax.image.resize(xb, (batch, size, size, 1), "bilinear")
        (loss, non_trainable), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable, non_trainable, xb, y[idx])
        m = [0.9 * mi + 0.1 * g for mi, g in zip(m, grads)]
        v = [0.999 * vi + 0.001 * g * g for vi, g in zip(v, grads)]
        alpha = 1e-3 * jnp.sqrt(1 - 0.999**t) / (1 - 0.9**t)
        trainable = [p - 4e-6 * p - alpha * mi / (jnp.sqrt(vi) + 1e-7) for p, mi, vi in zip(trainable, m, v)]
        return trainable, non_trainable, m, v, loss

    trainable = [jnp.asarray(w.value) for w in model.trainable_variables]
    non_trainable = [jnp.asarray(w.value) for w in model.non_trainable_variables]
    state = [trainable, non_trainable, [jnp.zeros_like(w) for w in trainable], [jnp.zeros_like(w) for w in trainable]]
    rng = __import__("numpy").random.default_rng(0)
    batches = [jnp.asarray(rng.integers(0, len(x), batch)) for _ in range(8)]
    t = 0

    def step():
        nonlocal t
        t += 1
        *state[:], _ = train_step(*state, jnp.float32(t), batches[t % 8])

    return {**stretch_rates(timed_stretches(step, lambda: jax.block_until_ready(state), chunk, stretches), chunk,
                            batch), "params": int(model.count_params()), "bf16": bf16, "device": str(jax.devices()[0])}


def input_rate(size, batch, steps, augment="crop,flip", tiny=False):
    """The input path alone: host batches (TrainingBatches.stream: gather and
    draw) and the device transform (InputTransform, training, jitted under
    JAX), images/s of each."""
    import keras

    from kerascnn.data.datasets import load_dataset
    from kerascnn.data.host import TrainingBatches
    from kerascnn.data.device_transforms import InputTransform

    data = load_dataset("digits" if tiny else "fashion_mnist", None if tiny else os.environ["KERASCNN_DATA_DIR"],
                        val_size=0)
    names = tuple(augment.split(","))
    batches = TrainingBatches(data.x_train, data.y_train, batch_size=batch, epochs=1000, augment=names,
                              image_size=size)
    stream = batches.stream()
    first = [next(stream) for _ in range(4)]
    start = time.perf_counter()
    for _ in range(steps):
        next(stream)
    host = steps * batch / (time.perf_counter() - start)
    stream.close()
    transform = InputTransform((size, size, 1), [0.286], [0.353], "resize", names)
    (x, p), _ = first[0]
    if keras.backend.backend() == "jax":
        import jax

        fn = jax.jit(lambda a, b: transform(a, b, training=True))
    else:
        fn = lambda a, b: transform(a, b, training=True)  # noqa: E731
    xd, pd = keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(p)
    out = fn(xd, pd)
    sync(keras.ops.sum(out))
    start = time.perf_counter()
    for _ in range(steps):
        out = fn(xd, pd)
    sync(keras.ops.sum(out))
    device = steps * batch / (time.perf_counter() - start)
    return {"host_images_per_s": round(host, 1), "device_images_per_s": round(device, 1), "augment": augment}


def study_run(preset, folder, tiny=False, variants=None):
    """`kerascnn study --preset NAME --seeds 1` in `folder` (only the
    `variants` labels when given): each run's test accuracy, image size,
    batch, seconds of training, and the study's wall time."""
    import dataclasses

    from kerascnn.studies.study import make_study, run_study

    folder = Path(folder)
    options = {"dataset": "digits", "epochs": 1, "train_size": 128, "batch_size": 64} if tiny else {}
    start = time.perf_counter()
    study = make_study(preset, seeds=1, **options)
    if variants:
        study = dataclasses.replace(study, variants=tuple(v for v in study.variants if v.label in variants))
    run_study(study, folder, echo=lambda line: print(line, flush=True))
    wall = time.perf_counter() - start
    return {**finished_runs(folder), "wall_seconds": round(wall, 1)}


def finished_runs(folder):
    """The records of a study folder's finished runs (also of a study cut short)."""
    rows = []
    for record in sorted(Path(folder).rglob("*.run.json")):
        r = json.loads(record.read_text())
        rows.append({**{k: r.get(k) for k in ("arch", "optimizer", "image_size", "input_shape", "batch_size", "epochs",
                                              "test_accuracy", "train_seconds", "lr", "dtype_policy", "jit_compile")},
                     "run": record.parent.name})  # runs/<variant slug>-s<seed>
    table = Path(folder) / "results.csv"
    return {"runs": rows, "table": list(csv.DictReader(open(table))) if table.exists() else []}


TASKS = {"fit_rate": fit_rate, "torch_loop": torch_loop, "jax_loop": jax_loop, "input_rate": input_rate,
         "study_run": study_run}


# ----------------------------------------------------------------------------- parts


CHUNK, STRETCHES = 32, 3  # steps a timed stretch (a multiple of 16, as steps_per_execution auto likes), stretches a row
# Each pair: kerascnn's fit and the plain loop on the same network, size, batch and precision, each row in its own
# process with `budget` seconds. bf16 on both sides (kerascnn --mixed-precision; the plain loops bf16 where
# kerascnn's rule gives bf16: on a GPU); "compiled": kerascnn --jit on (torch.compile) against torch.compile.
PAIRS = (  # backend, arch, size, batch, how, budget s a row
    ("jax", "lenet", 28, 256, "bf16", 30), ("jax", "resnet18", 96, 128, "bf16", 40),
    ("jax", "resnet18", 224, 128, "bf16", 40), ("jax", "vgg16", 224, 64, "bf16", 60),
    ("torch", "lenet", 28, 256, "bf16", 20), ("torch", "resnet18", 96, 128, "bf16", 25),
    ("torch", "resnet18", 224, 128, "bf16", 30), ("torch", "vgg16", 224, 64, "bf16", 40),
    ("torch", "lenet", 28, 256, "compiled", 75),
)
TINY = {("lenet", 28): (28, 16), ("resnet18", 96): (32, 8)}  # --tiny: these pairs only, at these sizes and batches
INPUT_BUDGET, TINY_BUDGET = 20, 150
LABELS = {("jax", "bf16"): ("kerascnn fit, --mixed-precision", "plain jax.jit over stateless_call"),
          ("torch", "bf16"): ("kerascnn fit, --mixed-precision", "plain PyTorch, channels_last, autocast"),
          ("torch", "compiled"): ("kerascnn fit, --mixed-precision --jit on (torch.compile)",
                                  "plain PyTorch, channels_last, autocast, torch.compile")}


def throughput_plan(tiny, backends=None):
    """The pairs to measure, in order, and the input path's rows: dicts with their tasks and budgets."""
    chunk, stretches = (2, 3) if tiny else (CHUNK, STRETCHES)
    pairs, inputs = [], []
    for backend, arch, size, batch, how, budget in PAIRS:
        if backends and backend not in backends or tiny and ((arch, size) not in TINY or how == "compiled"):
            continue  # --tiny: no compiled pair (torch.compile takes minutes on a CPU)
        size, batch = TINY[arch, size] if tiny else (size, batch)
        case = {"arch": arch, "size": size, "batch": batch, "chunk": chunk, "stretches": stretches, "tiny": tiny}
        ours, plain = LABELS[backend, how]
        compiled = {"compile": True} if how == "compiled" else {}
        pairs.append({"backend": backend, "arch": arch, "size": size, "batch": batch, "how": how,
                      "budget_s": TINY_BUDGET if tiny else budget,
                      "kerascnn": (ours, {"task": "fit_rate", **case, "mixed": True,
                                          **({"jit": "on"} if compiled else {})}),
                      "plain": (plain, {"task": f"{backend}_loop", **case, **compiled})})
    for backend in ("jax", "torch"):
        if not backends or backend in backends:
            inputs.append({"backend": backend, "size": 32 if tiny else 224, "batch": 16 if tiny else 128,
                           "budget_s": TINY_BUDGET if tiny else INPUT_BUDGET,
                           "task": {"task": "input_rate", "size": 32 if tiny else 224, "batch": 16 if tiny else 128,
                                    "steps": 20 if tiny else 200, "tiny": tiny}})
    return pairs, inputs, chunk, stretches


def measure_row(label, spec, backend, budget, data_dir):
    """One row in its own process on Keras `backend`, stopped after `budget` seconds."""
    (result,) = children([spec], backend, data_dir, budget)
    row = {"label": label, **{k: v for k, v in spec.items() if k not in ("task", "tiny")}, **result}
    print(json.dumps({"backend": backend, **row}), flush=True)
    return row


def throughput(args):
    pairs, inputs, chunk, stretches = throughput_plan(args.tiny, args.backend)
    planned = sum(2 * p["budget_s"] for p in pairs) + sum(i["budget_s"] for i in inputs)
    print(f"planned: {2 * len(pairs) + len(inputs)} rows, each in its own process, at most {planned} s "
          f"({planned / 60:.1f} min) in all", flush=True)
    for i, pair in enumerate(pairs):
        pair["order"] = ["kerascnn", "plain"] if i % 2 == 0 else ["plain", "kerascnn"]
        for side in pair["order"]:
            pair[side] = measure_row(*pair[side], pair["backend"], pair["budget_s"], args.data_dir)
    for row in inputs:
        row.update(measure_row("input path alone", row.pop("task"), row["backend"], row["budget_s"], args.data_dir))
    earlier = args.earlier.get("throughput") or {}
    if args.backend and earlier.get("pairs"):  # the other backends' rows measured before are kept
        pairs = [p for p in earlier["pairs"] if p["backend"] not in args.backend] + pairs
        inputs = [r for r in earlier["inputs"] if r["backend"] not in args.backend] + inputs
    failed = [f"{p['backend']} {p[side]['label']} {p['arch']} {p['size']}" for p in pairs for side in p["order"]
              if "error" in p[side]] + [f"{r['backend']} input path" for r in inputs if "error" in r]
    return {"pairs": pairs, "inputs": inputs, "chunk": chunk, "stretches": stretches, "planned_s": planned,
            "failed": failed}


def rerun(row, labels):
    """Whether a run of an earlier part belongs to one of the variants `labels` run again."""
    from kerascnn.studies.study import Variant

    slugs = {Variant(label, {}).slug for label in labels}
    run = row.get("run")
    return run.rsplit("-s", 1)[0] in slugs if run else row["arch"] in labels  # earlier results lack "run"


def study_part(preset):
    def part(args):
        folder = tempfile.mkdtemp(prefix="kerascnn-study-")
        (result,) = children([{"task": "study_run", "preset": preset, "folder": folder, "tiny": args.tiny,
                               "variants": args.variant}], "jax", args.data_dir, 300 if args.tiny else args.seconds)
        if "error" in result:  # the runs it finished still count
            result.update(finished_runs(folder), wall_seconds=None)
        earlier = args.earlier.get(preset) or {}
        if args.variant and earlier.get("runs"):  # runs of the other variants measured before are kept
            result["runs"] = [r for r in earlier["runs"] if not rerun(r, args.variant)] + result["runs"]
            result["earlier"] = {k: earlier.get(k) for k in ("date", "seconds", "wall_seconds", "error")}
        print(json.dumps(result)[:2000], flush=True)
        return result
    return part


PART_FUNCTIONS = {"throughput": throughput, "modern-cnns": study_part("modern-cnns"),
                  "optimizers": study_part("optimizers"), "optimizer-sweep": study_part("optimizer-sweep")}


# ----------------------------------------------------------------------------- docs


def planned_seconds(backends=None):
    """The most the throughput part takes (the sum of its rows' budgets), on `backends` alone when given."""
    pairs, inputs, _, _ = throughput_plan(False, backends)
    return sum(2 * p["budget_s"] for p in pairs) + sum(i["budget_s"] for i in inputs)


def render(results):
    """docs/gpu.md's block `gpu` (all but its title) from the results JSON."""
    jax_s, torch_s = planned_seconds(["jax"]), planned_seconds(["torch"])
    lines = ["Written by `python benchmarks/gpu.py --write-docs` from `benchmarks/results/gpu.json`; each part was "
             "measured by `python benchmarks/gpu.py --part NAME` on the machine its section names, with JAX and "
             "PyTorch (CUDA builds), Keras, and no TensorFlow.", "",
             "To run it on a machine with JAX and PyTorch but no Keras and no network, carry the repository, "
             "`mnist/` and `fashion_mnist/` of the data folder, and Keras' wheels with the two it needs that "
             "such machines lack (`pip download --no-deps --only-binary=:all: --python-version 3.12 "
             "--platform manylinux_2_28_x86_64 -d wheels keras namex optree`), then there: "
             "`pip install --no-deps --target /tmp/site wheels/*.whl && PYTHONPATH=/tmp/site "
             "KERASCNN_DATA_DIR=data python benchmarks/gpu.py --part throughput --backend jax`, and again with "
             "`--backend torch`. The throughput part gives each row its own process and time budget: at most "
             f"{jax_s} s for the jax rows and {torch_s} s for the torch rows ({(jax_s + torch_s) / 60:.1f} min "
             "in all, printed when it starts), so each half fits a 10-minute command and both fit 15 minutes "
             "of one GPU with the machine's start; `--backend` keeps the other backend's rows from the results. "
             "A study part keeps what it measured when its time (`--seconds`) runs out, and a later run adds the "
             "parts (or, with `--variant`, the study runs) an earlier one lacked. On that H200 the machine's "
             "start took about 30 s, the throughput part 251 s (with the earlier harness) and the modern-CNNs "
             "study about 470 s in two calls.", ""]
    for name in PARTS:
        part = results.get(name)
        lines.append(f"## {name}")
        lines.append("")
        if not part:
            lines += ["Not measured yet: it waits for a session lent a GPU "
                      f"(`python benchmarks/gpu.py --part {name}`).", ""]
            continue
        lines += [f"Measured {part['date']} on {part['machine'].get('gpu')}, {part['machine'].get('cores')} CPU "
                  f"cores; {', '.join(f'{k} {v}' for k, v in part['versions'].items() if v)}; "
                  f"{part['seconds']:.0f} s for the part.", ""]
        if name != "throughput":
            lines += render_study(name, part)
        else:
            lines += render_throughput(part) if "pairs" in part else render_earlier_throughput(part)
            lines += render_inputs(part)
        lines.append("")
    return "\n".join(lines)


def not_measured(r):
    return f"not measured: {r['error'].split(': ')[0]}"


def render_throughput(part):
    """The throughput part's pairs: kerascnn's fit against the plain loop, like with like."""
    chunk, timed = part["chunk"], part["stretches"] - 1
    lines = [f"Images per second over {timed} stretches of {chunk} training steps after a first stretch that "
             "compiles, each stretch timed from the device idle to the device idle again: kerascnn's fit trains "
             f"epochs of {chunk} steps, timed by the run's own history (its first callback, so an epoch ends "
             "when Keras has waited for the epoch's logs, before the checkpoint; the benchmark adds no "
             "callback), the plain loops wait for the device after a stretch's last step. Both sides in bf16 "
             "(kerascnn `--mixed-precision`; the plain loops' bf16 policy or autocast, on a GPU only, as "
             "kerascnn's); each row in its own process with its own "
             "time budget, the two rows of a pair alternating which runs first. *Compilation* is the first "
             f"stretch less {chunk - 1} steady steps: the compilation and the first step. *Syncs per step*: "
             "kerascnn fit's host waits for the device (Keras turning a step's logs into floats on the training "
             "thread, `kerascnn.training.callbacks.count_log_syncs`) over its steps. kerascnn's rows read Fashion-MNIST "
             "resized on the device; the plain loops random images resident on the device.", "",
             "| network | size | batch | backend | kerascnn | plain loop | policy, kerascnn / plain | "
             "kerascnn images/s | plain images/s | kerascnn / plain | compilation s, kerascnn / plain | "
             "syncs/step | budget s a row |",
             "|---|---:|---:|---|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for p in part["pairs"]:
        ours, plain = p["kerascnn"], p["plain"]
        rates = [not_measured(r) if "error" in r else f"{r['images_per_s']:,.0f}" for r in (ours, plain)]
        ratio = f"{ours['images_per_s'] / plain['images_per_s']:.2f}" if "error" not in ours and \
            "error" not in plain else ""
        compile_s = " / ".join(str(r.get("compile_s", "–")) for r in (ours, plain))
        policy = f"{ours.get('dtype_policy', '–')} / " + ("–" if "error" in plain else "bf16" if plain["bf16"]
                                                           else "float32")
        lines.append(f"| {p['arch']} | {p['size']} | {p['batch']} | {p['backend']} | {ours['label']} | "
                     f"{plain['label']} | {policy} | {rates[0]} | {rates[1]} | {ratio} | {compile_s} | "
                     f"{ours.get('log_syncs_per_step', '')} | {p['budget_s']} |")
    return lines


def render_earlier_throughput(part):
    """The throughput rows measured with the harness before issue 38."""
    lines = ["**Measured with the earlier harness**, kept until a GPU session reruns the part: kerascnn's LeNet "
             "rows in float32 against bf16 plain loops; kerascnn timed by a step-timer callback whose batch hook "
             "made Keras wait for the device after every step; all of a backend's rows in one process sharing "
             "one budget (so VGG-16 under jax and the `torch.compile` rows were never reached, and each plain "
             "loop reused the XLA autotuning of the kerascnn row before it); *first step* is kerascnn's first "
             "step but the plain loops' whole warm-up, compilation included in both. Under torch kerascnn "
             "trained through Keras' own torch step then; the harness now runs its native step "
             "(kerascnn.training.torch_native; each fit row says which in `torch_step`).", "",
             f"Images per second after {part['warmup_steps']} warm-up steps, over "
             f"{part['steps'] - part['warmup_steps']} steps (Fashion-MNIST's 28x28 images resized on the "
             "device; the plain loops on random images resident on the device).", "",
             "| network | size | batch | how | backend | images/s | policy | first step (s) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in part["rows"]:
        if "error" in r:
            rate, policy = not_measured(r), ""
        else:
            rate = f"{r['images_per_s']:,.0f}"
            policy = r.get("dtype_policy") or ("bf16" if r.get("bf16") else "float32")
        first = r.get("first_step_s", r.get("warmup_s", ""))
        lines.append(f"| {r['arch']} | {r['size']} | {r['batch']} | {r['label']} | {r['backend']} | {rate} | "
                     f"{policy} | {first} |")
    return lines


def render_inputs(part):
    lines = ["", "The input path alone (host: TrainingBatches' gather and draws on a thread; device: "
             "InputTransform with crop and flip, training):", "",
             "| size | batch | backend | host images/s | device images/s |", "|---|---|---|---|---|"]
    for r in part["inputs"]:
        if "error" in r:
            lines.append(f"| {r['size']} | {r['batch']} | {r['backend']} | {not_measured(r)} | |")
        else:
            lines.append(f"| {r['size']} | {r['batch']} | {r['backend']} | {r['host_images_per_s']:,.0f} | "
                         f"{r['device_images_per_s']:,.0f} |")
    return lines


def render_study(name, part):
    """A study part's lines: each run's accuracy and time."""
    if not part.get("runs"):
        return [f"Failed: {part.get('error')}"]
    wall = f"{part['wall_seconds']:.0f} s in all" if part.get("wall_seconds") else \
        f"stopped after {part['seconds']:.0f} s, the runs it finished: {part['error']}"
    if part.get("earlier"):
        e = part["earlier"]
        wall += (f"; the other variants' runs come from an earlier run of the part ({e['date']}, "
                 f"stopped after {e['seconds']:.0f} s: {e.get('error') or 'complete'})")
    lines = [f"`kerascnn study --preset {name} --seeds 1` under jax, {wall}.", "",
             "| run | image size | batch | epochs | test accuracy | training s | policy |",
             "|---|---|---|---|---|---|---|"]
    for r in part["runs"]:
        size = r.get("input_shape") or [r.get("image_size")]
        label = r["arch"] + (f" {r['optimizer']}" if name.startswith("optimizer") else "") + \
            (f" lr {r['lr']:g}" if name == "optimizer-sweep" else "")
        lines.append(f"| {label} | {size[0]} | {r['batch_size']} | {r['epochs']} | "
                     f"{r['test_accuracy']:.4f} | {r['train_seconds']:.1f} | {r['dtype_policy']} |")
    return lines


def write_docs(path=RESULTS, tiny=False):
    """docs/gpu.md's block from the results at `path` (with `tiny`, a doc beside them instead)."""
    results = json.loads(Path(path).read_text())
    if any(part.get("tiny") for part in results.values()) and path == RESULTS:
        sys.exit("refusing to write docs from --tiny results")
    doc = Path(path).with_suffix(".md") if tiny else DOC
    write_block(doc, "gpu", render(results), append=tiny)
    print(f"wrote {doc}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", action="append", choices=PARTS, help="a part to run (repeatable)")
    parser.add_argument("--tiny", action="store_true", help="the same code on tiny data and sizes (a CPU, seconds)")
    parser.add_argument("--data-dir", default=os.environ.get("KERASCNN_DATA_DIR") or str(REPO.parent / "shared/data"))
    parser.add_argument("--results", type=Path, help=f"the results JSON [{RESULTS.relative_to(REPO)}]")
    parser.add_argument("--write-docs", action="store_true", help=f"write {DOC.relative_to(REPO)} from the results")
    parser.add_argument("--seconds", type=int, default=290,
                        help="the most a study part may take (its process is stopped then, keeping what it measured); "
                             "the throughput part's rows have budgets of their own")
    parser.add_argument("--backend", action="append", choices=("jax", "torch"),
                        help="the throughput part: only this backend's rows (repeatable); the others' earlier rows "
                             "are kept")
    parser.add_argument("--variant", action="append",
                        help="a study part: run only this variant (repeatable); the others' earlier runs are kept")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return run_tasks(json.loads(args.child))
    path = args.results or (Path(tempfile.gettempdir()) / "kerascnn-gpu-tiny.json" if args.tiny else RESULTS)
    results = json.loads(path.read_text()) if path.exists() else {}
    args.earlier = results
    for name in args.part or ():
        start = time.perf_counter()
        print(f"== part {name}", flush=True)
        result = PART_FUNCTIONS[name](args)
        result.update(date=datetime.date.today().isoformat(), machine=machine(gpu=True), versions=versions(),
                      seconds=round(time.perf_counter() - start, 1), tiny=args.tiny)
        results[name] = result
        write_json(path, results)
        print(f"== part {name}: {result['seconds']:.0f} s, written to {path}", flush=True)
    if args.write_docs:
        write_docs(path, args.tiny)
    failed = args.tiny and "throughput" in (args.part or ()) and results["throughput"]["failed"]
    if failed:  # --tiny checks the code: a row that fails on a CPU would fail on the GPU
        sys.exit(f"--tiny: {len(failed)} throughput rows failed: {'; '.join(failed)}")


if __name__ == "__main__":
    main()
