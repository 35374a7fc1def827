"""kerascnn.data.folders: a folder of your own images as a dataset (layouts, formats, sizes, channels, EXIF), its
cache, its test split, every bad input as one line with nothing written, and a run trained on a folder that
evaluate reads again."""

import os

import numpy as np
import pytest
from PIL import Image

from kerascnn.config.options import FitConfig
from kerascnn.config.spelling import OptionError
from kerascnn.data import folders
from kerascnn.data.datasets import load_dataset
from kerascnn.data.rows import is_lazy
from kerascnn.errors import KerasCNNError

pytestmark = pytest.mark.core


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Each test's own cache folder."""
    path = tmp_path / "cache"
    monkeypatch.setenv("KERASCNN_CACHE_DIR", str(path))
    return path / "folders"


def digits(per_class=10, classes=(0, 1, 2)):
    """(class, 8x8 uint8 image) of scikit-learn's digits."""
    from sklearn.datasets import load_digits

    d = load_digits()
    for c in classes:
        for i in np.flatnonzero(d.target == c)[:per_class]:
            yield c, np.round(d.images[i] * 255 / 16).astype(np.uint8)


def write(path, image, *, size=16, mode="L", **save):
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(image).resize((size, size) if isinstance(size, int) else size, Image.Resampling.NEAREST)
    im.convert(mode).save(path, **save)
    return path


def make_folder(root, per_class=10, classes=(0, 1, 2), fmts=("png",), sizes=(16,), modes=("L",)):
    """root/digit<c>/<k>.<fmt>, the formats, sizes and modes taken in turn."""
    for k, (c, image) in enumerate(digits(per_class, classes)):
        write(root / f"digit{c}" / f"{k:03d}.{fmts[k % len(fmts)]}", image, size=sizes[k % len(sizes)],
              mode=modes[k % len(modes)])
    return root


