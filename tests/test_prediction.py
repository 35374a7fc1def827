import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from kerascnn.cli.commands import cli
from kerascnn.config.spelling import OptionError
from kerascnn.data.datasets import load_dataset
from kerascnn.errors import KerasCNNError
from kerascnn.analysis.evaluation import evaluate
from kerascnn.analysis.prediction import format_table, predict
from kerascnn.runs.saved import Run

pytestmark = pytest.mark.core  # also run under jax and torch (tests/test_backend.py)

PICKED = [0, 7, 123, 359]


def evaluated(model_path, tmp_path):
    """evaluate's prediction of every test image, by index: {index: (class, probability)}."""
    r = evaluate(model_path, output=tmp_path / "eval", top_losses=10_000)
    return {w["index"]: (w["predicted"], w["probability"]) for w in r.top_losses}


def save_png(path, image):
    """A uint8 (H, W, 1|3) image as a PNG; it reads back exactly."""
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(path)
    back = np.asarray(Image.open(path))
    assert np.array_equal(back.reshape(image.shape), image)
    return path


def same(a, b):
    """Two predictions' top classes, their probabilities up to float noise (batches of other sizes)."""
    return [t["class"] for t in a["top"]] == [t["class"] for t in b["top"]] and \
        [t["probability"] for t in a["top"]] == pytest.approx([t["probability"] for t in b["top"]], abs=1e-6)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_predict_reproduces_evaluate(trained_run, digits, tmp_path):
    seen = evaluated(trained_run.model_path, tmp_path)
    files = [save_png(tmp_path / f"test{i:03d}.png", digits.x_test[i]) for i in PICKED]
    predictions = predict(trained_run.model_path, files, top_k=3)
    assert [p["file"] for p in predictions] == [str(f) for f in files]
    for i, p in zip(PICKED, predictions):
        best = p["top"][0]
        assert (best["class"], best["index"]) == (seen[i][0], int(seen[i][0]))
        assert best["probability"] == pytest.approx(seen[i][1], abs=1e-4)
        probabilities = [t["probability"] for t in p["top"]]
        assert len(probabilities) == 3 and probabilities == sorted(probabilities, reverse=True)
    # the same images as arrays: one (H, W), one (H, W, 1), or a batch; and an RGB file of a gray digit
    i = PICKED[1]
    for images in (digits.x_test[i][..., 0], digits.x_test[i], digits.x_test[[i]]):
        (p,) = predict(trained_run.model_path, images)
        assert p["file"] is None and p["top"][0]["probability"] == pytest.approx(seen[i][1], abs=1e-4)
    rgb = save_png(tmp_path / "rgb.png", np.repeat(digits.x_test[i], 3, axis=-1))
    assert same(predict(trained_run.model_path, rgb)[0], predictions[1])


def test_invert_reads_dark_digits_on_white(trained_run, digits, tmp_path):
    i = PICKED[2]
    plain = predict(trained_run.model_path, save_png(tmp_path / "plain.png", digits.x_test[i]))
    paper = save_png(tmp_path / "paper.png", 255 - digits.x_test[i])
    inverted = predict(trained_run.model_path, paper, invert=True)
    assert same(inverted[0], plain[0])
    assert not same(predict(trained_run.model_path, paper)[0], plain[0])


