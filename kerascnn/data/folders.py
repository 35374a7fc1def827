"""Your own images: a folder laid out as Keras' `image_dataset_from_directory`
and torchvision's `ImageFolder` read it, as a dataset's uint8 arrays
(`load_folder`), decoded once and then read from a cache.

- Layout: `DIR/<class>/<image>`, the class names the subfolder names in
  sorted order, images at any depth below them; or `DIR/train/<class>/...`
  and `DIR/test/<class>/...` (and `DIR/val/<class>/...`) with the same
  classes, used as given. Files of
  other extensions than EXTENSIONS, and hidden ones (".name"), are skipped.
- Formats: PNG, JPEG, BMP, GIF (its first frame), WebP and TIFF, by Pillow,
  each turned as its EXIF orientation says.
- Size: every image is stored at one square side: `image_size` when given,
  else the folder's most common side (an image's longer side), at most
  MAX_SIDE. `resize="resize"` stretches an image to it; `"pad"` shrinks a
  larger one to fit, keeping its aspect ratio (never enlarging), and centres
  it on black, as `--resize pad` does.
- Channels: RGB when any image is colour (a colour mode, or a palette with
  a colour in it), else gray (Pillow's convert("L"), ITU-R 601 luma).
- Test set: without train/ and test/, `test_size` (a fraction, or a count;
  config.choices.TEST_SIZE) of each class held out by scikit-learn's
  stratified train_test_split with one seed (TEST_SEED) for every run, so
  that runs of one folder are compared on one test set (as digits' split).
- Cache: the decoded images, one `.npy` per folder, side and resize mode, in
  `cache_dir()/folders` ($KERASCNN_CACHE_DIR, else ~/.cache/kerascnn), keyed
  by the folder's fingerprint (each image's relative name, size and
  modification time): a changed folder is decoded again, and its old cache
  removed. Written atomically (a temporary file renamed), read memory-mapped;
  a cache that cannot be written is skipped with a warning.

Bad input is one KerasCNNError line, raised before anything is written.
"""

import collections
import concurrent.futures
import contextlib
import glob
import hashlib
import math
import os
import re
import sys
import tempfile
import time
import typing
from pathlib import Path

import numpy as np

from kerascnn.config.choices import DATASETS, TEST_SIZE
from kerascnn.config.spelling import spell
from kerascnn.data.rows import Rows
from kerascnn.errors import KerasCNNError
from kerascnn.runtime.backend import cache_dir

EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
MAX_SIDE = 224  # the textbook size of the largest families: a folder of photos is not stored at 4000x4000
TEST_SEED = 0
DECODE_VERSION = 1  # in every cache's name: a change to how images are decoded makes new caches
WORKERS = min(8, os.cpu_count() or 1)  # Pillow decodes and resizes without the GIL
LAYOUT = "DIR/<class>/<image>, one folder per class (or DIR/train/<class>/ and DIR/test/<class>/)"
TRAIN, TEST, VAL = 0, 1, 2  # a Listing's parts: DIR/train/ (or DIR itself), DIR/test/, DIR/val/


