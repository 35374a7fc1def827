"""Where kerascnn's training time goes on a CPU, against what a user would
write without it: nine sections, each configuration in its own process, one
after another.

    python benchmarks/performance.py                       # every section (about 1 h on 2 cores)
    python benchmarks/performance.py --only side-by-side backends
    python benchmarks/performance.py --only archs --arch lenet resnet18
    python benchmarks/performance.py --quick --results /tmp/performance.json   # smoke test, minutes
    python benchmarks/performance.py --write-docs          # docs/performance.md from the results

Sections (`--only`), each measured and rendered by its own module:
  archs         throughput.py    images/s of fit's own path for every architecture at its CPU size and batch size
  side-by-side  throughput.py    LeNet and ResNet-18 through kerascnn, a bare model.fit, a plain PyTorch loop
                                 (eager and torch.compile); the machine's sgemm rate and the share of it each reaches
  backends      backends.py      kerascnn on each Keras backend against a training step written in that framework
  pipeline      pipeline.py      make_training_pipeline alone at 32, 96 and 224 px beside the training step
  startup       startup.py       evaluate's images/s; from `kerascnn fit` to its first training step; peak RSS
  scaling       scaling.py       epoch time against image size and batch size (docs/images/performance_scaling.png)
  profile       step_profile.py  the training step phase by phase, TensorFlow against PyTorch
  scale-out     scale_out.py     fit on 1 and 2 MultiWorkerMirroredStrategy workers, a study in 1 and 2 shards
  host-cost     host_proxy.py    ms per step where compute is tiny (LeNet, narrow ResNet-18, batch 8): kerascnn
                                 against each framework's plain loop, and fit's host syncs per step
  torch-step    torch_step.py    the torch step: kerascnn's native step, Keras' own, channels_first, --jit on,
                                 against plain PyTorch eager and compiled (LeNet b8, ResNet-18 b8 and b64)
The training loops they time are in loops.py; harness.py runs each in a child.

Fashion-MNIST comes through kerascnn's loader (KERASCNN_DATA_DIR, else
../shared/data). Every invocation first measures the machine's sgemm rate.
A section's results replace its entry in the results JSON
(benchmarks/results/performance.json; --quick without --results writes to
the temporary folder); `--write-docs` renders each section into its block
of docs/performance.md (`<!-- docs.py performance-SECTION -->`) and the
plot, and refuses to write the committed doc from --quick results. Run it
with nothing else on the machine.
"""

import argparse
import dataclasses
import datetime
import json
import sys
import tempfile
import time
from pathlib import Path

import backends
import host_proxy
import pipeline
import scale_out
import scaling
import startup
import step_profile
import throughput
import torch_step
from harness import REPO, RESULTS_DIR, Runner, data_dir, machine, read_json, relative, run_worker, versions, write_json
from report import number, write_block

DOC = REPO / "docs" / "performance.md"
SECTIONS = {  # name: (measure(runner), render(results), title)
    "archs": (throughput.archs, throughput.render_archs, "1. Throughput per architecture"),
    "side-by-side": (throughput.side_by_side, throughput.render_side_by_side, "2. LeNet and ResNet-18 side by side"),
    "backends": (backends.section, backends.render, "3. Each Keras backend against its own framework"),
    "pipeline": (pipeline.section, pipeline.render, "4. The input pipeline alone"),
    "startup": (startup.section, startup.render, "5. Evaluate, start-up and memory"),
    "scaling": (scaling.section, scaling.render, "6. Epoch time against image and batch size"),
    "profile": (step_profile.section, step_profile.render, "7. Where a training step's time goes"),
    "scale-out": (scale_out.section, scale_out.render, "8. One process against two: workers and study shards"),
    "host-cost": (host_proxy.section, host_proxy.render, "9. Host cost per step"),
    "torch-step": (torch_step.section, torch_step.render, "10. The torch step: native, Keras' own, plain PyTorch"),
}
BLOCKS = ["performance-machine", *(f"performance-{name}" for name in SECTIONS)]  # in docs/performance.md


