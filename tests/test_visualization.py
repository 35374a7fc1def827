import numpy as np
import pytest

from kerascnn.errors import KerasCNNError
from kerascnn.models import build_lenet
from kerascnn.analysis.visualization import first_conv_layer, kernel_images, spatial_layers, visualize

PNG = b"\x89PNG\r\n\x1a\n"

pytestmark = pytest.mark.core  # also run under jax and torch (tests/test_backend.py)


def _image(path):
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG
    return matplotlib.image.imread(path)


def test_conv1_kernels_maps_and_curves(trained_run, tmp_path):
    r = visualize(trained_run.model_path, "conv1", index=3, output=tmp_path)
    names = [p.name for p in r.paths]
    assert names == ["lenet.conv1.kernels.png", "lenet.conv1.maps.3.png", "lenet.curves.png"]
    assert [r.kernels_path, r.maps_path, r.curves_path] == r.paths  # each picture by name, for a notebook
    for path in r.paths:
        img = _image(path)
        assert img.shape[0] > 100 and img.shape[1] > 100
        assert img[..., :3].std() > 0.05, f"{path.name} is blank"


def test_curves_draw_the_per_step_log_when_the_run_has_one(trained_run, tmp_path):
    import shutil

    from kerascnn.runs import storage
    from kerascnn.runs.saved import Run
    from kerascnn.runs.files import STEP_COLUMNS, step_line
    from kerascnn.analysis.visualization import curves

    folder = shutil.copytree(trained_run.model_path.parent, tmp_path / "run")
    run = Run.load(folder / "lenet.keras")
    assert [len(ax.lines) for ax in curves(run, "t").axes] == [2, 2]  # no steps.csv: per epoch only
    steps = run.steps_per_epoch
    rows = [{"step": s, "epoch": (s - 1) // steps + 1, "batch": (s - 1) % steps + 1, "seen": 0, "loss": 1.0,
             "accuracy": 0.5} for s in range(1, 3 * steps + 1)]
    (folder / "lenet.steps.csv").write_text(",".join(STEP_COLUMNS) + "\n" + "".join(map(step_line, rows)))
    assert Run.load(folder / "lenet.keras").steps == []  # its run logged none: another run's file
    storage.write_json(folder / "lenet.run.json", {**trained_run.config, "log_every": 1})
    fig = curves(Run.load(folder / "lenet.keras"), "t")
    assert [len(ax.lines) for ax in fig.axes] == [3, 3]
    assert fig.axes[0].lines[0].get_xdata()[-1] == 3.0  # the last step is the end of epoch 3
    (folder / "lenet.steps.csv").write_text("step,epoch,batch,seen,loss,accuracy\n1,1,1,64,nope,0.5\n")
    with pytest.raises(KerasCNNError, match=r"lenet.steps.csv: line 2 is not 6 numbers: '1,1,1,64,nope,0.5'"):
        visualize(folder / "lenet.keras", "conv1", output=tmp_path)


def test_newest_model_is_the_default(trained_run, tmp_path):
    r = visualize(None, "pool2", models_dir=trained_run.model_path.parent, output=tmp_path)
    assert r.model_path == trained_run.model_path
    assert [p.name for p in r.paths][0] == "lenet.pool2.maps.0.png"  # a pool layer has no kernels
    assert r.kernels_path is None and r.maps_path == r.paths[0]


def test_unknown_layer_lists_valid_ones(trained_run):
    with pytest.raises(KerasCNNError, match="valid layers: conv1, pool1, conv2, pool2"):
        visualize(trained_run.model_path, "fc1")


def test_index_out_of_range(trained_run):
    with pytest.raises(KerasCNNError, match="index must be between 0 and 359"):
        visualize(trained_run.model_path, "conv1", index=360)


def conv_with_kernel(layer, input_channels):
    """`layer` built for `input_channels` channels, its kernel set to 0, 1, 2, ... (every entry told apart)."""
    layer.build((None, 16, 16, input_channels))
    kernel = np.arange(np.prod(layer.kernel.shape), dtype="float32").reshape(layer.kernel.shape)
    layer.kernel.assign(kernel)
    return kernel


def test_kernel_images_gray_and_rgb():
    import keras

    # a 3x5 kernel: height and width swapped would give 5x3 tiles, transposed
    conv = keras.layers.Conv2D(4, (3, 5))
    w = conv_with_kernel(conv, 2)  # (kh, kw, in, out)
    gray = kernel_images(conv)
    assert gray.shape == (4, 2, 3, 5)
    for out, c in np.ndindex(4, 2):
        np.testing.assert_array_equal(gray[out, c], w[:, :, c, out])
    conv = keras.layers.Conv2D(6, (3, 5))
    w = conv_with_kernel(conv, 3)
    rgb = kernel_images(conv)
    assert rgb.shape == (6, 1, 3, 5, 3)
    for out in range(6):
        np.testing.assert_array_equal(rgb[out, 0], w[..., out])  # (kh, kw, RGB)
    assert spatial_layers(build_lenet()) == ["conv1", "pool1", "conv2", "pool2"]
    assert kernel_images(build_lenet().get_layer("pool1")) is None


