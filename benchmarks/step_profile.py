"""Section "profile" of performance.py: a training step phase by phase
(forward, backward, optimizer and the rest), kerascnn's model on TensorFlow
against the same network in PyTorch, and the costliest operators of a step
on torch, Keras' torch backend against the plain PyTorch loop.
"""

import statistics
import time

from backends import cases
from harness import worker
from loops import RELU_LENET, torch_lenet, torch_resnet18
from report import failures, number, table


def phase_times(fns, repeats):
    """Median milliseconds of each fn() in `fns` (name -> fn), after 3
    warm-up calls, the phases interleaved `repeats` times."""
    for fn in fns.values():
        for _ in range(3):
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(1000 * (time.perf_counter() - start))
    return {name: round(statistics.median(t), 3) for name, t in times.items()}


@worker
def profile_tf(net, size, batch, repeats):
    """The training step of kerascnn's model on TensorFlow, phase by phase
    (one batch in memory): the forward pass in training mode, forward and
    backward (tf.GradientTape), and Keras' whole train step (AdamW, loss and
    accuracy metrics) through train_on_batch."""
    import numpy as np
    import tensorflow as tf

    from kerascnn.models import build_model
    from kerascnn.optim.optimizers import make_optimizer
    from kerascnn.training.plan import compile_model

    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((batch, size, size, 1), dtype=np.float32))
    y = tf.constant(rng.integers(0, 10, batch).astype(np.int32))
    model = build_model(net, input_shape=(size, size, 1), num_classes=10, **(RELU_LENET if net == "lenet" else {}))
    compile_model(model, make_optimizer("adamw"))
    loss_fn = model.loss

    @tf.function
    def forward():
        return model(x, training=True)

    @tf.function
    def forward_backward():
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        return tape.gradient(loss, model.trainable_variables)

    def step():
        model.train_on_batch(x, y)

    ms = phase_times({"forward": lambda: forward().numpy(), "forward_backward":
                      lambda: [g.numpy() for g in forward_backward()[:1]], "step": step}, repeats)
    return {**ms, "threads": [tf.config.threading.get_intra_op_parallelism_threads(),
                              tf.config.threading.get_inter_op_parallelism_threads()], "backend": "tensorflow"}


@worker
def profile_torch(net, size, batch, repeats):
    """The same phases in the plain PyTorch loop (eager): forward in training
    mode, forward and backward, and the whole step with AdamW."""
    import torch

    torch.manual_seed(0)
    x = torch.randn(batch, 1, size, size)
    y = torch.randint(0, 10, (batch,))
    model = torch_lenet(size) if net == "lenet" else torch_resnet18()
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.004, eps=1e-7)
    loss_fn = torch.nn.CrossEntropyLoss()

    def forward():
        model(x)

    def forward_backward():
        model.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        optimizer.step()

    ms = phase_times({"forward": forward, "forward_backward": forward_backward, "step": step}, repeats)
    return {**ms, "threads": torch.get_num_threads(), "backend": "torch"}


