"""Any TensorFlow Datasets image classification dataset as a dataset's
uint8 arrays: `--dataset tfds:NAME[/CONFIG]` (`load_tfds`), as timm's
`tfds/NAME` prefix reads them.

- Read from the TFDS data folder: `--data-dir` when given, else
  tensorflow-datasets' own ($TFDS_DATA_DIR, else ~/tensorflow_datasets). A
  dataset prepared there, even one whose builder code is not installed,
  loads offline; one that is not is downloaded and prepared when the
  machine is online, and is one line saying how to prepare it otherwise.
- Image classification: the dataset's supervised keys must be an image
  and a class label (cifar100, imagenette, oxford_flowers102, ...).
- Splits: "train" is trained on; "test" is the test set, else "validation"
  is (imagenette has no test split); a "validation" beside "test" is the
  validation set as given. Without either, `test_size` of each class is
  held out as for a folder (folders.hold_out).
- Images are stored as a folder's are (kerascnn.data.folders): one square
  side, `image_size` when given, else the dataset's own when fixed, else the
  most common longer side of its first SAMPLE training images, at most
  folders.MAX_SIDE; fitted by `resize`; gray or RGB as the dataset is. They
  are decoded once into the same memory-mapped cache, keyed by the
  prepared files (names, sizes, modification times).

Needs tensorflow-datasets and TensorFlow; without them, one line.
"""

import contextlib
import difflib
import hashlib
import os
import time
from pathlib import Path

import numpy as np

from kerascnn.config.choices import TEST_SIZE, TFDS_PREFIX
from kerascnn.config.spelling import spell, spell_set
from kerascnn.data import folders
from kerascnn.data.folders import FolderData, MAX_SIDE
from kerascnn.data.rows import Rows
from kerascnn.errors import KerasCNNError

SAMPLE = 1000  # images whose sizes choose the stored side of a dataset of mixed sizes
DOWNLOAD_HOST = "storage.googleapis.com"  # tensorflow-datasets' own mirror: probed before a download


def load_tfds(spec, *, data_dir=None, image_size=None, resize="resize", test_size=TEST_SIZE, fingerprint=None,
              allow_download=True):
    """The images of `spec` ("tfds:NAME[/CONFIG]") split into training,
    test and (where the dataset has one) validation sets, as FolderData
    (its `path` the spec), from the cache when the prepared files are
    unchanged. `fingerprint`: the one a run recorded; other files are an
    error."""
    builder = _builder(spec, data_dir, allow_download)
    image_key, label_key = _keys(spec, builder)
    splits = _splits(spec, builder)
    found = _fingerprint(builder)
    if fingerprint is not None and found != fingerprint:
        raise KerasCNNError(f"{spec} in {builder.data_path} is not the copy the run was trained on (its files "
                            f"differ), so its test images are not the run's; use that copy or train again")
    features = builder.info.features
    counts = [builder.info.splits[split].num_examples for split in splits]
    path = folders.cache_path(spec[len(TFDS_PREFIX):], f"{spec}\0{builder.data_path}", found, image_size, resize)

    def fill(allocate):  # the side sampled only when decoding: a cached start reads no image
        side = image_size or _side(builder, splits[0], image_key, features[image_key])
        shape = (sum(counts), side, side, _channels(features[image_key]))
        return _decode(spec, builder, splits, (image_key, label_key), resize, allocate(shape))

    x = folders.cached_images(path, sum(counts), fill)
    labels = _labels(builder, splits, label_key, path)
    part = np.repeat(np.arange(len(splits)), counts)
    names = list(features[label_key].names)
    if len(splits) == 1:
        train, test = folders.hold_out(labels, len(names), test_size, spec)
    else:
        train, test = np.flatnonzero(part == 0), np.flatnonzero(part == 1)
    val = np.flatnonzero(part == 2)
    given = (Rows(x, val), labels[val]) if len(val) else (None, None)
    return FolderData(Rows(x, train), labels[train], Rows(x, test), labels[test], names, spec, found, *given)


def _tfds(spec):
    """tensorflow-datasets, or one line saying it (and TensorFlow) are missing."""
    try:
        import tensorflow_datasets as tfds

        tfds.builder  # noqa: B018 - a tensorflow-datasets whose TensorFlow is missing imports half
    except (ImportError, AttributeError) as e:
        raise KerasCNNError(f"{spec} needs tensorflow-datasets and TensorFlow, which are not installed here ({e}); "
                            f"install them (pip install tensorflow tensorflow-datasets), or train on a folder of "
                            f"images ({spell_set('dataset', 'DIR')})") from None
    return tfds


def _builder(spec, data_dir, allow_download):
    """The dataset's tfds builder, prepared in the data folder (downloaded
    when it is not and the machine is online)."""
    name = spec[len(TFDS_PREFIX):]
    if not name:
        raise KerasCNNError(f"{spell('dataset')} tfds: needs a dataset name, e.g. tfds:cifar100 or "
                            f"tfds:imagenette/160px")
    tfds = _tfds(spec)
    from kerascnn.data.sources import _tfds_prepared, network_available

    if data_dir is not None and not Path(data_dir).expanduser().is_dir():
        raise KerasCNNError(f"{spell('data_dir')} {data_dir} is not a folder; for {spec} it names the TensorFlow "
                            f"Datasets data folder (where `tfds build` prepared it)")
    data_dir = str(Path(data_dir).expanduser()) if data_dir is not None else None
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # noqa: BLE001 - tfds raises DatasetNotFoundError, ValueError, ...
        raise KerasCNNError(_not_found(tfds, spec, name, e)) from None
    if _tfds_prepared(builder):
        return builder
    where = data_dir or tfds.core.constants.DATA_DIR
    if not (allow_download and network_available(DOWNLOAD_HOST)):
        raise KerasCNNError(f"{spec} is not prepared in {where} and there is no network to download it; prepare it "
                            f"where there is one (tfds build {name.split('/')[0]} --data_dir DIR), copy DIR here and "
                            f"give {spell_set('data_dir', 'DIR')}")
    try:
        builder.download_and_prepare()
    except Exception as e:  # noqa: BLE001 - downloads fail in many ways
        reason = " ".join(str(e).split())[:300]
        raise KerasCNNError(f"tensorflow-datasets could not download and prepare {spec}: {reason}") from None
    return builder


