"""Figures: each plot function returns a matplotlib Figure that shows something."""

import numpy as np
import pytest
from matplotlib.figure import Figure

from kerascnn import plots

from kerascnn.runs import storage

pytestmark = pytest.mark.core  # also run under jax and torch (tests/test_backend.py)

PNG = b"\x89PNG\r\n\x1a\n"


def drawn(fig, path):
    """Save `fig` and return the image, checked not blank."""
    import matplotlib.image

    assert isinstance(fig, Figure)
    assert storage.save_figure(fig, path).read_bytes()[:8] == PNG
    img = matplotlib.image.imread(path)
    assert img.shape[0] > 100 and img.shape[1] > 100 and img[..., :3].std() > 0.05
    return img


HISTORY = [{"epoch": e, "loss": 1 / e, "accuracy": 1 - 1 / (e + 1), "val_loss": 1.1 / e,
            "val_accuracy": 1 - 1.1 / (e + 1)} for e in range(1, 6)]


def test_history_plot(tmp_path):
    fig = plots.plot_history(HISTORY, title="curves")
    assert [ax.get_ylabel() for ax in fig.axes] == ["loss", "accuracy"]
    assert len(fig.axes[0].lines) == 2  # train and validation
    drawn(fig, tmp_path / "c.png")


STEPS = [{"step": s, "epoch": (s - 1) // 4 + 1, "batch": (s - 1) % 4 + 1, "seen": 0, "loss": 2 / s,
          "accuracy": 1 - 1 / (s + 1)} for s in range(2, 21, 2)]  # every 2 steps, 4 steps an epoch


def test_history_plot_with_the_per_step_curve_under_it(tmp_path):
    """The loss and accuracy every N steps, faint, at step / steps an epoch: step 8 is the end of epoch 2."""
    fig = plots.plot_history(HISTORY, title="curves", steps=STEPS, steps_per_epoch=4)
    drawn(fig, tmp_path / "c.png")
    for ax, key in zip(fig.axes, ("loss", "accuracy")):
        faint, train, val = ax.lines
        np.testing.assert_allclose(faint.get_xdata(), [s / 4 for s in range(2, 21, 2)])
        np.testing.assert_allclose(faint.get_ydata(), [r[key] for r in STEPS])
        assert faint.get_alpha() < 1 and train.get_alpha() is None and faint.get_zorder() < train.get_zorder()
        assert faint.get_color() == train.get_color() != val.get_color()
        assert faint.get_label() == f"train {key}, every 2 steps"


def test_comparison_draws_the_per_step_curves_of_the_runs_that_logged_them(tmp_path):
    """Faint, in the run's own colour, at step / steps an epoch; a run without a log (or an empty one) draws none."""
    fig = plots.plot_comparison([("a", HISTORY), ("b", HISTORY), ("c", HISTORY)],
                                steps={"a": (STEPS, 4), "c": ([], 4)})
    drawn(fig, tmp_path / "cmp.png")
    loss, acc = fig.axes
    assert len(loss.lines) == 3 + 1 + 1 and len(acc.lines) == 6 + 1  # a's faint curve, the legend's entry
    for ax, key in ((loss, "loss"), (acc, "accuracy")):
        faint, own = ax.lines[0], ax.lines[1]
        np.testing.assert_allclose(faint.get_xdata(), [s / 4 for s in range(2, 21, 2)])
        np.testing.assert_allclose(faint.get_ydata(), [r[key] for r in STEPS])
        assert faint.get_alpha() < 1 and faint.get_color() == own.get_color() == "C0"
    assert loss.get_legend().get_texts()[-1].get_text() == "faint: training, every 2 steps"


def test_kernels_grid_gray_and_rgb(tmp_path):
    gray = np.random.default_rng(0).normal(size=(16, 6, 5, 5))
    fig = plots.plot_kernels(gray, "conv2")
    assert len([ax for ax in fig.axes if ax.images]) == 16 * 6
    drawn(fig, tmp_path / "k.png")
    rgb = np.random.default_rng(0).normal(size=(6, 1, 5, 5, 3))
    fig = plots.plot_kernels(rgb, "conv1")
    assert len([ax for ax in fig.axes if ax.images]) == 6 and "RGB" in fig.texts[0].get_text()


def test_feature_maps_beside_the_image(tmp_path):
    maps = np.random.default_rng(0).random((14, 14, 10))
    fig = plots.plot_feature_maps(maps, np.zeros((28, 28, 1)), title="maps", image_title="#0")
    assert len([ax for ax in fig.axes if ax.images]) == 11
    drawn(fig, tmp_path / "m.png")


