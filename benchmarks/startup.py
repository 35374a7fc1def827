"""Section "startup" of performance.py: evaluate's images/s on a saved
LeNet, and `kerascnn fit` from the command to its first training step, with
the peak RSS of each process.
"""

import json
import sys
import tempfile
import time
from pathlib import Path

from harness import REPO, child_env, error_of, run_child, worker
from loops import RELU_LENET
from report import failures, number, table


@worker
def train_lenet(output, train_images):
    """A saved LeNet run (ReLU, max pooling, 1 epoch) for `evaluate`."""
    from kerascnn import fit

    result = fit("lenet", "fashion_mnist", **RELU_LENET, epochs=1, train_size=train_images, output=output, verbose=0)
    return {"model": str(result.model_path)}


@worker
def evaluate_run(model, output):
    """kerascnn.evaluate on the saved run (predictions, report, figures),
    then the model's predict alone on the same test pipeline, warm."""
    from kerascnn import evaluate
    from kerascnn.data.loader import make_pipeline
    from kerascnn.runs.saved import Run

    start = time.perf_counter()
    result = evaluate(model, output=output)
    seconds = time.perf_counter() - start
    run = Run.load(model)
    keras_model, data = run.model(), run.load_data()
    mean, std = run.stats_for(data)
    test = make_pipeline(data.x_test, data.y_test, input_shape=keras_model.input_shape[1:], mean=mean, std=std,
                         batch_size=256, resize=run.resize)
    keras_model.predict(test, verbose=0)
    start = time.perf_counter()
    keras_model.predict(test, verbose=0)
    predict = time.perf_counter() - start
    n = len(data.x_test)
    return {"images": n, "evaluate_s": seconds, "images_per_s": n / seconds, "predict_images_per_s": n / predict,
            "accuracy": result.accuracy}


# `kerascnn ARGS` as the console script runs it (kerascnn.cli.commands.main), writing time stamps
# (time.time(), the parent's clock) at each of fit's stages and at its first training step
# to the JSON file argv[1]; argv[2] is when the parent spawned it.
HOOK = r"""
import json, sys, time
marks_path, marks = sys.argv[1], {"spawned": float(sys.argv[2]), "python_started": time.time()}
import kerascnn.cli.commands as cli
import kerascnn.training.plan as plan
import kerascnn.training.fit as train
marks["cli_imported"] = time.time()

def stamped(name, fn):
    def call(*args, **kwargs):
        marks.setdefault(name + "_begin", time.time())
        try:
            return fn(*args, **kwargs)
        finally:
            marks.setdefault(name + "_end", time.time())
    return call

def fit_with_marks(*args, callbacks=(), fit=train.fit, **kwargs):
    import keras

    class FirstStep(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            marks.setdefault("first_step", time.time())

        def on_epoch_end(self, epoch, logs=None):
            marks.setdefault("first_epoch", time.time())

    return fit(*args, callbacks=[*callbacks, FirstStep()], **kwargs)

train.fit = stamped("fit", fit_with_marks)
for module, stage in ((plan, "load_data"), (plan, "resolve_settings"), (plan, "build_or_resume"),
                      (train, "train"), (train, "finish")):
    setattr(module, stage, stamped(stage, getattr(module, stage)))
sys.argv = ["kerascnn", *sys.argv[3:]]
try:
    cli.main()
finally:
    marks["exit"] = time.time()
    with open(marks_path, "w") as f:
        json.dump(marks, f)
"""


def startup_timeline(marks):
    """Seconds of each stage from the spawn of `kerascnn fit` to its exit."""
    t0 = marks["spawned"]
    points = [("Python started", "python_started"), ("kerascnn.cli.commands imported", "cli_imported"),
              ("TensorFlow and Keras imported, options checked", "fit_begin"),
              ("data loaded", "load_data_end"), ("defaults resolved", "resolve_settings_end"),
              ("model built and compiled", "build_or_resume_end"), ("first training step done", "first_step"),
              ("first epoch done, validation included", "first_epoch"), ("training done", "train_end"),
              ("test set evaluated, run saved", "finish_end"), ("process exited", "exit")]
    return [(label, round(marks[key] - t0, 2)) for label, key in points if key in marks]