@pytest.mark.parametrize("multiplier", [1, 3])
def test_depthwise_kernels_are_one_per_input_channel(multiplier, tmp_path):
    """A DepthwiseConv2D's kernel is (kh, kw, in, multiplier): row c of the picture is input channel c (whose
    kernel m makes output channel c * multiplier + m); never drawn as RGB, even with a multiplier of 3."""
    import keras

    from kerascnn import plots

    from kerascnn.runs import storage

    conv = keras.layers.DepthwiseConv2D((3, 5), depth_multiplier=multiplier)
    w = conv_with_kernel(conv, 5)
    k = kernel_images(conv)
    assert k.shape == (5, multiplier, 3, 5)
    for c, m in np.ndindex(5, multiplier):
        np.testing.assert_array_equal(k[c, m], w[:, :, c, m])
    x = np.zeros((1, 7, 9, 5), "float32")
    x[0, :3, :5, 2] = 1.0  # channel 2 alone: the output channels it makes are the sums of its kernels
    y = keras.ops.convert_to_numpy(conv(x))[0, 0, 0]
    for m in range(multiplier):
        assert y[2 * multiplier + m] == pytest.approx(k[2, m].sum())
    fig = plots.plot_kernels(k, "dw", depthwise=True)
    tiles = [ax for ax in fig.axes if ax.images]
    assert len(tiles) == 5 * multiplier
    if multiplier == 1:
        assert fig.texts[0].get_text() == "dw: 5 depthwise kernels 3x5 (one per input channel)"
        assert [ax.get_title() for ax in tiles] == [f"in {c}" for c in range(5)]
    else:
        assert fig.texts[0].get_text() == "dw: 15 depthwise kernels 3x5 (rows: input channel, columns: multiplier)"
        assert [ax.get_ylabel() for ax in tiles[::multiplier]] == [f"in {c}" for c in range(5)]
        assert [ax.get_title() for ax in tiles[:multiplier]] == [f"mult {m}" for m in range(multiplier)]
    assert storage.save_figure(fig, tmp_path / "dw.png").read_bytes()[:8] == PNG


def test_the_default_layer_is_the_first_convolution(trained_run, tmp_path):
    from kerascnn.models import build_model

    assert first_conv_layer(build_lenet()) == "conv1"
    assert first_conv_layer(build_model("vgg11", input_shape=(32, 32, 1), num_classes=3, width=0.125,
                                        dense_units=8)) == "block1_conv1"
    assert first_conv_layer(build_model("resnet18", input_shape=(32, 32, 1), num_classes=3,
                                        width=0.125)) == "conv1_conv"
    r = visualize(trained_run.model_path, output=tmp_path)
    assert r.layer == "conv1" and r.paths[0].name == "lenet.conv1.kernels.png"


def test_checkpoints_from_another_folder(trained_run, tmp_path, monkeypatch):
    """Must show: visualize works on lenet.best.keras and lenet.last.keras from another folder."""
    monkeypatch.chdir(tmp_path)
    for kind in ("best", "last"):
        model = trained_run.model_path.with_name(f"lenet.{kind}.keras")
        r = visualize(model, "conv2", index=1, output=tmp_path / "pictures")
        assert [p.name for p in r.paths] == [f"lenet.{kind}.conv2.kernels.png", f"lenet.{kind}.conv2.maps.1.png",
                                             f"lenet.{kind}.curves.png"]


def test_visualize_draws_a_depthwise_layer_per_input_channel(tmp_path, monkeypatch):
    from kerascnn import plots
    from kerascnn.runs import storage
    from kerascnn.models import build_model

    model = build_model("mobilenet", input_shape=(32, 32, 1), num_classes=10, width=0.25, depth_multiplier=2)
    path = storage.save_model(model, tmp_path / "mobilenet.keras")
    drawn, real = [], plots.plot_kernels
    monkeypatch.setattr(plots, "plot_kernels", lambda k, name, **kw: drawn.append((k.shape, name, kw))
                        or real(k, name, **kw))
    for layer in ("conv1", "conv_dw_2"):
        visualize(path, layer, dataset="digits", output=tmp_path)
    assert drawn == [((8, 1, 3, 3), "conv1", {"depthwise": False}),  # 8 filters of 1 channel
                     ((16, 2, 3, 3), "conv_dw_2", {"depthwise": True})]  # 16 input channels x 2


def saved_run(folder, name, source, rows, **record):
    """A run `name` in `folder`: `source`'s model and run.json (with `record`'s changes) and `rows` as its
    history (a list, or the history file's raw text)."""
    import json
    import shutil

    from kerascnn.runs import storage

    folder.mkdir(parents=True, exist_ok=True)
    model = shutil.copy(source.model_path, folder / f"{name}.keras")
    storage.write_json(folder / f"{name}.run.json", {**source.config, "name": name, **record})
    text = rows if isinstance(rows, str) else json.dumps(rows)
    (folder / f"{name}.history.json").write_text(text)
    return model