@dataclasses.dataclass(frozen=True)
class Budget:
    """How much each section measures: the real run, or --quick's smoke test."""

    steps: int = 30  # archs: batches in each timed epoch
    repeats: int = 2  # timed epochs after the warm-up epoch
    batch_cap: int = None  # --quick: no batch larger than this
    lenet_images: int = None  # side-by-side LeNet: None = all 60,000
    resnet_steps: int = 40  # side-by-side ResNet-18: batches an epoch
    compile_resnet: bool = True  # torch.compile of ResNet-18 (minutes of compilation)
    sgemm_n: int = 2048
    pipeline_sizes: tuple = (32, 96, 224)
    pipeline_steps: int = 200
    consumer_steps: int = 5
    scaling_sizes: dict = dataclasses.field(default_factory=lambda: {"lenet": (28, 56, 96, 160, 224),
                                                                     "resnet18": (32, 64, 96, 160, 224)})
    scaling_batches: tuple = (32, 64, 128, 256)
    scaling_pixels: int = 4096 * 28 * 28  # pixels of a timed scaling epoch (2 to 20 batches)
    startup_images: dict = dataclasses.field(default_factory=lambda: {"lenet": None, "resnet18": 4096})
    # LeNet at batch 250: 216 steps an epoch, 12 a call (256 makes 211, a prime: 1 a call)
    scale_out: dict = dataclasses.field(default_factory=lambda: {"lenet": (250, None, 3), "resnet18": (64, 2560, 3)})
    study_images: int = 10_000
    host_images: dict = dataclasses.field(default_factory=lambda: {"lenet": 16384, "resnet18": 2048})
    host_rounds: int = 5  # host-cost: processes a side, alternating which side goes first
    profile_repeats: int = 30
    profile_op_steps: int = 10
    timeout: int = 3600

    @property
    def epochs(self):
        """Epochs a configuration trains: the warm-up one and the timed ones."""
        return 1 + self.repeats

    def batch(self, size):
        return min(size, self.batch_cap) if self.batch_cap else size


FULL = Budget()
QUICK = Budget(steps=2, repeats=1, batch_cap=16, lenet_images=256, resnet_steps=2, compile_resnet=False, sgemm_n=256,
               pipeline_sizes=(32, 64), pipeline_steps=3, consumer_steps=2,
               scaling_sizes={"lenet": (28, 32), "resnet18": (32,)}, scaling_batches=(8, 16),
               scaling_pixels=32 * 28 * 28, startup_images={"lenet": 512, "resnet18": 128},
               scale_out={"lenet": (32, 512, 2), "resnet18": (16, 128, 2)}, study_images=256, profile_repeats=3,
               host_images={"lenet": 256, "resnet18": 64}, host_rounds=1,
               profile_op_steps=2,
               timeout=300)




# ----------------------------------------------------------------------------- the report


def load_averages(value):
    """Every `load_before` in a section's results."""
    if isinstance(value, dict):
        return ([value["load_before"]] if "load_before" in value else []) + \
            [x for v in value.values() if isinstance(v, (dict, list, tuple)) for x in load_averages(v)]
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in load_averages(v)]
    return []


def render_section(name, s):
    """One section's Markdown: title, the command, date and machine load, its table."""
    _, render, title = SECTIONS[name]
    loads = load_averages(s)
    load = f"; 1-minute load average before its configurations {min(loads):.2f}–{max(loads):.2f}" if loads else ""
    return (f"## {title}\n\n*Measured by `{s['command']}` on {s['date']} ({s['wall_s'] / 60:.0f} min{load})*"
            + (" — **--quick smoke test, not a measurement**" if s.get("quick") else "") + f"\n\n{render(s)}\n")


def describe_machine(m, v, sgemm):
    installed = ", ".join(f"{k} {x}" for k, x in v.items() if x)
    missing = ", ".join(k for k, x in v.items() if not x)
    return (f"{m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, {m['system']}, Python {m['python']}; {installed}"
            + (f" (not installed: {missing})" if missing else "")
            + (f"; sgemm {number(sgemm['gflops'])} GFLOP/s in the newest run (each section's shares use its own run's)"
               if sgemm and sgemm.get("gflops") else ""))