class FolderData(typing.NamedTuple):
    """A folder's images as uint8 (N, H, W, C) arrays with int64 labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list
    path: str  # absolute
    fingerprint: str
    x_val: np.ndarray = None  # a val/ folder's, else None (validation then comes from the training images)
    y_val: np.ndarray = None


class Listing(typing.NamedTuple):
    """A folder's images in order: paths, labels, and the part of each (TRAIN,
    TEST or VAL: the folder it lies in)."""

    root: Path
    files: list
    labels: np.ndarray
    part: np.ndarray
    class_names: list


def folder_path(name):
    """The absolute path of a folder `name` (as a dataset's name and record keep it)."""
    return os.path.abspath(os.path.expanduser(os.fspath(name)))


def load_folder(path, *, image_size=None, resize="resize", test_size=TEST_SIZE, fingerprint=None):
    """The images of folder `path` split into training and test sets (see
    the module's docstring for the rules), from the cache when the folder
    is unchanged. `fingerprint`: the one a run recorded; a folder that no
    longer has it is an error."""
    listing = list_images(_root(path))
    found = fingerprint_of(listing)
    if fingerprint is not None and found != fingerprint:
        raise KerasCNNError(f"{listing.root} changed since the run was trained on it (images added, removed or "
                            f"modified), so its test images are not the run's; restore the folder or train again")
    train, test = _split(listing, test_size)
    x = _cached(listing, found, image_size, resize)
    labels, val = listing.labels, np.flatnonzero(listing.part == VAL)
    given = (Rows(x, val), labels[val]) if len(val) else (None, None)
    return FolderData(Rows(x, train), labels[train], Rows(x, test), labels[test], listing.class_names,
                      str(listing.root), found, *given)


def folder_fingerprint(path):
    """The fingerprint of folder `path`'s images (fingerprint_of its listing)."""
    return fingerprint_of(list_images(_root(path)))


def _root(path):
    root = Path(folder_path(path))
    if not root.exists():
        raise KerasCNNError(f"no folder at {root}; {spell('dataset')} takes a dataset name ({', '.join(DATASETS)}) "
                            f"or a folder of images, {LAYOUT}")
    if not root.is_dir():
        raise KerasCNNError(f"{root} is a file, not a folder; {spell('dataset')} takes a folder of images, {LAYOUT}")
    return root


def list_images(root):
    """The images of folder `root` (a Listing), its layout checked."""
    top = _subfolders(root)
    if "train" in top and "test" in top:
        classes, parts = _given_parts(root, top), ((root / "train", TRAIN), (root / "test", TEST))
        parts += ((root / "val", VAL),) if "val" in top else ()
        where = root / "train"
    else:
        classes, parts, where = top, ((root, TRAIN),), root
    if len(classes) < 2:
        held = f"one class folder ({classes[0]}/)" if classes else "no class folders"
        raise KerasCNNError(f"{where} holds {held}; a classifier needs at least two: {LAYOUT}")
    files, labels, part = [], [], []
    for base, kind in parts:
        for label, name in enumerate(classes):
            found = _images(base / name)
            if not found:
                raise KerasCNNError(f"{base / name}/ holds no images ({', '.join(EXTENSIONS)}); add some or remove "
                                    f"the folder")
            files += found
            labels += [label] * len(found)
            part += [kind] * len(found)
    return Listing(root, files, np.array(labels, np.int64), np.array(part, np.int8), classes)


def _given_parts(root, top):
    """The class names of a folder holding train/ and test/ (and val/),
    which must hold the same class folders, and nothing else beside them."""
    given = [name for name in ("train", "test", "val") if name in top]
    others = [f"{name}/" for name in top if name not in given]
    if others:
        raise KerasCNNError(f"{root} holds train/ and test/ but also {', '.join(others)}; with train/ and "
                            f"test/ (and val/), every class folder goes inside each")
    classes = _subfolders(root / "train")
    for split in given[1:]:
        theirs = _subfolders(root / split)
        if theirs != classes:
            only = [f"{name}/ only: {', '.join(sorted(set(a) - set(b)))}"
                    for name, a, b in (("train", classes, theirs), (split, theirs, classes)) if set(a) - set(b)]
            raise KerasCNNError(f"{root}: train/ and {split}/ hold different classes ({'; '.join(only)}); give "
                                f"them the same class folders")
    return classes


def _subfolders(folder):
    """The names of `folder`'s folders, hidden ones aside, sorted."""
    try:
        with os.scandir(folder) as entries:
            return sorted(e.name for e in entries if not e.name.startswith(".") and e.is_dir())
    except OSError as e:
        raise KerasCNNError(f"cannot read the folder {folder}: {e.strerror}") from None


def _images(folder):
    """The image files at any depth in `folder`, hidden names aside, in order."""
    def fail(e):
        raise KerasCNNError(f"cannot read the folder {e.filename}: {e.strerror}")

    found = []
    for top, dirs, names in os.walk(folder, onerror=fail):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(top, n) for n in sorted(names)
                  if not n.startswith(".") and os.path.splitext(n)[1].lower() in EXTENSIONS]
    return found


def fingerprint_of(listing):
    """The folder's content as a hash of each image's relative name, size in
    bytes and modification time (no image is read)."""
    digest = hashlib.sha256()
    for path in listing.files:
        try:
            stat = os.stat(path)
        except OSError as e:
            raise KerasCNNError(f"cannot read {path}: {e.strerror}") from None
        line = f"{os.path.relpath(path, listing.root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n"
        digest.update(line.encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:32]


def _split(listing, test_size):
    """(train, test) indices: the test folders' images, else `test_size` of
    each class held out (`hold_out`)."""
    if (listing.part == TEST).any():
        return np.flatnonzero(listing.part == TRAIN), np.flatnonzero(listing.part == TEST)
    counts = np.bincount(listing.labels, minlength=len(listing.class_names))
    if counts.min() < 2:
        name = listing.class_names[int(np.argmin(counts))]
        raise KerasCNNError(f"{listing.root / name}/ holds one image; each class needs two at least, one to train "
                            f"on and one to test on (or give the folder train/ and test/ folders)")
    return hold_out(listing.labels, len(listing.class_names), test_size, listing.root)