def test_confusion_matrix_and_comparison(tmp_path):
    cm = np.array([[5, 1], [2, 7]])
    fig = plots.plot_confusion_matrix(cm, ["a", "b"], title="cm")
    assert [t.get_text() for t in fig.axes[0].texts] == ["5", "1", "2", "7"]
    drawn(fig, tmp_path / "cm.png")
    fig = plots.plot_comparison([("a", HISTORY), ("b", HISTORY[:3])])
    assert len(fig.axes[0].lines) == 2 and len(fig.axes[1].lines) == 4
    drawn(fig, tmp_path / "cmp.png")


def test_evolution_plots_pick_at_most_eight_epochs(tmp_path):
    rng = np.random.default_rng(0)
    records = {"epochs": np.arange(12), "conv1/maps": rng.random((12, 2, 8, 8, 4)).astype(np.float16),
               "conv1/kernel": rng.normal(size=(12, 3, 3, 1, 4)).astype(np.float16)}
    fig = plots.plot_map_evolution(records, "conv1", probe=1, title="maps")
    assert len(fig.axes) == 8 * 4
    drawn(fig, tmp_path / "me.png")
    fig = plots.plot_kernel_evolution(records, "conv1", title="kernels")
    assert fig.axes[0].get_ylabel() == "epoch 0" and fig.axes[-4].get_ylabel() == "epoch 11"
    drawn(fig, tmp_path / "ke.png")


def test_seed_spread_is_the_sample_std():
    mean, std = plots.seed_spread([0.8, 0.9, 0.85])
    assert mean == pytest.approx(0.85) and std == pytest.approx(0.05)  # ddof=1: sqrt(0.005 / 2)
    assert plots.seed_spread([0.5]) == (0.5, None)


def test_study_curves_are_the_mean_over_seeds(tmp_path):
    lower = [{**r, "accuracy": r["accuracy"] - 0.1} for r in HISTORY]
    fig = plots.plot_study_curves([("a", [HISTORY, lower]), ("b", [HISTORY[:3]])])
    drawn(fig, tmp_path / "curves.png")
    loss, train, val = fig.axes
    assert [ax.get_title() for ax in fig.axes] == ["loss (train solid, validation dashed)", "training accuracy",
                                                   "validation accuracy"]
    np.testing.assert_allclose(train.lines[0].get_ydata(), [r["accuracy"] - 0.05 for r in HISTORY])
    assert list(train.lines[1].get_xdata()) == [1, 2, 3]
    assert len(loss.lines) == 4 and len(val.lines) == 2  # train and validation loss of each variant
    assert [t.get_text() for t in train.get_legend().get_texts()] == ["a", "b"]


def test_study_curves_draw_each_variants_steps_as_the_mean_over_seeds(tmp_path):
    other = [{**r, "loss": r["loss"] + 1} for r in STEPS[:-1]]  # a seed that logged one step fewer
    fig = plots.plot_study_curves([("a", [HISTORY, HISTORY]), ("b", [HISTORY])],
                                  steps={"a": ([STEPS, other], 4), "b": ([], 4)})
    drawn(fig, tmp_path / "curves.png")
    loss, train, val = fig.axes
    faint = loss.lines[0]
    np.testing.assert_allclose(faint.get_xdata(), [s / 4 for s in range(2, 21, 2)])
    np.testing.assert_allclose(faint.get_ydata(), [r["loss"] + 0.5 for r in STEPS[:-1]] + [STEPS[-1]["loss"]])
    assert len(loss.lines) == 5 and len(train.lines) == 4 and len(val.lines) == 2  # b logged nothing
    assert [t.get_text() for t in train.get_legend().get_texts()] == [
        "a", "b", "faint: training, every 2 steps, mean over seeds"]


def test_seed_accuracy_shows_every_seed_and_the_mean(tmp_path):
    fig = plots.plot_seed_accuracy([("a", [0.8, 0.9, 0.85]), ("none yet", []), ("c", [0.7])])
    drawn(fig, tmp_path / "accuracy.png")
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "none yet", "c"]
    points = [sorted(c.get_offsets()[:, 1]) for c in ax.collections if len(c.get_offsets()) > 0
              and type(c).__name__ == "PathCollection"]
    assert points == [pytest.approx([0.8, 0.85, 0.9]), pytest.approx([0.7])]
    means = [line.get_ydata()[0] for line in ax.lines if line.get_marker() == "D"]
    assert means == pytest.approx([0.85, 0.7])
