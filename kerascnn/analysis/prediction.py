"""`predict`: what a saved model sees in your own images.

PNG or JPEG files (or arrays) are converted as the run's pipeline converts
its data: to the dataset's channels (gray or RGB), fitted to the model's
input size the way the run did (`resize` or `pad`), scaled to [0, 1] and
normalized with the run's own mean and std (kerascnn.data.loader.preprocess).
"""

import os
import struct
import sys
from pathlib import Path

import numpy as np

from kerascnn.data.sampling import GRAY_WEIGHTS
from kerascnn.config.spelling import OptionError, spell
from kerascnn.errors import KerasCNNError
from kerascnn.runs.saved import Run

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def predict(run, images, *, top_k=3, invert=False):
    """The `top_k` classes a saved run (a Run or a model path) gives each
    image, most probable first: a list of {file, top: [{class, index,
    probability}]}, one per image, in order.

    `images` is a path or a list of them (a folder gives its images, sorted;
    other files in it are skipped with a note on stderr), or image arrays:
    (H, W), (H, W, C) or a batch (N, H, W, C), uint8 or floats 0..1; their
    "file" is None. Transparent pixels count as white. `invert` turns dark
    on light (a digit on paper) into light on dark, as MNIST is."""
    if top_k < 1:
        raise OptionError(f"{spell('top_k')} must be at least 1, got {top_k}")
    run = run if isinstance(run, Run) else Run.load(run)
    inputs = run.image_inputs()  # the run's conversion, from its record: no data is loaded
    named = gather(images, channels=inputs.channels)
    x = np.concatenate([inputs.network_input((255 - image if invert else image)[None]) for _, image in named])
    from kerascnn.analysis.evaluation import class_probabilities

    probabilities = class_probabilities(inputs.model, inputs.model.predict(x, verbose=0))
    names = run.class_names or [str(i) for i in range(probabilities.shape[1])]
    return [{"file": name, "top": top_classes(p, names, top_k)} for (name, _), p in zip(named, probabilities)]


def top_classes(probabilities, names, k):
    """The `k` most probable classes: [{class, index, probability}]."""
    return [{"class": names[i], "index": int(i), "probability": float(probabilities[i])}
            for i in np.argsort(-probabilities, kind="stable")[:k]]


def gather(images, channels):
    """[(file name or None, uint8 image (H, W, channels))] of `images`
    (see predict); none at all is an error."""
    if isinstance(images, (str, os.PathLike, np.ndarray)):
        images = [images]
    named = []
    for item in images:
        if isinstance(item, (str, os.PathLike)):
            named += [(str(path), read_image(path, channels)) for path in image_files(item)]
        else:
            named += [(None, to_channels(image, channels)) for image in as_images(item)]
    if not named:
        raise KerasCNNError("no images to predict: give image files, folders of them, or arrays")
    return named


def image_files(path):
    """The image files `path` names: itself, or a folder's images (by name),
    the other files noted on stderr; a folder without any is an error."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise KerasCNNError(f"no such file or folder: {path}")
    found, skipped = [], []
    for entry in sorted(p for p in path.iterdir() if not p.name.startswith(".")):
        (found if entry.is_file() and entry.suffix.lower() in IMAGE_SUFFIXES else skipped).append(entry)
    for entry in skipped:
        print(f"note: skipped {entry}: not an image file ({', '.join(IMAGE_SUFFIXES[:3])}, ...)", file=sys.stderr)
    if not found:
        raise KerasCNNError(f"no images in the folder {path}: predict reads PNG and JPEG files "
                            f"({', '.join(IMAGE_SUFFIXES)})")
    return found


def read_image(path, channels):
    """An image file as uint8 (H, W, channels): turned upright by its EXIF
    orientation, transparency over white, converted by Pillow to gray ("L")
    or RGB. A file Pillow cannot read is an error naming it."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                image = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image.convert("RGBA"))
            pixels = np.asarray(image.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
    except UnidentifiedImageError:
        raise KerasCNNError(f"cannot read {path}: not an image file Pillow knows; give PNG or JPEG "
                            f"images") from None
    except (PermissionError, IsADirectoryError) as e:
        raise KerasCNNError(f"cannot read {path}: {e.strerror}") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError) as e:
        raise KerasCNNError(f"cannot read {path}: {e}; the image file is damaged or incomplete") from None
    return pixels.reshape(*pixels.shape[:2], channels)


def as_images(array):
    """uint8 images (N, H, W, C) from one image (H, W) or (H, W, 1|3), or a
    batch (N, H, W[, C]): uint8 as they are, floats 0..1 scaled to 0..255."""
    from kerascnn.data.datasets import _as_nhwc

    array = np.asarray(array)
    single = array.ndim == 2 or array.ndim == 3 and array.shape[-1] in (1, 3)
    return _as_nhwc(array[None] if single else array, "the image array")


def to_channels(image, channels):
    """A uint8 image (H, W, 1|3) with `channels` channels: gray repeated,
    or RGB to gray with Pillow's weights."""
    if image.shape[-1] == channels:
        return image
    if channels == 3:
        return np.repeat(image, 3, axis=-1)
    return np.round(image.astype(np.float64) @ np.asarray(GRAY_WEIGHTS))[..., None].astype(np.uint8)


def format_table(predictions):
    """The predictions as aligned lines: one row per image, its classes most
    probable first, each with its probability."""
    k = max(len(p["top"]) for p in predictions)
    rows = [["file"] + [f"top {i + 1}" for i in range(k)]]
    for n, p in enumerate(predictions):
        rows.append([p["file"] or f"image {n}"] + [f"{t['class']} {t['probability']:.4f}" for t in p["top"]])
    widths = [max(len(row[i]) for row in rows if i < len(row)) for i in range(k + 1)]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