def hold_out(labels, classes, test_size, where):
    """(train, test) indices of `labels`: `test_size` (a fraction or a
    count) of each class held out by scikit-learn's stratified split, with
    one seed (TEST_SEED) for every run; `where` names the images in errors."""
    n = len(labels)
    n_test = math.ceil(test_size * n) if isinstance(test_size, float) and test_size < 1 else int(test_size)
    if not classes <= n_test <= n - classes:
        raise KerasCNNError(f"{spell('test_size')} {test_size} holds out {n_test} of the {n} images of "
                            f"{where}; it must hold out one image of each of its {classes} classes at least, "
                            f"and leave one of each to train on")
    from sklearn.model_selection import train_test_split

    try:
        train, test = train_test_split(np.arange(n), test_size=n_test, random_state=TEST_SEED, stratify=labels)
    except ValueError as e:
        raise KerasCNNError(f"cannot hold out {spell('test_size')} {test_size} of {where}: {e}") from None
    return np.sort(train), np.sort(test)


# ----------------------------------------------------------------------------- the cache


def cache_path(label, where, fingerprint, image_size, resize):
    """The cache file of the images of `where` (a folder's path, or another
    source's name; `label` a readable name for it) stored at `image_size`
    by `resize`, with content `fingerprint`."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", label)[:40] or "folder"
    where = hashlib.sha256(str(where).encode("utf-8", "surrogateescape")).hexdigest()[:12]
    key = f"{name}-{where}-{image_size or 'auto'}-{resize}-v{DECODE_VERSION}-{fingerprint[:16]}"
    return cache_dir() / "folders" / f"{key}.npy"


def cached_images(path, count, fill):
    """The `count` images cached at `path`, memory-mapped; else
    `fill(allocate)` decoding them into it (`_write_cache`)."""
    x = _read_cache(path, count)
    return _write_cache(path, fill) if x is None else x


def _cached(listing, fingerprint, image_size, resize):
    """The folder's images memory-mapped from the cache, else decoded into
    it (into memory when the cache cannot be written)."""
    path = cache_path(listing.root.name, listing.root, fingerprint, image_size, resize)
    return cached_images(path, len(listing.files), lambda allocate: decode(listing, image_size, resize, allocate))


def _read_cache(path, count):
    """The cached images memory-mapped, or None when absent or not whole."""
    if not path.is_file():
        return None
    try:
        x = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None  # damaged: decoded again
    if x.dtype != np.uint8 or x.ndim != 4 or len(x) != count or x.shape[-1] not in (1, 3):
        return None
    return x


def _write_cache(path, fill):
    """`fill(allocate)` (decode) writing straight into a memory-mapped
    temporary file (never the whole folder in memory), renamed to `path`
    when complete and returned memory-mapped; the folder's caches of
    earlier contents removed. When the cache folder is not writable, a
    warning and the images in memory."""
    tmp, made = None, not path.parent.exists()

    def allocate(shape):  # once the headers are read: a folder that fails before then leaves no trace
        nonlocal tmp
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            os.close(fd)
            return _file_array(tmp, shape)
        except OSError as e:
            print(f"warning: cannot cache the decoded images in {path.parent} ({e.strerror}); they are decoded "
                  f"into memory and will be decoded again next time", file=sys.stderr)
            return np.empty(shape, np.uint8)

    try:
        x = fill(allocate)
        if not isinstance(x, np.memmap):
            return x
        x.flush()
        del x
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
            if made:  # the cache folder this failed run made, empty again
                with contextlib.suppress(OSError):
                    path.parent.rmdir()
                    path.parent.parent.rmdir()
    stem = path.name.rsplit("-", 2)[0]  # the folder, size and resize mode
    for old in path.parent.glob(f"{glob.escape(stem)}-v*-*.npy"):
        if old != path:
            with contextlib.suppress(OSError):
                old.unlink()
    return np.load(path, mmap_mode="r", allow_pickle=False)


# ----------------------------------------------------------------------------- decoding


def _file_array(path, shape):
    """A uint8 .npy file at `path` (None: not creatable) memory-mapped for
    writing, its space reserved now (a full disk is an OSError here, not a
    crash while writing through the map)."""
    x = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
    if hasattr(os, "posix_fallocate"):
        with open(path, "rb+") as f:
            os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
    return x


def decode(listing, image_size=None, resize="resize", allocate=None):
    """Every image of the listing as one uint8 (N, side, side, C) array
    (`allocate(shape)`'s, else in memory): headers first (sizes, colour),
    then the pixels, on WORKERS threads."""
    started = time.monotonic()
    headers = list(_pooled(_header, listing.files))
    side = image_size or common_side(headers)
    channels = 3 if any(colour for _, _, colour in headers) else 1
    x = (allocate or (lambda shape: np.empty(shape, np.uint8)))((len(listing.files), side, side, channels))
    for i, image in enumerate(_pooled(lambda p: decode_image(p, side, channels, resize), listing.files)):
        x[i] = image
        progress(listing.root, i + 1, len(x))
    decoded(listing.root, x, started)
    return x


def progress(what, done, total):
    """On a terminal, every 256 images, a progress line that the next overwrites."""
    if done % 256 == 0 and sys.stderr.isatty():
        print(f"\rdecoding {what}: {done}/{total}", end="", file=sys.stderr, flush=True)


def decoded(what, x, started):
    """The line that says `what` was decoded into `x` (over the progress line)."""
    side, channels = x.shape[1], x.shape[-1]
    done = (f"decoded {len(x)} images of {what} at {side}x{side} {'RGB' if channels == 3 else 'gray'} "
            f"in {time.monotonic() - started:.1f} s")
    print(f"\r{done}\033[K" if sys.stderr.isatty() else done, file=sys.stderr)


def common_side(headers):
    """The most common longer side of (width, height, colour) headers (the
    larger on a tie), at most MAX_SIDE."""
    counts = collections.Counter(max(w, h) for w, h, _ in headers)
    return min(max(counts, key=lambda side: (counts[side], side)), MAX_SIDE)


def _pooled(function, items):
    """function(item) for each item in order, on WORKERS threads; the
    first error (in order) stops the rest."""
    pool = concurrent.futures.ThreadPoolExecutor(WORKERS)
    try:
        yield from pool.map(function, items)
    finally:
        pool.shutdown(cancel_futures=True)


ORIENTATION = 0x0112  # EXIF: 5 to 8 turn the image a quarter


def _header(path):
    """(width, height, colour) of an image as shown (its EXIF orientation
    applied), read from its header."""
    from PIL import Image

    with _reading(path), Image.open(path) as im:
        width, height = im.size
        if im.getexif().get(ORIENTATION, 1) in (5, 6, 7, 8):
            width, height = height, width
        return width, height, _colour(im)


def _colour(im):
    """Whether an opened image is colour: its mode, or for a palette image,
    whether the palette holds a colour."""
    from PIL import Image

    if im.mode in ("P", "PA"):
        if im.palette is None:
            return False
        step = len(im.palette.mode)
        entries = np.frombuffer(bytes(im.palette.palette), np.uint8)
        entries = entries[: len(entries) // step * step].reshape(-1, step)[:, :3]
        return bool((entries != entries[:, :1]).any())
    return Image.getmodebase(im.mode) != "L"


def decode_image(path, side, channels, resize="resize"):
    """One image as uint8 (side, side, channels): its first frame, turned
    as its EXIF says, in gray (1) or RGB (3), fitted by `resize`."""
    from PIL import Image, ImageOps

    with _reading(path), Image.open(path) as im:
        im.seek(0)
        image = ImageOps.exif_transpose(im)
        image = image.convert("L" if channels == 1 else "RGB")
        return np.asarray(fit_image(image, side, resize), np.uint8).reshape(side, side, channels)


def fit_image(image, side, resize="resize"):
    """A Pillow image at side x side: stretched ("resize"), or shrunk to
    fit if larger, keeping its aspect ratio, and centred on black ("pad")."""
    from PIL import Image

    width, height = image.size
    if resize == "resize":
        return image if image.size == (side, side) else image.resize((side, side), Image.Resampling.BILINEAR)
    scale = min(1.0, side / width, side / height)
    if scale < 1:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = image.resize(size, Image.Resampling.BILINEAR)
    canvas = Image.new(image.mode, (side, side), 0)
    canvas.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return canvas


@contextlib.contextmanager
def _reading(path):
    """Any failure to read image `path` as one KerasCNNError naming it."""
    from PIL import Image

    try:
        yield
    except KerasCNNError:
        raise
    except Image.DecompressionBombError as e:
        raise KerasCNNError(f"{path} is too large to decode safely ({e}); Pillow refuses images over "
                            f"Image.MAX_IMAGE_PIXELS: shrink it or remove it") from None
    except (PermissionError, FileNotFoundError, IsADirectoryError) as e:
        raise KerasCNNError(f"cannot read {path}: {e.strerror}") from None
    except Exception as e:  # noqa: BLE001 - Pillow's decoders raise many kinds for a damaged file
        reason = " ".join(str(e).split()) or type(e).__name__
        raise KerasCNNError(f"cannot decode {path}: {reason}; the file is damaged, cut short or not the image its "
                            f"name says: replace it or remove it") from None