def render_machine(sections, results_path):
    """The block above the sections: where every figure comes from, and the machine."""
    newest = max(sections.values(), key=lambda s: s["date"])
    machines = {json.dumps([s["machine"], s["versions"]], sort_keys=True) for s in sections.values()}
    text = (f"Every figure below comes from `benchmarks/performance.py`, each configuration in its own process, one "
            f"after another; each section names the command that measured it. Results: "
            f"`{relative(results_path)}`; the sections are written from them by "
            f"`python benchmarks/performance.py --write-docs`.\n\n"
            f"Machine: {describe_machine(newest['machine'], newest['versions'], newest.get('sgemm'))}.")
    if len(machines) > 1:
        text += ("\n\n**The sections were measured on different machines or versions**: see each section's record "
                 "in the JSON.")
    return text


def write_docs(results_path, doc):
    """Each section's block of docs/performance.md (and the scaling plot
    beside it, in images/) from the results JSON."""
    sections = read_json(results_path)["sections"]
    quick = [n for n, s in sections.items() if s.get("quick")]
    if quick and Path(doc).resolve() == DOC.resolve():
        sys.exit(f"{results_path} holds --quick results ({', '.join(quick)}): not writing {DOC}; "
                 "give --doc elsewhere for a smoke test")
    image = Path(doc).parent / "images" / scaling.PLOT
    if "scaling" in sections:
        scaling.plot(sections["scaling"], image)
    write_block(doc, "performance-machine", render_machine(sections, results_path), append=True)
    for name in SECTIONS:
        if name in sections:
            write_block(doc, f"performance-{name}", render_section(name, sections[name]), append=True)
    print(f"wrote {doc}" + (f" and {image}" if "scaling" in sections else ""))


# ----------------------------------------------------------------------------- measuring


def command(args, name):
    parts = ["python benchmarks/performance.py --only", name]
    if args.quick:
        parts.append("--quick")
    if name == "archs" and args.arch:
        parts += ["--arch", *args.arch]
    return " ".join(parts)


def measure_sgemm(runner):
    """The machine's sgemm rate in NumPy and in torch, each in its own process; the higher counts."""
    sgemm = {library: runner.measure("sgemm", {"n": runner.budget.sgemm_n, "library": library}, label=library)
             for library in ("numpy", "torch")}
    sgemm["gflops"] = max((r["best"] for r in sgemm.values() if "error" not in r), default=None)
    return sgemm


def measure_sections(args, results_path):
    runner = Runner(Path(__file__).resolve(), QUICK if args.quick else FULL, data_dir())
    report = read_json(results_path, {"sections": {}})
    print("sgemm ...", flush=True)
    sgemm = measure_sgemm(runner)
    for name in args.only or SECTIONS:
        print(f"{name} ...", flush=True)
        start = time.perf_counter()
        measure = SECTIONS[name][0]
        result = measure(runner, args.arch) if name == "archs" else measure(runner)
        report["sections"][name] = {
            "command": command(args, name), "date": datetime.datetime.now().isoformat(timespec="minutes"),
            "quick": args.quick, "wall_s": round(time.perf_counter() - start), "machine": machine(),
            "versions": versions(), "sgemm": sgemm, **result}
        write_json(results_path, report)  # after each section: a crash keeps the rest
        print(render_section(name, report["sections"][name]), flush=True)
    print(f"wrote {results_path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=list(SECTIONS), metavar="SECTION", help=", ".join(SECTIONS))
    parser.add_argument("--arch", nargs="+", choices=throughput.ARCHS, metavar="ARCH",
                        help=f"archs section: only these ({', '.join(throughput.ARCHS)})")
    parser.add_argument("--quick", action="store_true", help="smoke test: a few steps, small batches and images")
    parser.add_argument("--results", type=Path, help=f"the results JSON [{relative(RESULTS_DIR / 'performance.json')}; "
                                                     "with --quick, performance-quick.json in the temporary folder]")
    parser.add_argument("--write-docs", action="store_true", help="only render the results JSON into --doc")
    parser.add_argument("--doc", type=Path, default=DOC, help=f"[{relative(DOC)}]")
    parser.add_argument("--worker", nargs=2, metavar=("NAME", "PARAMS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return run_worker(*args.worker)
    results = args.results or (Path(tempfile.gettempdir()) / "performance-quick.json" if args.quick
                               else RESULTS_DIR / "performance.json")
    if args.write_docs:
        return write_docs(results, args.doc)
    measure_sections(args, results)


if __name__ == "__main__":
    main()
