"""Figures that explain a model: kernels, feature maps, training curves,
compared runs, a study's variants over seeds, the confusion matrix, how
layers changed over training, and captioned image galleries.

Every function returns a matplotlib Figure built with the object API (no
pyplot state), so it renders on a machine without a screen and shows inline
in a notebook; `kerascnn.runs.storage.save_figure(fig, path)` writes it as a PNG.
Inputs are plain arrays and lists: nothing here imports Keras.
"""

import math

import numpy as np

MAX_KERNEL_ROWS = 32  # output channels drawn at most
MAX_KERNEL_COLS = 16  # input channels drawn at most
MAX_MAPS = 64


def _figure(width, height):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _bare(ax):
    """No ticks or frame, but room for a label."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _kernel_title(name, k, rows, cols, depthwise):
    """What the kernel grid shows, e.g. "conv2: 16 kernels 5x5 (rows: output, columns: input channel)"."""
    n_rows, n_cols = k.shape[:2]
    row_name, col_name = ("in", "multiplier") if depthwise else ("out", "in")
    shown = "" if (rows, cols) == (n_rows, n_cols) else \
        f" (first {rows} of {n_rows} {row_name} x {cols} of {n_cols} {col_name})"
    if depthwise:
        kind = "one per input channel" if n_cols == 1 else "rows: input channel, columns: multiplier"
        count = f"{n_rows * n_cols} depthwise kernels"
    else:
        kind = "RGB" if k.ndim == 5 else ("rows: output, columns: input channel" if n_cols > 1 else "one per filter")
        count = f"{n_rows} kernels"
    return f"{name}: {count} {k.shape[2]}x{k.shape[3]} ({kind}){shown}"


def plot_kernels(k, name, *, depthwise=False):
    """Every kernel of a conv layer `name` in a grid, each scaled to its own
    range: `k` is (out, in, kh, kw) gray tiles or (out, 1, kh, kw, 3) RGB;
    for a depthwise layer (depthwise=True) it is (in, multiplier, kh, kw)
    (see visualization.kernel_images)."""
    n_out, n_in = k.shape[:2]
    rows, cols = min(n_out, MAX_KERNEL_ROWS), min(n_in, MAX_KERNEL_COLS)
    row_name, col_name = ("in", "mult") if depthwise else ("out", "in")
    if cols == 1:  # lay single-channel kernels out in a near-square grid
        grid_cols = min(rows, 8 if rows > 16 else max(1, math.ceil(math.sqrt(rows))))
        cells = [(i, 0) for i in range(rows)]
        grid_rows = math.ceil(rows / grid_cols)
    else:
        grid_rows, grid_cols = rows, cols
        cells = [(i, j) for i in range(rows) for j in range(cols)]
    fig = _figure(1.1 * grid_cols + 0.5, 1.1 * grid_rows + 0.8)
    axes = fig.subplots(grid_rows, grid_cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for n, (i, j) in enumerate(cells):
        ax = axes.flat[n]
        ax.axis("on")
        tile = k[i, j]
        lo, hi = tile.min(), tile.max()
        tile = (tile - lo) / (hi - lo) if hi > lo else np.zeros_like(tile)
        ax.imshow(tile, cmap=None if tile.ndim == 3 else "gray", vmin=0, vmax=1, interpolation="nearest")
        _bare(ax)
        if cols == 1:
            ax.set_title(f"in {i}" if depthwise else str(i), fontsize=7)
        else:
            if i == 0:
                ax.set_title(f"{col_name} {j}", fontsize=7)
            if j == 0:
                ax.set_ylabel(f"{row_name} {i}", fontsize=7)
    fig.suptitle(_kernel_title(name, k, rows, cols, depthwise))
    return fig


def plot_feature_maps(maps, image, *, title, image_title):
    """Draw `image` and the layer's feature maps (H, W, C) beside it."""
    channels = maps.shape[-1]
    shown = min(channels, MAX_MAPS)
    cols = min(shown, 8)
    rows = math.ceil(shown / cols)
    image_cols = 2 if rows >= 2 else 1
    fig = _figure(1.4 * (cols + image_cols), 1.4 * rows + 0.6)
    grid = fig.add_gridspec(rows, cols + image_cols)
    ax = fig.add_subplot(grid[:image_cols, :image_cols])
    ax.imshow(image.squeeze(), cmap="gray" if image.shape[-1] == 1 else None)
    ax.set_title(image_title, fontsize=8)
    ax.axis("off")
    for c in range(shown):
        ax = fig.add_subplot(grid[c // cols, image_cols + c % cols])
        ax.imshow(maps[..., c], cmap="viridis", interpolation="nearest")
        ax.set_title(str(c), fontsize=7)
        ax.axis("off")
    more = "" if shown == channels else f" (first {shown} of {channels} channels)"
    fig.suptitle(title + more)
    return fig


def _captioned_grid(n, captions, cols, *, cell, extra_width):
    """A figure of `n` panels in at most `cols` columns, axes off, sized for
    captions of up to their longest line count; `cell` is (width, height,
    height per caption line) in inches."""
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    lines = max((str(c).count("\n") + 1 for c in captions), default=1)
    width, height, per_line = cell
    fig = _figure(width * cols + extra_width, (height + per_line * lines) * rows + 0.6)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    return fig, axes


def _show_image(ax, image):
    """An image in [0, 1], (H, W, 1) gray or (H, W, 3) RGB, pixel for pixel."""
    image = np.asarray(image)
    ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1,
              interpolation="nearest")


def plot_explanations(images, maps, titles, *, title, cols=4):
    """Heat maps (N, H, W) in [0, 1] over their images (N, H, W, 1 or 3) in
    [0, 1], one titled panel each, with one colour scale."""
    fig, axes = _captioned_grid(len(images), titles, cols, cell=(2.4, 2.3, 0.18), extra_width=1.0)
    for ax, image, heat, label in zip(axes.flat, images, maps, titles):
        _show_image(ax, image)
        ax.imshow(heat, cmap="jet", alpha=0.45, vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(label, fontsize=8)
    from matplotlib.cm import ScalarMappable

    scale = ScalarMappable(cmap="jet")  # the colours at full strength, not as blended over the images
    scale.set_clim(0, 1)
    fig.colorbar(scale, ax=axes, shrink=0.8, label="relevance (each map scaled to [0, 1])")
    fig.suptitle(title)
    return fig


STEP_STYLE = dict(alpha=0.35, linewidth=0.8, zorder=1)  # the per-step curves, faint under the per-epoch ones


def _step_curve(seeds, key, steps_per_epoch):
    """(x in epochs, y) of the per-step rows (a steps.csv, fit --log-every)
    of one or more seeds: each logged step's mean over the seeds that have
    it, at step / steps_per_epoch epochs, where its epoch's end is the
    epoch's own point."""
    by_step = {}
    for rows in seeds:
        for r in rows:
            by_step.setdefault(r["step"], []).append(r[key])
    steps = sorted(by_step)
    return np.array(steps, dtype=float) / steps_per_epoch, np.array([np.mean(by_step[s]) for s in steps])


def _every(seeds):
    """"every N steps" (or "every step") of per-step rows: their first step is N."""
    every = {rows[0]["step"] for rows in seeds if rows}
    if len(every) != 1:
        return "every --log-every steps"
    n = every.pop()
    return "every step" if n == 1 else f"every {n} steps"


def plot_history(rows, title="training curves", *, steps=None, steps_per_epoch=None):
    """Loss and accuracy per epoch, train and validation, from history rows;
    with `steps` (the rows of the run's steps.csv) and its
    `steps_per_epoch`, the training loss and accuracy every N steps drawn
    faint under them, on the same axis of epochs (_step_curve)."""
    epochs = [r["epoch"] for r in rows]
    fig = _figure(10, 3.8)
    ax_loss, ax_acc = fig.subplots(1, 2)
    for ax, key in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        if steps:
            ax.plot(*_step_curve([steps], key, steps_per_epoch), color="C0", label=f"train {key}, {_every([steps])}",
                    **STEP_STYLE)
        for prefix, style, color in (("", "-o", "C0"), ("val_", "--s", "C1")):
            values = [r.get(prefix + key) for r in rows]
            if any(v is not None for v in values):
                ax.plot(epochs, values, style, color=color, markersize=3,
                        label=f"{'validation' if prefix else 'train'} {key}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    return fig


def plot_lr_find(lrs, losses, smoothed, suggestion, *, rule, title="learning-rate range test"):
    """A learning-rate sweep: each step's loss (faint) and its moving
    average against the rate, on a log scale, with the suggested rate
    marked and the `rule` that chose it in the legend. The loss axis spans
    the smoothed curve (a diverging step's loss would flatten the rest)."""
    lrs, losses, smoothed = (np.asarray(v, dtype=float) for v in (lrs, losses, smoothed))
    fig = _figure(7, 4.5)
    ax = fig.subplots()
    ax.plot(lrs, losses, color="C0", alpha=0.3, linewidth=1, label="loss of each step")
    ax.plot(lrs, smoothed, color="C0", linewidth=2, label="smoothed (moving average)")
    finite = np.isfinite(smoothed)
    at = np.interp(np.log(suggestion), np.log(lrs[finite]), smoothed[finite]) if finite.any() else np.nan
    ax.axvline(suggestion, color="C3", linestyle="--", linewidth=1)
    ax.plot([suggestion], [at], "o", color="C3", label=f"suggested {suggestion:.1e}: {rule}")
    ax.set_xscale("log")
    shown = np.concatenate([smoothed[finite], losses[np.isfinite(losses)]])
    if shown.size:
        low, high = shown.min(), smoothed[finite].max() if finite.any() else shown.max()
        pad = 0.05 * (high - low) or 0.1
        ax.set_ylim(low - pad, high + pad)
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    return fig


def plot_comparison(runs, title="training curves compared", *, steps=None):
    """Overlay the curves of several runs: `runs` is a list of (label,
    history rows). Left: training loss; right: validation (solid) and
    training (dotted) accuracy. `steps` ({label: (steps.csv rows, steps
    per epoch)}, for the runs that logged them) adds their training loss
    and accuracy every N steps, faint, in the run's colour."""
    fig = _figure(11, 4.2)
    ax_loss, ax_acc = fig.subplots(1, 2)
    steps = {label: logged for label, logged in (steps or {}).items() if logged[0]}
    for n, (label, rows) in enumerate(runs):
        color = f"C{n % 10}"
        if label in steps:
            logged, per_epoch = steps[label]
            for ax, key in ((ax_loss, "loss"), (ax_acc, "accuracy")):
                ax.plot(*_step_curve([logged], key, per_epoch), color=color, **STEP_STYLE)
        epochs = [r["epoch"] for r in rows]
        ax_loss.plot(epochs, [r["loss"] for r in rows], "-o", color=color, markersize=3, label=label)
        if any("val_accuracy" in r for r in rows):
            ax_acc.plot(epochs, [r.get("val_accuracy") for r in rows], "-o", color=color, markersize=3,
                        label=f"{label} (validation)")
        ax_acc.plot(epochs, [r["accuracy"] for r in rows], ":", color=color, label=f"{label} (train)")
    if steps:
        ax_loss.plot([], [], color="gray", label=f"faint: training, {_every([rows for rows, _ in steps.values()])}",
                     **STEP_STYLE)
    for ax, key in ((ax_loss, "training loss"), (ax_acc, "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return fig


def seed_spread(values):
    """(mean, sample std with ddof=1) of per-seed values; std None for one seed."""
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else None


def _mean_curve(histories, key):
    """Epochs, mean and std over the seeds' history rows that have `key`, per epoch."""
    by_epoch = {}
    for rows in histories:
        for r in rows:
            if r.get(key) is not None:
                by_epoch.setdefault(r["epoch"], []).append(r[key])
    epochs = sorted(by_epoch)
    stats = [seed_spread(by_epoch[e]) for e in epochs]
    return epochs, np.array([m for m, _ in stats]), np.array([s or 0.0 for _, s in stats])


def plot_study_curves(variants, title="training curves, mean over seeds", *, steps=None):
    """The curves of a study's variants overlaid, one colour per variant:
    `variants` is a list of (label, [history rows of each seed]). Panels:
    loss (train solid, validation dashed), training accuracy, validation
    accuracy; each line the mean over seeds, the band ± one std (2+ seeds).
    `steps` ({label: ([steps.csv rows of each seed], steps per epoch)}, for
    the variants that logged them) adds the training loss and accuracy
    every N steps, faint, each step's mean over the seeds that logged it."""
    from matplotlib.ticker import MaxNLocator

    fig = _figure(15, 4.4)
    ax_loss, ax_train, ax_val = fig.subplots(1, 3)
    steps = {label: logged for label, logged in (steps or {}).items() if any(logged[0])}
    for n, (label, histories) in enumerate(variants):
        color = f"C{n % 10}"
        if label in steps:
            seeds, per_epoch = steps[label]
            for ax, key in ((ax_loss, "loss"), (ax_train, "accuracy")):
                ax.plot(*_step_curve(seeds, key, per_epoch), color=color, **STEP_STYLE)
        for ax, key, style in ((ax_loss, "loss", "-"), (ax_loss, "val_loss", "--"),
                               (ax_train, "accuracy", "-"), (ax_val, "val_accuracy", "-")):
            epochs, mean, std = _mean_curve(histories, key)
            if not epochs:
                continue
            ax.plot(epochs, mean, style, color=color, marker="o", markersize=3,
                    label=label if key in ("loss", "accuracy") else None)
            if len(histories) > 1 and key != "val_loss":
                ax.fill_between(epochs, mean - std, mean + std, color=color, alpha=0.15, linewidth=0)
    for ax, name in ((ax_loss, "loss (train solid, validation dashed)"), (ax_train, "training accuracy"),
                     (ax_val, "validation accuracy")):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3)
    if steps:
        every = _every([rows for seeds, _ in steps.values() for rows in seeds])
        ax_train.plot([], [], color="gray", label=f"faint: training, {every}, mean over seeds", **STEP_STYLE)
    ax_train.legend(fontsize=8)
    fig.suptitle(title)
    return fig


def plot_seed_accuracy(variants, title="test accuracy over seeds"):
    """Test accuracy per variant: every seed's point, and the mean with a
    bar of ± one sample std (2+ seeds). `variants` is a list of (label,
    [test accuracy of each seed]); a variant without any is left empty."""
    fig = _figure(max(5.0, 1.1 * len(variants) + 2), 4.4)
    ax = fig.subplots()
    for n, (label, accuracies) in enumerate(variants):
        if not accuracies:
            continue
        color = f"C{n % 10}"
        offsets = np.linspace(-0.15, 0.15, len(accuracies)) if len(accuracies) > 1 else [0.0]
        ax.scatter(n + np.asarray(offsets), accuracies, color=color, alpha=0.6, s=22, zorder=3)
        mean, std = seed_spread(accuracies)
        ax.errorbar(n + 0.3, mean, yerr=std, fmt="D", color=color, capsize=5, markersize=6, zorder=4)
        ax.annotate(f"{mean:.4f}", (n + 0.38, mean), fontsize=8, va="center")
    ax.set_xticks(range(len(variants)), [label for label, _ in variants], rotation=25, ha="right")
    ax.set_xlim(-0.6, len(variants) - 0.1)
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3, axis="y")
    fig.suptitle(f"{title} (dots: seeds; diamond: mean ± sample std)")
    return fig


def plot_confusion_matrix(cm, class_names, title="confusion matrix"):
    from sklearn.metrics import ConfusionMatrixDisplay

    size = max(5.0, 0.6 * len(class_names) + 2)
    fig = _figure(size, size)
    ax = fig.subplots()
    ConfusionMatrixDisplay(cm, display_labels=class_names).plot(
        ax=ax, cmap="Blues", colorbar=False, xticks_rotation=45, values_format="d")
    ax.set_title(title)
    return fig


MAX_EVOLUTION_ROWS = 8
MAX_EVOLUTION_COLS = 8


def _pick_epochs(epochs, limit=MAX_EVOLUTION_ROWS):
    """Row indices of at most `limit` recorded epochs, first and last kept."""
    if len(epochs) <= limit:
        return list(range(len(epochs)))
    return sorted({int(round(i)) for i in np.linspace(0, len(epochs) - 1, limit)})


def plot_map_evolution(records, layer, *, probe=0, title):
    """Feature maps of `layer` for probe image `probe`, one row per
    recorded epoch (0 = before training), first channels as columns; each
    map scaled to its own range."""
    maps = records[f"{layer}/maps"][:, probe].astype(np.float32)  # (E, H, W, C)
    epochs = records["epochs"]
    rows = _pick_epochs(epochs)
    cols = min(maps.shape[-1], MAX_EVOLUTION_COLS)
    fig = _figure(1.3 * cols + 0.6, 1.3 * len(rows) + 0.6)
    axes = fig.subplots(len(rows), cols, squeeze=False)
    for r, e in enumerate(rows):
        for c in range(cols):
            ax = axes[r, c]
            ax.imshow(maps[e, ..., c], cmap="viridis", interpolation="nearest")
            _bare(ax)
            if r == 0:
                ax.set_title(f"channel {c}", fontsize=7)
            if c == 0:
                ax.set_ylabel(f"epoch {int(epochs[e])}", fontsize=8)
    fig.suptitle(title)
    return fig


def plot_kernel_evolution(records, layer, *, title):
    """The first kernels of `layer` (input channel 0, or RGB for 3 input
    channels), one row per recorded epoch; each column shares one gray
    scale across epochs, so growth in magnitude shows."""
    k = records[f"{layer}/kernel"].astype(np.float32)  # (E, kh, kw, in, out) or depthwise (E, kh, kw, in, 1)
    if k.shape[-1] == 1 and k.shape[-2] > 1:
        k = np.swapaxes(k, -1, -2)  # depthwise: one kernel per input channel
    epochs = records["epochs"]
    rows = _pick_epochs(epochs)
    cols = min(k.shape[-1], MAX_EVOLUTION_COLS)
    rgb = k.shape[-2] == 3
    fig = _figure(1.1 * cols + 0.6, 1.1 * len(rows) + 0.6)
    axes = fig.subplots(len(rows), cols, squeeze=False)
    for c in range(cols):
        tiles = k[..., c] if rgb else k[..., 0, c]  # (E, kh, kw[, 3])
        lo, hi = tiles.min(), tiles.max()
        for r, e in enumerate(rows):
            ax = axes[r, c]
            tile = (tiles[e] - lo) / (hi - lo) if hi > lo else np.zeros_like(tiles[e])
            ax.imshow(tile, cmap=None if rgb else "gray", vmin=0, vmax=1, interpolation="nearest")
            _bare(ax)
            if r == 0:
                ax.set_title(f"filter {c}", fontsize=7)
            if c == 0:
                ax.set_ylabel(f"epoch {int(epochs[e])}", fontsize=8)
    fig.suptitle(title)
    return fig


def plot_gallery(images, captions, *, title, cols=8):
    """Images in [0, 1], (N, H, W, 1) gray or (N, H, W, 3) RGB, in a grid of
    `cols` columns, each over its caption (one or more lines)."""
    fig, axes = _captioned_grid(len(images), captions, cols, cell=(1.5, 1.4, 0.13), extra_width=0.4)
    for ax, image, caption in zip(axes.flat, images, captions):
        _show_image(ax, image)
        ax.set_title(caption, fontsize=7)
    fig.suptitle(title)
    return fig