def torch_op_profile(step, steps):
    """torch.profiler over `steps` calls of step(): self CPU milliseconds a
    step, in all and for the 12 costliest operators (with calls a step)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    events = [e for e in prof.key_averages() if not e.key.startswith("ProfilerStep")]
    total = sum(e.self_cpu_time_total for e in events)
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:12]
    return {"self_ms": round(total / 1000 / steps, 3),
            "top": [[e.key, round(e.self_cpu_time_total / 1000 / steps, 3), round(e.count / steps, 1)] for e in top]}


@worker
def profile_torch_ops(net, size, batch, steps, keras_model):
    """The operators a training step runs on torch, by self CPU time: Keras'
    torch backend running kerascnn's model (train_on_batch), or the plain
    PyTorch loop."""
    import numpy as np
    import torch

    rng = np.random.default_rng(0)
    if keras_model:
        from kerascnn.models import build_model
        from kerascnn.optim.optimizers import make_optimizer
        from kerascnn.training.plan import compile_model

        x = rng.standard_normal((batch, size, size, 1), dtype=np.float32)
        y = rng.integers(0, 10, batch).astype(np.int32)
        model = build_model(net, input_shape=(size, size, 1), num_classes=10,
                            **(RELU_LENET if net == "lenet" else {}))
        compile_model(model, make_optimizer("adamw"))

        def step():
            model.train_on_batch(x, y)
    else:
        x = torch.randn(batch, 1, size, size)
        y = torch.randint(0, 10, (batch,))
        model = torch_lenet(size) if net == "lenet" else torch_resnet18()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.004, eps=1e-7)
        loss_fn = torch.nn.CrossEntropyLoss()

        def step():
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            optimizer.step()
    for _ in range(3):
        step()
    return {**torch_op_profile(step, steps), "backend": "torch"}


def section(runner):
    """The training step phase by phase, TensorFlow (kerascnn's model) against PyTorch eager."""
    b = runner.budget
    nets = {}
    for net, (size, batch, _) in cases(b).items():
        p = {"net": net, "size": size, "batch": batch, "repeats": b.profile_repeats}
        ops = {"net": net, "size": size, "batch": batch, "steps": b.profile_op_steps}
        nets[net] = {"size": size, "batch": batch,
                     "tensorflow": runner.measure("profile_tf", p, label=f"{net} phases, tensorflow"),
                     "torch": runner.measure("profile_torch", p, "torch", label=f"{net} phases, torch"),
                     "keras_torch_ops": runner.measure("profile_torch_ops", {**ops, "keras_model": True}, "torch",
                                                       label=f"{net} operators, Keras on torch"),
                     "torch_ops": runner.measure("profile_torch_ops", {**ops, "keras_model": False}, "torch",
                                                 label=f"{net} operators, plain PyTorch")}
    return {"nets": nets, "repeats": b.profile_repeats, "op_steps": b.profile_op_steps}


def render(s):
    rows = []
    for net, n in s["nets"].items():
        for name in ("tensorflow", "torch"):
            r = n[name]
            if "error" in r:
                continue
            fwd, both, step = r["forward"], r["forward_backward"], r["step"]
            rows.append([f"{net} {n['size']} px b{n['batch']}", "TensorFlow (Keras)" if name == "tensorflow"
                         else "PyTorch eager", f"{fwd:.2f}", f"{both - fwd:.2f}", f"{step - both:.2f}",
                         f"{step:.2f}", number(n["batch"] / step * 1000)])
        t, p = n["tensorflow"], n["torch"]
        if "error" not in t and "error" not in p:
            rows.append([f"{net}: TensorFlow / PyTorch", "time ratio", f"{t['forward'] / p['forward']:.2f}",
                         f"{(t['forward_backward'] - t['forward']) / (p['forward_backward'] - p['forward']):.2f}",
                         f"{(t['step'] - t['forward_backward']) / max(p['step'] - p['forward_backward'], 1e-9):.2f}",
                         f"{t['step'] / p['step']:.2f}", ""])
    return ("One batch in memory, the median of " + str(s["repeats"]) + " interleaved repetitions after 3 warm-up "
            "ones, milliseconds: the forward pass in training mode; the backward pass (forward and gradients, "
            "less the forward); the rest of the step (the optimizer update, and on Keras' side its train step's "
            "loss and metric bookkeeping); the whole step. TensorFlow runs kerascnn's model (NHWC, "
            "`tf.function`, XLA off, Keras' `train_on_batch` for the step), PyTorch the same network eagerly "
            "(NCHW). A ratio above 1 is time TensorFlow spends beyond PyTorch.\n\n"
            + table(["network", "framework", "forward ms", "backward ms", "optimizer and rest ms", "step ms",
                     "images/s"], rows, text=2)
            + render_torch_ops(s)
            + failures(*((f"{net} {name}", n[name]) for net, n in s["nets"].items()
                         for name in ("tensorflow", "torch", "keras_torch_ops", "torch_ops") if name in n)))


def render_torch_ops(s):
    parts = []
    for net, n in s["nets"].items():
        keras_ops, plain = n.get("keras_torch_ops", {}), n.get("torch_ops", {})
        if "top" not in keras_ops or "top" not in plain:
            continue
        rows = []
        for i in range(max(len(keras_ops["top"]), len(plain["top"]))):
            k = keras_ops["top"][i] if i < len(keras_ops["top"]) else ["", None, None]
            p = plain["top"][i] if i < len(plain["top"]) else ["", None, None]
            rows.append([f"`{k[0]}`" if k[0] else "", number(k[1]), number(k[2]), f"`{p[0]}`" if p[0] else "",
                         number(p[1]), number(p[2])])
        rows.append(["**all operators**", f"**{number(keras_ops['self_ms'])}**", "", "**all operators**",
                     f"**{number(plain['self_ms'])}**", ""])
        parts.append(f"\n\n{net} {n['size']} px, batch {n['batch']}: the costliest operators of a training "
                     f"step on torch by self CPU time (`torch.profiler`, {s.get('op_steps', '')} steps after 3 "
                     "warm-up ones), Keras' torch backend running kerascnn's model (`train_on_batch`) beside the "
                     "plain PyTorch loop:\n\n"
                     + table(["Keras on torch: operator", "ms a step", "calls a step", "plain PyTorch: operator",
                              "ms a step", "calls a step"], rows))
    return "".join(parts)
