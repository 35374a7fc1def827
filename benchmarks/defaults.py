"""Do the families' defaults learn? Train each family for 2 epochs on 4,000
Fashion-MNIST images at its CPU size with its defaults (or with candidate
options), and measure test accuracy after epoch 1 and epoch 2 on all 10,000
test images.

    python benchmarks/defaults.py                        # every family, its defaults, seed 0
    python benchmarks/defaults.py --arch vgg16 --option lr=3e-4 --option init=he
    python benchmarks/defaults.py --arch nin --seeds 0 1 2
    python benchmarks/defaults.py --write-docs           # tables into docs/zoo.md from the results

Every run is appended to benchmarks/results/defaults.jsonl with its options
as given and as resolved, so the candidates tried stay on record beside the
defaults chosen; `--write-docs` renders both tables from that file (the
newest run of each setting) into docs/zoo.md's block
`<!-- docs.py zoo-defaults -->`. Needs the
real data: KERASCNN_DATA_DIR, else ../shared/data.
"""

import argparse
import datetime
import json
import statistics
import tempfile
from pathlib import Path

from harness import RESULTS_DIR, data_dir, machine, versions
from report import write_block

RESULTS = RESULTS_DIR / "defaults.jsonl"
SHOWN = ("optimizer", "lr", "weight_decay", "batch_size", "init", "batchnorm", "warmup", "image_size")


def parse_option(text):
    key, _, value = text.partition("=")
    try:
        return key.replace("-", "_"), json.loads(value)
    except json.JSONDecodeError:
        return key.replace("-", "_"), value


def train_and_score(arch, options, seed, train_size, epochs, data_dir):
    """One run: test accuracy after each epoch (from the per-epoch checkpoints)."""
    from kerascnn import evaluate, fit

    with tempfile.TemporaryDirectory() as out:
        result = fit(arch, "fashion_mnist", data_dir=data_dir, train_size=train_size, val_size=0, epochs=epochs,
                     seed=seed, save_every=1, output=out, verbose=0, **options)
        accuracy = [evaluate(Path(out) / f"{arch}.epoch-{e:03d}.keras", output=out).accuracy
                    for e in range(1, epochs)] + [result.test_accuracy]
    settings = result.settings
    return {
        "arch": arch, "options": options, "seed": seed, "train_size": train_size, "epochs": epochs,
        "resolved": {k: getattr(settings, k, None) for k in SHOWN},
        "test_accuracy": [round(a, 4) for a in accuracy],
        "train_loss": [round(r["loss"], 4) for r in result.history],
        "seconds": result.record["train_seconds"],
    }


def run_machine():
    """Where a run was measured, as the rows record it."""
    import keras

    m = machine()
    return {"python": m["python"], "keras": versions()["keras"], "backend": keras.backend.backend(),
            "cpus": m["cores"], "machine": m["arch"], "date": datetime.date.today().isoformat()}


def run(args):
    from kerascnn.config.families import ARCH_NAMES

    data = str(data_dir())
    options = dict(parse_option(o) for o in args.option)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    for arch in args.arch or [a for a in ARCH_NAMES if a != "lenet"]:
        for seed in args.seeds:
            row = train_and_score(arch, options, seed, args.train_size, args.epochs, data)
            row["machine"] = run_machine()
            with open(RESULTS, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{arch:10s} {json.dumps(options):40s} seed {seed}: test accuracy by epoch "
                  f"{', '.join(f'{a:.1%}' for a in row['test_accuracy'])}  ({row['seconds']:.0f} s)", flush=True)


def settings_text(resolved):
    parts = [f"{resolved['optimizer']} {resolved['lr']:g}", f"batch {resolved['batch_size']}"]
    parts += [f"init {resolved['init']}"] if resolved.get("init") not in (None, "glorot") else []
    parts += [f"warm-up {resolved['warmup']:g}"] if resolved.get("warmup") else []
    if resolved.get("batchnorm"):
        parts.append("batchnorm")
    return ", ".join(parts)


def table(rows, header):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def accuracy_cell(runs, epoch):
    values = [r["test_accuracy"][epoch] for r in runs]
    if len(values) == 1:
        return f"{values[0]:.1%}"
    return f"{statistics.mean(values):.1%} ({min(values):.1%}–{max(values):.1%}, {len(values)} seeds)"


def render(rows):
    """The defaults table (runs with no options, newest settings per family)
    and the candidates table (everything else measured)."""
    from kerascnn.config.families import ARCH_NAMES

    groups = {}
    for row in rows:
        # runs from before --init and --warmup existed used what "glorot" and 0 mean now
        row["resolved"] = {"init": "glorot", **{k: v for k, v in row["resolved"].items() if v is not None}}
        row["resolved"]["warmup"] = float(row["resolved"].get("warmup", 0))
        key = (row["arch"], json.dumps(row["options"], sort_keys=True), json.dumps(row["resolved"], sort_keys=True))
        groups.setdefault(key, {})[row["seed"]] = row  # the newest run of each seed counts
    chosen, tried = [], []
    for arch in ARCH_NAMES:
        mine = [(k, list(v.values())) for k, v in groups.items() if k[0] == arch]
        defaults = [item for item in mine if item[0][1] == "{}"]
        current = defaults[-1] if defaults else None
        for key, runs in mine:
            cells = [arch, settings_text(runs[0]["resolved"]), accuracy_cell(runs, 0), accuracy_cell(runs, -1),
                     f"{statistics.mean(r['seconds'] for r in runs):.0f}"]
            if current is not None and key == current[0]:
                chosen.append(cells)
                continue
            given = ", ".join(f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}")
                              for k, v in runs[0]["options"].items())
            if current is not None and key[2] == current[0][2]:
                given += " (now the default)"
            tried.append(cells[:1] + [given or "(earlier defaults)"] + cells[1:])
    m = rows[-1]["machine"]
    where = (f"{m['cpus']} CPU cores ({m['machine']}), Python {m['python']}, Keras {m['keras']} on "
             f"{m['backend']}; train size {rows[-1]['train_size']}, test accuracy on the 10,000 test images")
    return "\n".join([
        "", f"Measured by `python benchmarks/defaults.py` ({where}):", "",
        table(chosen, ["arch", "defaults", "after epoch 1", "after epoch 2", "train s"]), "",
        "Candidates tried (`python benchmarks/defaults.py --arch A --option key=value`), one seed unless said:", "",
        table(tried, ["arch", "options", "resolved", "after epoch 1", "after epoch 2", "train s"]), "", ""])


def write_docs():
    rows = [json.loads(line) for line in RESULTS.read_text().splitlines() if line.strip()]
    write_block("zoo.md", "zoo-defaults", render(rows))
    print("wrote the tables into docs/zoo.md")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", nargs="*", help="families [all but lenet]")
    parser.add_argument("--option", action="append", default=[], help="fit option as key=value (repeatable)")
    parser.add_argument("--seeds", nargs="*", type=int, default=[0])
    parser.add_argument("--train-size", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--write-docs", action="store_true", help="only render the tables into docs/zoo.md")
    args = parser.parse_args()
    write_docs() if args.write_docs else run(args)


if __name__ == "__main__":
    main()
