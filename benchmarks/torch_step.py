"""Section "torch-step" of performance.py: kerascnn's training step under
torch, native (kerascnn.training.torch_native) against Keras' own torch step and a
plain PyTorch loop, eager and compiled, on this CPU (`section`, `render`).

    python benchmarks/performance.py --only torch-step          # about 8 minutes on 2 cores
    python benchmarks/performance.py --only torch-step --quick --results /tmp/p.json

Three cases: where compute is tiny and the host is the step (LeNet at
batch 8, ResNet-18 at a quarter width at batch 8: the CPU proxy of issue
39), and ResNet-18 at full width on 32 px at batch 64, where the
arithmetic dominates. Each side runs in its own process (one warm-up
epoch, then two timed; their median), the sides of a round in turn, the
round's order reversed each round; milliseconds per step are medians over
the rounds, ratios of medians of this one run. kerascnn's sides: its fit
path (loops.kerascnn_fit, whole epochs timed) with the native step (the
default), with Keras' own step (KERASCNN_TORCH_NATIVE=0), with the native
step on contiguous NCHW input ("channels_first") and with `--jit on`
(torch.compile of the native forward pass and loss; one round, its
compilation in the warm-up epoch).
"""

import statistics

from backends import framework_params, kerascnn_params
from report import failures, number, table

CASES = {  # name: (net, size, batch, width, images key)
    "lenet b8": ("lenet", 28, 8, 1.0),
    "resnet18 b8, width 0.25": ("resnet18", 32, 8, 0.25),
    "resnet18 b64": ("resnet18", 32, 64, 1.0),
}
ROUNDED = ("native", "keras", "plain", "channels_first")  # sides measured every round
ONCE = {"lenet b8": ("jit", "compiled"), "resnet18 b8, width 0.25": (),
        "resnet18 b64": ("compiled",)}  # sides measured in the first round only
LABELS = {"native": "kerascnn, native step (default)", "keras": "kerascnn, Keras' own torch step",
          "channels_first": "kerascnn, native step, contiguous NCHW input", "jit": "kerascnn, native step, --jit on",
          "plain": "plain PyTorch loop, eager", "compiled": "plain PyTorch loop, torch.compile"}
IMAGES = {"lenet": 4096, "resnet18": 1024}  # a timed epoch's images (--quick: the budget's)
ROUNDS = 3  # at most (--quick: the budget's 1)
BAR = 0.6  # issue 39: the native step at least this share of the plain eager loop's speed, LeNet at batch 8


def ms_per_step(result, batch):
    return None if not result or "error" in result else 1000 * batch / result["images_per_s"]


def sides(runner, case):
    net, size, batch, width = CASES[case]
    b = runner.budget
    images = min(IMAGES[net], b.host_images[net])
    ours = {**kerascnn_params(net, size, batch, images, b), "epochs": 3, "batch_times": False}
    if net != "lenet":
        ours["options"].update(width=width, resize="pad")
    plain = {**framework_params(net, size, batch, images, b), "epochs": 3, "width": width}
    return {
        "native": ("kerascnn_fit", ours),
        "keras": ("kerascnn_fit", {**ours, "torch_step": "keras"}),
        "channels_first": ("kerascnn_fit", {**ours, "torch_step": "channels_first"}),
        "jit": ("kerascnn_fit", {**ours, "options": {**ours["options"], "jit": "on"}}),
        "plain": ("raw_torch", plain),
        "compiled": ("raw_torch", {**plain, "compile": True}),
    }, images


def section(runner):
    rows = []
    for case, (net, size, batch, width) in CASES.items():
        spec, images = sides(runner, case)
        rounds = []
        for i in range(min(ROUNDS, runner.budget.host_rounds)):
            names = list(ROUNDED) + (list(ONCE[case]) if i == 0 else [])
            if "compiled" in names and net != "lenet" and not runner.budget.compile_resnet:
                names.remove("compiled")  # --quick: no torch.compile of ResNet-18
            rounds.append({name: runner.measure(*spec[name], "torch", label=f"{case} {name}, round {i + 1}",
                                                repeat=i)
                           for name in (names[::-1] if i % 2 else names)})
        rows.append({"case": case, "net": net, "size": size, "batch": batch, "width": width, "images": images,
                     "rounds": rounds})
    return {"rows": rows, "rounds": min(ROUNDS, runner.budget.host_rounds)}