def _not_found(tfds, spec, name, error):
    """The one line for a name tfds does not know, with the closest it does."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    try:
        close = difflib.get_close_matches(name.split("/")[0].split(":")[0], tfds.list_builders(), n=3)
    except Exception:  # noqa: BLE001 - a suggestion only
        close = []
    hint = f"; did you mean {', '.join(TFDS_PREFIX + c for c in close)}?" if close else ""
    return f"cannot open {spec}: {first}{hint}"


def _keys(spec, builder):
    """(image key, label key) of an image classification dataset."""
    import tensorflow_datasets as tfds

    keys = builder.info.supervised_keys
    features = builder.info.features
    ok = (isinstance(keys, tuple) and len(keys) == 2 and all(isinstance(k, str) for k in keys)
          and isinstance(features[keys[0]], tfds.features.Image)
          and isinstance(features[keys[1]], tfds.features.ClassLabel))
    if not ok:
        raise KerasCNNError(f"{spec} is not an image classification dataset (its supervised keys are {keys!r}, "
                            f"not an image and a class label); kerascnn trains classifiers of images")
    return keys


def _splits(spec, builder):
    """The splits read, in order: train, then test (or validation), then
    validation when both are there."""
    have = set(builder.info.splits.keys())
    if "train" not in have:
        raise KerasCNNError(f"{spec} has no train split (its splits: {', '.join(sorted(have))}); kerascnn trains "
                            f"on a dataset's train split")
    if "test" in have:
        return ["train", "test", "validation"] if "validation" in have else ["train", "test"]
    return ["train", "validation"] if "validation" in have else ["train"]


def _fingerprint(builder):
    """The prepared dataset as a hash of its name, version and files (names,
    sizes and modification times)."""
    digest = hashlib.sha256(f"{builder.info.full_name}\n".encode())
    root = Path(builder.data_path)
    for path in sorted(p for p in root.iterdir() if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:32]


def _channels(feature):
    """1 for a gray Image feature, else 3 (RGB; an alpha channel dropped)."""
    return 1 if feature.shape and feature.shape[-1] == 1 else 3


def _side(builder, split, key, feature):
    """The stored side: the feature's own when fixed and square-able, else
    the most common longer side of the first SAMPLE images, at most MAX_SIDE."""
    height, width = (feature.shape or (None, None))[:2]
    if height and width:
        return min(max(height, width), MAX_SIDE)
    ds = builder.as_dataset(split=split, shuffle_files=False).take(SAMPLE)
    shapes = [tuple(example[key].shape[:2]) for example in ds.as_numpy_iterator()]
    return folders.common_side([(w, h, None) for h, w in shapes])


def _examples(builder, split, keys):
    """(image, label) numpy pairs of `split`, in the prepared files' order."""
    ds = builder.as_dataset(split=split, shuffle_files=False, as_supervised=False)
    for example in ds.as_numpy_iterator():
        yield example[keys[0]], int(example[keys[1]])


def _decode(spec, builder, splits, keys, resize, x):
    """Every image of `splits` fitted to x's side and channels, into `x`."""
    from PIL import Image

    started = time.monotonic()
    side, channels = x.shape[1], x.shape[-1]
    i = 0
    for split in splits:
        for image, _ in _examples(builder, split, keys):
            if i == len(x):
                raise KerasCNNError(f"{spec}: its files hold more images than its dataset_info.json says "
                                    f"({len(x)}); the copy in {builder.data_path} is damaged: prepare it again")
            im = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image[..., :3])
            im = im.convert("L" if channels == 1 else "RGB")
            x[i] = np.asarray(folders.fit_image(im, side, resize), np.uint8).reshape(side, side, channels)
            i += 1
            folders.progress(spec, i, len(x))
    if i != len(x):
        raise KerasCNNError(f"{spec}: its files hold {i} images but its dataset_info.json says {len(x)}; the copy "
                            f"in {builder.data_path} is incomplete: prepare it again")
    folders.decoded(spec, x, started)
    return x


def _labels(builder, splits, key, cache):
    """The labels of `splits` in order, kept beside the images' cache (a
    second pass over the files would decode every image again)."""
    path = cache.with_suffix(".labels.npy")
    if path.is_file():
        return np.load(path)
    labels = np.concatenate([
        np.fromiter((int(e[key]) for e in builder.as_dataset(split=s, shuffle_files=False,
                                                              decoders=_skip_images(builder)).as_numpy_iterator()),
                    np.int64) for s in splits])
    if cache.is_file():
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                np.save(f, labels)
            os.replace(tmp, path)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()
    return labels


def _skip_images(builder):
    """tfds decoders that leave every image undecoded (labels only)."""
    import tensorflow_datasets as tfds

    return {k: tfds.decode.SkipDecoding() for k, f in builder.info.features.items()
            if isinstance(f, tfds.features.Image)}