def fit_command(net, images, output):
    options = ["--activation", "relu", "--pool", "max"] if net == "lenet" else []
    subset = ["--train-size", str(images)] if images else []
    return ["fit", "--arch", net, *options, "--dataset", "fashion_mnist", "--epochs", "1", *subset,
            "--output", output]


def section(runner):
    """evaluate's images/s; time to the first step and peak RSS of `kerascnn fit`."""
    b = runner.budget
    out = {}
    with tempfile.TemporaryDirectory(prefix="kerascnn-perf-") as work:
        saved = runner.measure("train_lenet", {"output": work, "train_images": b.startup_images["lenet"] or 4096},
                               label="train a LeNet to evaluate")
        if "error" not in saved:
            out["evaluate"] = runner.measure("evaluate_run", {"model": saved["model"], "output": work},
                                             label="kerascnn.evaluate")
            out["evaluate_cli"] = cli_run(runner, ["evaluate", saved["model"], "--output", work], work)
        out["fits"] = {}
        for net, images in b.startup_images.items():
            args = fit_command(net, images, str(Path(work) / net))
            out["fits"][net] = {"command": "kerascnn " + " ".join(fit_command(net, images, "OUT")),
                                **cli_run(runner, args, work, marks=True)}
    return out


def cli_run(runner, args, cwd, marks=False):
    """`kerascnn ARGS` in a fresh process: wall seconds and peak RSS, and with
    `marks` the time line of fit's stages (HOOK)."""
    with tempfile.TemporaryDirectory() as folder:
        marks_path = Path(folder) / "marks.json"
        launcher = ["-c", HOOK, str(marks_path), repr(time.time())] if marks else [str(REPO / "cli.py")]
        env = child_env("tensorflow", runner.data_dir)
        child = run_child([sys.executable, *launcher, *args], env, runner.budget.timeout, cwd=cwd)
        wall, rss = child.wall, child.rss
        result = {"wall_s": round(wall, 2), "peak_rss_mb": round(rss)}
        if child.code != 0:
            result["error"] = error_of(child, runner.budget.timeout)
        elif marks:
            result["timeline"] = startup_timeline(json.loads(marks_path.read_text()))
    print(f"  kerascnn {args[0]} {args[1] if args[0] == 'evaluate' else args[2]}: "
          f"{result.get('error') or f'{wall:.1f} s, {rss:.0f} MB'}", flush=True)
    return result


def render(s):
    parts = []
    ev, cli = s.get("evaluate"), s.get("evaluate_cli")
    if ev and "error" not in ev:
        parts.append(
            f"**evaluate**: `kerascnn.evaluate` of a saved LeNet (ReLU, max pooling) on the {ev['images']:,} test "
            f"images: {ev['evaluate_s']:.2f} s in the process, {number(ev['images_per_s'])} images/s with its "
            f"report and figures; the model's `predict` alone on the same pipeline, warm: "
            f"{number(ev['predict_images_per_s'])} images/s. The command `kerascnn evaluate MODEL` from spawn to "
            f"exit: {cli['wall_s']:.1f} s, peak RSS {cli['peak_rss_mb']} MB.")
    fits = s.get("fits", {})
    ok = {net: f for net, f in fits.items() if "error" not in f}
    if ok:
        labels = [label for label, _ in max(ok.values(), key=lambda f: len(f["timeline"]))["timeline"]]
        rows = [[label] + [number(dict(f["timeline"]).get(label)) for f in ok.values()] for label in labels]
        rows.append(["**peak RSS, MB**"] + [f"**{f['peak_rss_mb']}**" for f in ok.values()])
        commands = "\n".join(f"- {net}: `{f['command']}`" for net, f in ok.items())
        parts.append(
            "**From the command to the first training step**, and **peak RSS** (the process's `ru_maxrss`, from "
            "`os.wait4`): `kerascnn fit` started as the console script does (`kerascnn.cli.commands.main`) in a fresh "
            "process, TensorFlow backend, with time stamps at each of fit's stages (its functions wrapped, and a "
            "callback at the first `on_train_batch_end`); seconds since the process was spawned:\n\n"
            + commands + "\n\n" + table(["reached", *ok], rows))
    return "\n\n".join(parts) + failures(("evaluate", ev), ("kerascnn evaluate", cli),
                                         *((f"kerascnn fit {n}", f) for n, f in fits.items()))
