"""Section "scaling" of performance.py: epoch time of fit's path against
image size and batch size, and its plot (docs/images/performance_scaling.png).
"""

from harness import memory_gb
from loops import RELU_LENET
from report import failures, number, table
from throughput import FASHION_TRAIN

PLOT = "performance_scaling.png"


def scaling_steps(budget, size, batch):
    return max(2, min(20, round(budget.scaling_pixels / (batch * size * size))))


def too_big(previous, batch):
    """Why a scaling configuration is skipped, or None: its peak RSS,
    extrapolated from the same size at the previous batch size, would pass
    60% of the machine's memory."""
    if not previous or "peak_rss_mb" not in previous or not memory_gb():
        return None
    need = previous["peak_rss_mb"] * batch / previous["batch"]
    if need > 0.6 * memory_gb() * 1024:
        return f"skipped: would need about {need:,.0f} MB (peak RSS {previous['peak_rss_mb']:,} MB at batch " \
               f"{previous['batch']}, scaled)"
    return None


def section(runner):
    """Epoch time against image size and batch size, through fit's stages."""
    b = runner.budget
    rows = []
    for net, sizes in b.scaling_sizes.items():
        for size in sizes:
            previous, skip = None, None
            for batch in b.scaling_batches:  # ascending: once one is too big, so are the larger ones
                steps = scaling_steps(b, size, batch)
                options = {"batch_size": batch, "image_size": size, **(RELU_LENET if net == "lenet" else {})}
                skip = skip or too_big(previous, batch)
                r = {"error": skip} if skip else runner.measure(
                    "kerascnn_fit", {"arch": net, "options": options, "train_images": steps * batch, "epochs": 2},
                    label=f"{net} {size} px b{batch}")
                previous = {**r, "batch": batch}
                rows.append({"net": net, "size": size, "batch": batch, "steps": steps, **r})
    return {"rows": rows, "epoch_images": FASHION_TRAIN}


def render(s, image=f"images/{PLOT}"):
    grid = {}
    for r in s["rows"]:
        grid.setdefault((r["net"], r["size"]), {})[r["batch"]] = r
    batches = sorted({r["batch"] for r in s["rows"]})
    rows = [[net, size] + [number(s["epoch_images"] / c[b]["images_per_s"]) if b in c and "error" not in c[b]
                           else "–" for b in batches] for (net, size), c in grid.items()]
    return (
        f"![epoch time against image size]({image})\n\n"
        f"Seconds an epoch of Fashion-MNIST's {s['epoch_images']:,} training images would take (fit's default "
        "10% validation split), projected from the images/s of fit's stages (as in section 1, TensorFlow, "
        "LeNet with ReLU and max pooling, ResNet-18 with its defaults) over one timed epoch of 2 to 20 batches "
        "after a warm-up epoch of as many (fewer at larger sizes):\n\n"
        + table(["network", "px", *(f"batch {b}" for b in batches)], rows)
        + failures(*((f"{r['net']} {r['size']} px b{r['batch']}", r) for r in s["rows"])))


def plot(s, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    nets = list(dict.fromkeys(r["net"] for r in s["rows"]))
    fig, axes = plt.subplots(1, len(nets), figsize=(5.5 * len(nets), 4.2), squeeze=False)
    for ax, net in zip(axes[0], nets):
        for batch in sorted({r["batch"] for r in s["rows"]}):
            points = [(r["size"], s["epoch_images"] / r["images_per_s"]) for r in s["rows"]
                      if r["net"] == net and r["batch"] == batch and "error" not in r]
            if points:
                ax.plot(*zip(*points), marker="o", label=f"batch {batch}")
        ax.set(xscale="log", yscale="log", xlabel="image size (px)", ylabel="seconds an epoch (projected)",
               title=f"{net}: {s['epoch_images']:,} images an epoch")
        sizes = sorted({r["size"] for r in s["rows"] if r["net"] == net})
        ax.set_xticks(sizes, [str(v) for v in sizes])
        ax.xaxis.set_minor_locator(ticker.NullLocator())
        ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1, 2, 5)))
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
        ax.grid(True, which="major", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