def written(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def test_a_folder_of_class_folders_is_a_dataset(tmp_path):
    folder = make_folder(tmp_path / "pics", fmts=("png", "jpg"), sizes=(16, 16, 20))
    data = load_dataset(str(folder), val_size=3, seed=1)
    assert data.class_names == ["digit0", "digit1", "digit2"]
    assert data.name == str(folder) and data.source == f"folder:{folder}" and data.fingerprint
    assert data.x_train.dtype == np.uint8 and data.image_shape == (16, 16, 1)  # gray; the most common size
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (21, 3, 6)
    assert np.bincount(data.y_test).tolist() == [2, 2, 2]  # 20% of each class
    other = load_dataset(str(folder), val_size=3, seed=2)  # another seed: another validation set, the same test set
    np.testing.assert_array_equal(other.x_test, data.x_test)
    assert not np.array_equal(other.x_val, data.x_val)
    assert load_dataset(folder, test_size=9).x_test.shape[0] == 9
    with pytest.raises(KerasCNNError, match="test_size 2 holds out 2 of the 30 images"):
        load_dataset(folder, test_size=2)


def test_train_and_test_folders_are_used_as_given(tmp_path):
    root = tmp_path / "split"
    make_folder(root / "train", per_class=6)
    make_folder(root / "test", per_class=2, classes=(0, 1, 2))
    data = load_dataset(str(root), val_size=0)
    assert (len(data.x_train), len(data.x_test)) == (18, 6) and data.class_names == ["digit0", "digit1", "digit2"]
    assert data.y_test.tolist() == [0, 0, 1, 1, 2, 2]


def test_a_val_folder_is_the_validation_set_as_given(tmp_path):
    root = tmp_path / "split"
    make_folder(root / "train", per_class=6)
    make_folder(root / "val", per_class=2)
    make_folder(root / "test", per_class=3)
    data = load_dataset(str(root), val_size=0.5, seed=3)  # val_size does not apply: val/ is the validation set
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (18, 6, 9)
    assert np.bincount(data.y_val).tolist() == [2, 2, 2]
    assert len(load_dataset(str(root), train_size=5).x_train) == 5
    for name in ("val/digit9", "other"):
        (root / name).mkdir(parents=True)
        with pytest.raises(KerasCNNError, match="different classes|but also other/"):
            load_dataset(str(root))
        (root / name).rmdir()


def test_formats_colour_hidden_files_and_other_extensions(tmp_path):
    root = make_folder(tmp_path / "mixed", per_class=4, fmts=("png", "bmp", "webp", "tif"))
    (_, image), = digits(1, (1,))
    write(root / "digit1" / "colour.jpg", image, mode="RGB")
    gif = root / "digit2" / "anim.gif"
    frames = [Image.fromarray(image).resize((16, 16)).convert("P"), Image.new("P", (16, 16), 0)]
    frames[0].save(gif, save_all=True, append_images=frames[1:])
    for ignored in ("notes.txt", ".hidden.png", "._mac.png"):
        (root / "digit0" / ignored).write_bytes(b"not an image")
    write(root / "digit0" / ".thumbs" / "x.png", image)
    listing = folders.list_images(root)
    assert len(listing.files) == 14 and all(".thumbs" not in f for f in listing.files)
    x = folders.decode(listing)
    assert x.shape == (14, 16, 16, 3)  # one colour image: all RGB
    first = folders.decode_image(gif, 16, 3)
    assert first.max() > 0  # the first frame, not the black second one
    gray = x[listing.files.index(str(root / "digit0" / "000.png"))]
    assert (gray == gray[..., :1]).all()  # a gray image's three channels agree


def test_sizes_resize_or_pad_and_exif_orientation(tmp_path):
    wide = np.zeros((10, 40), np.uint8)
    wide[:, :20] = 255  # the left half white
    path = write(tmp_path / "wide.png", wide, size=(40, 10))
    stretched = folders.decode_image(path, 20, 1, "resize")
    assert stretched.shape == (20, 20, 1) and stretched[:, :8].min() >= 250 and stretched[:, 12:].max() == 0
    padded = folders.decode_image(path, 20, 1, "pad")  # shrunk to 20x5, centred on black
    assert padded[:7].max() == 0 and padded[12:].max() == 0 and padded[7:12, :9].min() >= 250
    small = folders.decode_image(path, 60, 1, "pad")  # never enlarged
    assert (small[25:35, 10:50, 0] == wide).all() and small.sum() == wide.sum()
    turned = tmp_path / "turned.jpg"
    exif = Image.Exif()
    exif[folders.ORIENTATION] = 6  # shown turned a quarter clockwise
    Image.fromarray(wide).save(turned, exif=exif, quality=95)
    assert folders._header(turned)[:2] == (10, 40)
    shown = folders.decode_image(turned, 40, 1, "pad")
    assert shown[:17, 15:25].min() > 200 and shown[23:, 15:25].max() < 50 and shown[:, :14].max() == 0


def test_decoded_once_then_read_from_the_cache(tmp_path, cache, monkeypatch):
    folder = make_folder(tmp_path / "pics", per_class=5)
    first = load_dataset(str(folder), val_size=0)
    (path,) = cache.iterdir()
    assert path.suffix == ".npy" and isinstance(np.load(path, mmap_mode="r"), np.memmap)
    for part in (first.x_train, first.x_test):  # read from the file as indexed, never copied whole
        assert is_lazy(part) and isinstance(part.base, np.memmap) and str(part.base.filename) == str(path)

    def refuse(*args, **kwargs):
        raise AssertionError("decoded again")

    with monkeypatch.context() as patched:
        patched.setattr(folders, "decode", refuse)
        again = load_dataset(str(folder), val_size=0)
    np.testing.assert_array_equal(again.x_train, first.x_train)
    assert again.fingerprint == first.fingerprint
    (_, image), = digits(1, (0,))
    write(folder / "digit0" / "new.png", image)  # a changed folder is decoded again, its old cache removed
    changed = load_dataset(str(folder), val_size=0)
    assert changed.fingerprint != first.fingerprint and len(changed.x_train) + len(changed.x_test) == 16
    assert [p.name for p in cache.iterdir()] != [path.name] and len(list(cache.iterdir())) == 1
    load_dataset(str(folder), val_size=0, image_size=20, resize="pad")  # one cache per size and mode
    assert len(list(cache.iterdir())) == 2
    with pytest.raises(KerasCNNError, match="changed since the run was trained on it"):
        load_dataset(str(folder), fingerprint=first.fingerprint)


def _corrupt(root):
    make_folder(root)
    (root / "digit1" / "bad.png").write_bytes(os.urandom(300))


def _truncated(root):
    make_folder(root, sizes=(64,))
    path = root / "digit2" / "cut.jpg"
    (_, image), = digits(1, (2,))
    write(path, image, size=64, quality=95)
    path.write_bytes(path.read_bytes()[:400])


def _unreadable(root):
    make_folder(root)
    os.chmod(root / "digit0" / "000.png", 0)


def _broken_link(root):
    make_folder(root)
    (root / "digit0" / "gone.png").symlink_to(root / "nowhere.png")


def _bomb(root):
    make_folder(root)
    Image.MAX_IMAGE_PIXELS = 100  # 16x16 is more than twice that: Pillow refuses it


BAD = {
    "empty": (lambda root: root.mkdir(), "holds no class folders; a classifier needs at least two"),
    "one class": (lambda root: make_folder(root, classes=(3,)), r"holds one class folder \(digit3/\)"),
    "empty class": (lambda root: (make_folder(root), (root / "digit9").mkdir()), r"digit9/ holds no images"),
    "corrupt": (_corrupt, r"cannot decode .*digit1/bad.png: cannot identify image file"),
    "truncated": (_truncated, r"cannot decode .*digit2/cut.jpg: .*truncated"),
    "unreadable": (_unreadable, r"cannot read .*digit0/000.png: Permission denied"),
    "broken link": (_broken_link, r"cannot read .*digit0/gone.png: No such file"),
    "bomb": (_bomb, r".*digit0/000.png is too large to decode safely"),
    "train and test differ": (lambda root: (make_folder(root / "train"), make_folder(root / "test", classes=(0, 1))),
                              r"train/ and test/ hold different classes \(train/ only: digit2\)"),
    "a file": (lambda root: root.write_text("x"), "is a file, not a folder"),
    "nowhere": (lambda root: None, "no folder at"),
    "one image a class": (lambda root: make_folder(root, per_class=1), "holds one image; each class needs two"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_folders_are_one_line_and_write_nothing(case, tmp_path, cache, monkeypatch):
    if case == "unreadable" and os.geteuid() == 0:
        pytest.skip("root reads any file")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)
    make, message = BAD[case]
    root = tmp_path / "pics"
    make(root)
    before = written(tmp_path)
    with pytest.raises(KerasCNNError, match=message) as e:
        load_dataset(str(root))
    assert "\n" not in str(e.value)
    assert written(tmp_path) == before and not cache.exists()


def test_the_dataset_option_takes_a_folder_and_still_refuses_unknown_names(tmp_path, monkeypatch):
    folder = make_folder(tmp_path / "pics", per_class=2)
    assert FitConfig(dataset=str(folder)).dataset == str(folder)
    assert FitConfig(dataset=folder).dataset == str(folder)
    assert FitConfig(dataset="./not/yet").dataset == "./not/yet"  # a path: load_dataset says what is wrong
    monkeypatch.chdir(tmp_path)
    assert FitConfig(dataset="pics").dataset == "pics"  # an existing folder
    with pytest.raises(OptionError, match="dataset: unknown dataset 'svhn'; choose one of: mnist"):
        FitConfig(dataset="svhn")
    (tmp_path / "mnist").mkdir()
    assert FitConfig(dataset="mnist").dataset == "mnist"  # a name wins over a folder


def test_a_run_on_a_folder_is_evaluated_on_the_same_images(tmp_path, monkeypatch):
    from kerascnn.analysis.evaluation import evaluate
    from kerascnn.runs.saved import Run
    from kerascnn.training.fit import fit

    folder = make_folder(tmp_path / "pics", per_class=8, fmts=("png", "jpg"), sizes=(16, 16, 12), modes=("L", "RGB"))
    monkeypatch.chdir(tmp_path)
    result = fit("lenet", "pics", epochs=1, batch_size=8, activation="relu", pool="max", output="runs", verbose=0)
    record = result.record
    assert record["dataset"] == str(folder) and record["data_source"] == f"folder:{folder}"
    assert record["given"]["dataset"] == "pics"  # as typed; the folder found again by its absolute path
    assert record["class_names"] == ["digit0", "digit1", "digit2"] and record["data_fingerprint"]
    assert record["input_shape"][2] == 3 and record["test_size"] == 0.2
    monkeypatch.chdir(tmp_path / "runs")
    run = Run.load("lenet.keras")
    assert run.given.dataset == str(folder) and FitConfig.from_file("lenet.run.json").dataset == str(folder)
    assert evaluate(run).accuracy == pytest.approx(result.test_accuracy)
    assert cli("evaluate", "lenet.keras").exit_code == 0
    (folder / "digit0" / "000.png").unlink()
    with pytest.raises(KerasCNNError, match="changed since the run was trained on it"):
        Run.load("lenet.keras").load_data()
    changed = cli("evaluate", "lenet.keras")
    assert changed.exit_code == 1 and "changed since the run was trained on it" in changed.output
    with pytest.raises(KerasCNNError, match="resume: .* changed since the run in"):
        fit("lenet", str(folder), epochs=2, batch_size=8, activation="relu", pool="max", output=".", verbose=0,
            resume=True)


def test_the_command_line_says_one_line_and_writes_no_run(tmp_path):
    root = tmp_path / "pics"
    _corrupt(root)
    result = cli("fit", "--dataset", root, "--epochs", 1, "--output", tmp_path / "runs")
    assert result.exit_code == 1 and not (tmp_path / "runs").exists()
    bad = root / "digit1" / "bad.png"
    assert [line for line in result.output.splitlines() if line.startswith("error:")] == [
        f"error: cannot decode {bad}: cannot identify image file '{bad}'; the file is damaged, cut short or not "
        f"the image its name says: replace it or remove it"]
    assert "[mnist|fashion_mnist|cifar10|digits|DIR|tfds:NAME]" in cli("fit", "--help").output


def cli(*args):
    from click.testing import CliRunner

    from kerascnn.cli.commands import cli as group

    return CliRunner().invoke(group, [str(a) for a in args])


def test_a_cache_folder_that_cannot_be_written_is_a_warning(tmp_path, monkeypatch, capsys):
    folder = make_folder(tmp_path / "pics", per_class=4)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("KERASCNN_CACHE_DIR", str(blocker / "cache"))
    data = load_dataset(str(folder), val_size=0)
    assert "warning: cannot cache the decoded images" in capsys.readouterr().err
    assert len(data.x_train) + len(data.x_test) == 12 and not isinstance(data.x_train.base, np.memmap)
    assert not list(tmp_path.rglob("*.npy")) and not list(tmp_path.rglob("*.tmp"))


SEEDS = (0, 1, 2)


@pytest.mark.slow
def test_a_folder_of_cifar10_learns_as_its_npz_does(tmp_path, real_data_dir):
    """The CIFAR-10 subset written as train/ and test/ folders of PNG and JPEG (quality 95) files trains a LeNet
    as the .npz of the same images does: over three seeds, the two means differ by less than three standard
    errors of their difference (a two-sample test at about 99.7%), and both are far above chance (10%)."""
    from kerascnn.training.fit import fit

    with np.load(real_data_dir / "cifar10" / "cifar10-subset.npz") as z:
        parts = {"train": (z["x_train"], z["y_train"]), "test": (z["x_test"], z["y_test"])}
        names = [f"{i}_{name}" for i, name in enumerate(z["class_names"])]  # sorted as the labels are
    root = tmp_path / "cifar10-folder"
    for part, (x, y) in parts.items():
        for i, (image, label) in enumerate(zip(x, y)):
            path = root / part / names[label] / f"{i:05d}.{'png' if i % 2 else 'jpg'}"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(path, quality=95)
    options = dict(epochs=3, batch_size=64, activation="relu", pool="max", verbose=0)
    runs = {source: [fit("lenet", dataset, data_dir=data_dir, seed=seed, output=str(tmp_path / source / str(seed)),
                         **options).test_accuracy for seed in SEEDS]
            for source, dataset, data_dir in (("npz", "cifar10", real_data_dir), ("folder", str(root), None))}
    npz, folder = np.array(runs["npz"]), np.array(runs["folder"])
    print(f"test accuracy over seeds {SEEDS}: npz {npz.round(4)}, folder {folder.round(4)}")
    assert npz.min() > 0.3 and folder.min() > 0.3
    standard_error = np.sqrt(npz.var(ddof=1) / len(SEEDS) + folder.var(ddof=1) / len(SEEDS))
    assert abs(npz.mean() - folder.mean()) < 3 * standard_error, (npz, folder)


def test_a_moved_folder_is_found_by_its_new_place(tmp_path, monkeypatch):
    from kerascnn.runs.saved import Run
    from kerascnn.training.fit import fit

    folder = make_folder(tmp_path / "pics", per_class=6)
    result = fit("lenet", str(folder), epochs=1, batch_size=8, output=str(tmp_path / "runs"), verbose=0)
    expected = Run.load(tmp_path / "runs" / "lenet.keras").load_data()
    moved = folder.rename(tmp_path / "elsewhere")  # a move keeps the names, sizes and times
    gone = cli("evaluate", tmp_path / "runs" / "lenet.keras")
    assert gone.exit_code == 1 and gone.output.count("\n") == 1
    assert f"the folder lenet.keras was trained on, {folder}, is not there" in gone.output
    assert "--dataset DIR" in gone.output
    run = Run.load(tmp_path / "runs" / "lenet.keras")
    data = run.load_data(str(moved))
    for part in ("y_train", "y_val", "y_test"):  # split as in training
        np.testing.assert_array_equal(getattr(data, part), getattr(expected, part))
    np.testing.assert_array_equal(np.asarray(data.x_test), np.asarray(expected.x_test))
    again = cli("evaluate", tmp_path / "runs" / "lenet.keras", "--dataset", moved)
    assert again.exit_code == 0 and f"test accuracy: {result.test_accuracy:.4f}" in again.output