def test_a_folder_gives_its_images_sorted(trained_run, digits, tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    for name, i in (("b.png", 1), ("a.png", 2), ("c.jpg", 3)):
        Image.fromarray(digits.x_test[i][..., 0]).resize((60, 50)).save(folder / name)  # any size
    (folder / "notes.txt").write_text("not an image")
    (folder / ".DS_Store").write_bytes(b"\0")
    predictions = predict(trained_run.model_path, folder, top_k=20)
    assert [p["file"] for p in predictions] == [str(folder / n) for n in ("a.png", "b.png", "c.jpg")]
    assert all(len(p["top"]) == 10 for p in predictions)  # at most every class
    assert sum(t["probability"] for t in predictions[0]["top"]) == pytest.approx(1, abs=1e-5)
    assert capsys.readouterr().err == f"note: skipped {folder / 'notes.txt'}: not an image file (.png, .jpg, " \
                                      f".jpeg, ...)\n"
    (folder / "notes.txt").rename(tmp_path / "notes.txt")
    for name in ("a.png", "b.png", "c.jpg"):
        (folder / name).unlink()
    with pytest.raises(KerasCNNError, match=f"^no images in the folder {folder}: predict reads PNG and JPEG"):
        predict(trained_run.model_path, folder)


def test_unreadable_images_and_bad_options(trained_run, digits, tmp_path):
    model = trained_run.model_path
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(KerasCNNError, match=f"^cannot read {bad}: not an image file Pillow knows; give PNG"):
        predict(model, bad)
    good = save_png(tmp_path / "good.png", digits.x_test[0])
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.read_bytes()[:-40])
    with pytest.raises(KerasCNNError, match=f"^cannot read {cut}: .*; the image file is damaged or incomplete$"):
        predict(model, [good, cut])
    with pytest.raises(KerasCNNError, match="^no such file or folder: "):
        predict(model, tmp_path / "missing.png")
    with pytest.raises(OptionError, match="top_k must be at least 1, got 0"):
        predict(model, good, top_k=0)
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(model, bare / "model.keras")
    with pytest.raises(KerasCNNError, match="has no run.json beside it .*: images for it need the normalization"):
        predict(bare / "model.keras", good)


def test_a_padded_run_is_fed_padded_images(digits, tmp_path):
    """A run trained with resize="pad" sees its own images padded, not stretched, from a file too."""
    from kerascnn.training.fit import fit

    r = fit("lenet", "digits", epochs=2, train_size=300, batch_size=32, image_size=36, resize="pad",
            activation="relu", pool="max", output=tmp_path / "pad", verbose=0)
    seen = evaluated(r.model_path, tmp_path)
    files = [save_png(tmp_path / f"{i}.png", digits.x_test[i]) for i in PICKED]
    padded = predict(r.model_path, files, top_k=1)
    for i, p in zip(PICKED, padded):
        assert p["top"][0]["class"] == seen[i][0]
        assert p["top"][0]["probability"] == pytest.approx(seen[i][1], abs=1e-4)
    run = Run.load(r.model_path)
    run.record["resize"] = "resize"
    stretched = predict(run, files, top_k=1)
    assert max(abs(a["top"][0]["probability"] - b["top"][0]["probability"]) for a, b in zip(padded, stretched)) > 1e-3


def test_predict_cli_table_and_json(trained_run, digits, tmp_path):
    files = [str(save_png(tmp_path / f"digit{i}.png", digits.x_test[i])) for i in (0, 1)]
    runner = CliRunner()
    result = runner.invoke(cli, ["predict", str(trained_run.model_path), *files, "--top-k", "2"])
    assert result.exit_code == 0, result.output
    expected = predict(trained_run.model_path, files, top_k=2)
    assert result.stdout.splitlines() == format_table(expected)
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["file", "top", "1", "top", "2"]
    column = header.index("top 2")
    for row, p in zip(rows, expected):  # each row's second class starts under "top 2"
        assert row[column - 2:column] == "  " and row[column:].startswith(f"{p['top'][1]['class']} ")
    result = runner.invoke(cli, ["predict", str(trained_run.model_path), *files, "--json", "--invert"])
    assert result.exit_code == 0, result.output
    parsed = json.loads(result.stdout)
    assert all(map(same, parsed, predict(trained_run.model_path, files, invert=True)))
    assert [p["file"] for p in parsed] == files and set(parsed[0]["top"][0]) == {"class", "index", "probability"}
    bad = tmp_path / "bad.jpg"
    bad.write_text("hello")
    result = runner.invoke(cli, ["predict", str(trained_run.model_path), files[0], str(bad)])
    assert result.exit_code == 1
    assert result.stderr == f"error: cannot read {bad}: not an image file Pillow knows; give PNG or JPEG images\n"
    result = runner.invoke(cli, ["predict", str(trained_run.model_path), str(tmp_path / "none.png")])
    assert result.exit_code == 2 and "does not exist" in result.stderr
