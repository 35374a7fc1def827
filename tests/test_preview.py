import numpy as np
import pytest

from click.testing import CliRunner

from kerascnn.cli.commands import cli
from kerascnn.config.spelling import OptionError
from kerascnn.analysis.preview import show_batch

PNG = b"\x89PNG\r\n\x1a\n"
OPTIONS = {"train_size": 96, "batch_size": 16, "seed": 3}

pytestmark = pytest.mark.core  # also run under jax and torch (tests/test_backend.py)


def test_the_batch_shown_is_the_first_batch_fit_trains_on(tmp_path, monkeypatch):
    """fit's own pipeline, spied on during a tiny fit, yields first exactly the batch show_batch draws."""
    import keras

    import kerascnn.data.host
    import kerascnn.data.tf_pipeline
    from kerascnn.training.fit import fit

    made = []
    tf_data = keras.backend.backend() == "tensorflow"
    owner, name = (kerascnn.data.tf_pipeline, "make_training_pipeline") if tf_data else (kerascnn.data.host.TrainingBatches, "batch")
    original = getattr(owner, name)

    def spy(*args, **kwargs):
        made.append(original(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(owner, name, spy)
    # one step a call: fit then makes its training pipeline once (with several, it also takes the first
    # batch apart for the divergence guard's reference)
    fit("lenet", "digits", epochs=1, augment=("crop", "translate"), output=tmp_path / "runs", verbose=0,
        steps_per_execution=1, **OPTIONS)
    monkeypatch.undo()
    if tf_data:
        (trained, _), = made
        x, y = (np.asarray(t) for t in next(iter(trained)))
    else:  # jax, torch: the host batch fit trained on first, through the step's transform (checked in test_inputs)
        from kerascnn.data.device_transforms import InputTransform

        (images, params), y = made[0]
        run = kerascnn.Run.load(tmp_path / "runs" / "lenet.keras")
        transform = InputTransform(run.record["input_shape"], run.record["mean"], run.record["std"],
                                   augment=("crop", "translate"))
        x = keras.ops.convert_to_numpy(transform(images, params, training=True))
    shown = show_batch("lenet", "digits", augment="crop,translate", output=tmp_path / "batch.png", **OPTIONS)
    assert shown.path == tmp_path / "batch.png" and shown.path.read_bytes()[:8] == PNG
    assert shown.images.shape == (16, 28, 28, 1)
    np.testing.assert_array_equal(shown.images, x)
    np.testing.assert_array_equal(shown.labels, y)


def test_augmentation_changes_the_images_not_the_order(tmp_path):
    plain = show_batch("lenet", "digits", output=tmp_path / "plain.png", **OPTIONS)
    augmented = show_batch("lenet", "digits", augment=("rotate", "translate"), output=tmp_path / "aug.png",
                           **OPTIONS)
    np.testing.assert_array_equal(plain.labels, augmented.labels)
    assert np.abs(plain.images - augmented.images).mean() > 0.01


def test_size_and_default_output(tmp_path, monkeypatch):
    """Resized to the size asked for (padded here), drawn to <arch>.<dataset>.batch.png in the current folder."""
    monkeypatch.chdir(tmp_path)
    shown = show_batch("lenet", "digits", image_size=32, resize="pad", count=4, **OPTIONS)
    assert shown.path.resolve() == tmp_path / "lenet.digits.batch.png"
    assert shown.path.read_bytes()[:8] == PNG
    assert shown.images.shape == (16, 32, 32, 1)  # the whole batch, though 4 are drawn
    border = shown.images[:, :2].ravel()  # pixel 0 padded, normalized like any black pixel
    assert np.allclose(border, border[0]) and border[0] < 0


def test_bad_options_are_fits_messages(tmp_path):
    with pytest.raises(OptionError, match="lenet needs images of at least 12x12; image_size 8 is too small"):
        show_batch("lenet", "digits", image_size=8)
    with pytest.raises(OptionError, match="output batch.txt: a PNG image is written there"):
        show_batch("lenet", "digits", output="batch.txt")
    runner = CliRunner()
    result = runner.invoke(cli, ["show-batch", "--dataset", "digits", "--augment", "zoom"])
    assert result.exit_code == 2
    assert result.stderr == ("error: --augment: unknown augmentation 'zoom'; choose from: crop, flip, rotate, "
                             "translate\n")
    fit_says = runner.invoke(cli, ["fit", "--dataset", "digits", "--augment", "zoom"]).stderr
    assert fit_says == result.stderr
    result = runner.invoke(cli, ["show-batch", "--dataset", "digits", "--output", str(tmp_path / "x.jpg")])
    assert result.exit_code == 2 and f"--output {tmp_path / 'x.jpg'}: a PNG image is written there" in result.stderr


def test_show_batch_cli(tmp_path):
    out = tmp_path / "seen.png"
    result = CliRunner().invoke(cli, ["show-batch", "--dataset", "digits", "--arch", "lenet", "--augment", "flip",
                                      "--image-size", "20", "--batch-size", "8", "--seed", "1",
                                      "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"wrote {out}\n" and out.read_bytes()[:8] == PNG