# a history whose best validation accuracy (0.6, epoch 2) is not its last (0.55)
ROWS = [{"epoch": e, "loss": loss, "accuracy": acc, "val_loss": loss + 0.1, "val_accuracy": val, "lr": 0.05}
        for e, loss, acc, val in ((1, 2.0, 0.2, 0.3), (2, 1.5, 0.5, 0.6), (3, 1.2, 0.7, 0.55))]


def test_compare_runs_table_from_the_histories_and_png(trained_run, tmp_path):
    from kerascnn.analysis.visualization import compare_runs

    other = saved_run(tmp_path / "runs", "sgd_run", trained_run, ROWS, optimizer="sgd", lr=0.05,
                      test_accuracy=0.61, train_seconds=12.5)
    table, path = compare_runs([trained_run.model_path, other], tmp_path / "cmp.png")
    rows = trained_run.history
    assert table[0] == {"run": "lenet", "optimizer": trained_run.config["optimizer"], "lr": trained_run.config["lr"],
                        "epochs": len(rows), "final train accuracy": rows[-1]["accuracy"],
                        "best val accuracy": max(r["val_accuracy"] for r in rows),
                        "test accuracy": trained_run.test_accuracy, "seconds": trained_run.config["train_seconds"]}
    assert table[1] == {"run": "sgd_run", "optimizer": "sgd", "lr": 0.05, "epochs": 3, "final train accuracy": 0.7,
                        "best val accuracy": 0.6, "test accuracy": 0.61, "seconds": 12.5}
    assert path == tmp_path / "cmp.png"
    img = _image(path)
    assert img.shape[1] > 1000 and img[..., :3].std() > 0.05


def test_compare_runs_draws_the_steps_of_a_run_that_logged_them(trained_run, tmp_path, monkeypatch):
    from kerascnn import plots
    from kerascnn.runs.files import STEP_COLUMNS, step_line
    from kerascnn.analysis.visualization import compare_runs

    logged = saved_run(tmp_path, "logged", trained_run, ROWS, log_every=2, steps_per_epoch=4)
    rows = [{"step": s, "epoch": (s - 1) // 4 + 1, "batch": (s - 1) % 4 + 1, "seen": 0, "loss": 3.0 / s,
             "accuracy": 0.05 * s} for s in range(2, 13, 2)]
    (tmp_path / "logged.steps.csv").write_text(",".join(STEP_COLUMNS) + "\n" + "".join(map(step_line, rows)))
    drawn = {}
    draw = plots.plot_comparison
    monkeypatch.setattr(plots, "plot_comparison", lambda *a, **k: drawn.update(k) or draw(*a, **k))
    compare_runs([trained_run.model_path, logged], tmp_path / "cmp.png")
    assert [row["step"] for row in drawn["steps"]["logged"][0]] == [2, 4, 6, 8, 10, 12]
    assert drawn["steps"]["logged"][1] == 4 and list(drawn["steps"]) == ["logged"]  # lenet logged none
    assert _image(tmp_path / "cmp.png")[..., :3].std() > 0.05
    (tmp_path / "cmp.png").unlink()
    (tmp_path / "logged.steps.csv").write_text("step,epoch\n")
    with pytest.raises(KerasCNNError, match="cannot use the per-step log .*logged.steps.csv: its first line"):
        compare_runs([trained_run.model_path, logged], tmp_path / "cmp.png")
    assert not (tmp_path / "cmp.png").exists()


def test_compare_runs_of_one_name_are_told_apart_by_folder(trained_run, tmp_path):
    from kerascnn.analysis.visualization import compare_runs

    a = saved_run(tmp_path / "a", "lenet", trained_run, ROWS)
    b = saved_run(tmp_path / "b", "lenet", trained_run, ROWS[:2])
    table, _ = compare_runs([a, b], tmp_path / "cmp.png")
    assert [(row["run"], row["epochs"]) for row in table] == [(str(a), 3), (str(b), 2)]


@pytest.mark.parametrize("history, reason", [
    ("", "the file is empty"),
    ("[{\"epoch\": 1, \"loss\": 2.0", "not JSON (Expecting ',' delimiter"),
    ("{\"loss\": [2.0]}", "not a list of epochs, as `kerascnn fit` writes"),
    ("[{\"epoch\": 1, \"loss\": \"nan\", \"accuracy\": 0.1}]", "epoch 1 has no number for 'loss'"),
    ("[{\"loss\": 1.0, \"accuracy\": 0.1}]", "row 1 has no integer epoch"),
    ("[3]", "row 1 is not an object"),
], ids=["empty", "not-json", "not-a-list", "loss-not-a-number", "no-epoch", "row-not-an-object"])
def test_compare_runs_names_a_bad_history_and_writes_nothing(trained_run, tmp_path, history, reason):
    from kerascnn.analysis.visualization import compare_runs

    bad = saved_run(tmp_path, "bad", trained_run, history)
    with pytest.raises(KerasCNNError) as e:
        compare_runs([trained_run.model_path, bad], tmp_path / "cmp.png")
    assert str(e.value).startswith(f"cannot use the training history {tmp_path / 'bad.history.json'}: {reason}")
    assert str(e.value).endswith("; leave that run out, or train it again")
    assert not (tmp_path / "cmp.png").exists()