def summarize(row):
    """Median ms per step of each side over the rounds it ran in, and each round's native / plain ratio."""
    ms = {}
    for name in LABELS:
        values = [ms_per_step(r.get(name), row["batch"]) for r in row["rounds"] if name in r]
        ms[name] = statistics.median(values) if values and None not in values else None
    each = [ms_per_step(r["plain"], row["batch"]) / ms_per_step(r["native"], row["batch"]) for r in row["rounds"]
            if ms_per_step(r.get("plain"), row["batch"]) and ms_per_step(r.get("native"), row["batch"])]
    return {"ms": ms, "round_ratios": [min(each), max(each)] if each else None}


def ratio(a, b):
    return f"{a / b:.2f}×" if a and b else "–"


def render(s):
    rows, failed = [], []
    for row in s["rows"]:
        summary = summarize(row)
        ms = summary["ms"]
        for name in LABELS:
            if not any(name in r for r in row["rounds"]):
                continue
            n = sum(name in r for r in row["rounds"])
            rows.append([row["case"], LABELS[name], number(ms[name], 2), f"{n}",
                         ratio(ms["plain"], ms[name]),
                         ratio(ms["keras"], ms[name]) if name not in ("keras", "plain", "compiled") else "–",
                         "{:.2f}–{:.2f}×".format(*summary["round_ratios"])
                         if name == "native" and summary["round_ratios"] else "–"])
        for i, rnd in enumerate(row["rounds"]):
            failed += [(f"{row['case']}, {name}, round {i + 1}", rnd[name]) for name in rnd]
    lenet = next((summarize(r)["ms"] for r in s["rows"] if r["case"] == "lenet b8"), {})
    verdict = "–"
    if lenet.get("native") and lenet.get("plain"):
        got = lenet["plain"] / lenet["native"]
        verdict = f"{got:.2f}× the plain eager loop's speed: " + ("met" if got >= BAR else "**not met**")
    return (
        "Milliseconds of one training step under torch on this CPU: LeNet (ReLU, max pooling) on 28 px "
        "Fashion-MNIST and ResNet-18 on 32 px (28 px zero-padded, kerascnn with `--resize pad`), AdamW. "
        "kerascnn's fit path with its native step (`kerascnn.training.torch_native`, the default under torch), with "
        "Keras' own torch step (`KERASCNN_TORCH_NATIVE=0`), with the native step on contiguous NCHW input "
        "instead of the channels-last view (*channels_first*), and with `--jit on` (torch.compile of the native "
        "forward pass and loss); the plain PyTorch loop of section 3 (the same networks in `torch.nn`, NCHW "
        "in memory, `torch.optim.AdamW`), eager and through `torch.compile`. Each side ran in its own "
        f"process, one warm-up epoch (compilation) and two timed ones (their median); {s['rounds']} "
        f"round{'s' if s['rounds'] != 1 else ''} of the native, Keras, channels_first and plain eager sides, the "
        "others in the first round "
        "only (*rounds*), the order reversed each round; figures are medians over the rounds. *vs plain*: "
        "the plain eager loop's ms over the side's (above 1: faster than plain); *vs Keras' step*: Keras' "
        "own step's ms over the side's; *each round's*: the native / plain eager speed ratio of each round, "
        f"lowest and highest. Issue 39's bar, LeNet at batch 8: {verdict}.\n\n"
        + table(["case", "side", "ms/step", "rounds", "speed vs plain eager", "speed vs Keras' step",
                 "each round's"], rows, text=2)
        + failures(*failed))
