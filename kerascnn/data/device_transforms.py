"""Image transforms in `keras.ops`, for the accelerator under jax and torch.

A batch arrives on the device as uint8 (N, H, W, C) with a float32 row of
drawn parameters per image (`draw_params`); `InputTransform` scales it to
[0, 1], fits it to the model's size, augments it (crop, flip, rotate,
translate, in that order) and normalizes it, inside the training step: under
JAX in the same `jax.jit` program as the forward and backward pass. The
parameters are drawn on the host with numpy, a pure function of (seed,
epoch, batch), so a resumed run augments exactly as an uninterrupted one.

The transforms are those of the tf.data path (`kerascnn.data.tf_augment`, Keras'
RandomCrop, RandomFlip, RandomRotation and RandomTranslation), given the same
parameters: a 1/8 zero border cropped back, a horizontal mirror, a rotation
of up to 10 degrees and a shift of up to a tenth of the size, bilinear with
a zero fill. One difference: Keras' RandomCrop takes one offset for a whole
batch, this crop one offset per image.
"""

import dataclasses
import functools

import numpy as np

import keras
from keras import ops

from kerascnn.data.sampling import GRAY_WEIGHTS
from kerascnn.config.choices import RESIZE_MODES, TRANSFORMS
from kerascnn.errors import KerasCNNError

MAX_DEGREES = 10.0  # RandomRotation(10 / 360)
MAX_SHIFT = 0.1  # RandomTranslation(0.1, 0.1)
PARAM_COLUMNS = {"crop": ("crop_y", "crop_x"), "flip": ("flip",), "rotate": ("degrees",),
                 "translate": ("shift_x", "shift_y")}


def crop_pad(image_size):
    """The zero border the crop takes its window from: an eighth of the size."""
    return max(1, image_size // 8)


def param_columns(names):
    """The columns of `draw_params`' rows for the transforms `names`, in
    TRANSFORMS' order; one unused column when there are none (a batch always
    carries a parameter row)."""
    columns = [c for name in TRANSFORMS if name in names for c in PARAM_COLUMNS[name]]
    return columns or ["unused"]


def draw_params(names, count, image_size, seed, epoch, batch):
    """The random parameters of one batch of `count` images as float32
    (count, len(param_columns(names))), a pure function of (seed, epoch,
    batch): crop offsets in 0..2*pad, flip 0/1, rotation in degrees, shifts
    in pixels."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), int(batch)])
    out = []
    for name in TRANSFORMS:
        if name not in names:
            continue
        if name == "crop":
            out.append(rng.integers(0, 2 * crop_pad(image_size) + 1, size=(count, 2)))
        elif name == "flip":
            out.append(rng.random((count, 1)) < 0.5)
        elif name == "rotate":
            out.append(rng.uniform(-MAX_DEGREES, MAX_DEGREES, size=(count, 1)))
        else:
            out.append(rng.uniform(-MAX_SHIFT, MAX_SHIFT, size=(count, 2)) * image_size)
    if not out:
        return np.zeros((count, 1), np.float32)
    return np.concatenate([np.asarray(p, np.float32) for p in out], axis=1)


def scale_and_resize(images, size, resize="resize"):
    """uint8 images (N, H, W, C) to float32 in [0, 1] at `size` (height,
    width): resized bilinearly (antialiased when shrinking, as tf.image), or
    with `resize="pad"` and a larger target centred on a zero border."""
    height, width = size
    x = ops.cast(images, "float32") / 255.0
    src_h, src_w = x.shape[1], x.shape[2]
    if (src_h, src_w) == (height, width):
        return x
    if resize == "pad" and src_h <= height and src_w <= width:
        top, left = (height - src_h) // 2, (width - src_w) // 2
        return ops.pad(x, [[0, 0], [top, height - src_h - top], [left, width - src_w - left], [0, 0]])
    if resize not in RESIZE_MODES:
        raise KerasCNNError(f"resize must be one of {', '.join(RESIZE_MODES)}, got {resize!r}")
    return ops.image.resize(x, (height, width), interpolation="bilinear",
                            antialias=bool(src_h > height or src_w > width))


def normalize(x, channels, mean, std):
    """(x - mean) / std per channel, then gray <-> RGB to `channels`."""
    x = (x - _constant(mean)) / _constant(std)
    if x.shape[-1] == 1 and channels == 3:
        x = ops.tile(x, [1, 1, 1, 3])
    elif x.shape[-1] == 3 and channels == 1:
        x = ops.sum(x * _constant(GRAY_WEIGHTS), axis=-1, keepdims=True)
    return x


def _constant(values):
    """Per-channel `values` for arithmetic with a backend tensor: one value
    as a Python float (no tensor made, so nothing sent to the device in a
    torch step); several as a float32 tensor, on torch made once a device."""
    values = tuple(float(np.float32(v)) for v in values)
    if len(set(values)) == 1:
        return values[0]
    if keras.backend.backend() == "torch":
        from keras.src.backend.torch.core import get_device

        return _torch_constant(values, str(get_device()))
    return ops.convert_to_tensor(np.asarray(values, np.float32))


@functools.cache
def _torch_constant(values, device):
    return ops.convert_to_tensor(np.asarray(values, np.float32))


def preprocess(images, input_shape, mean, std, resize="resize"):
    """uint8 images as a model takes them: scaled, fitted to `input_shape`
    (H, W, C), normalized, channels converted. Eager or inside a step."""
    height, width, channels = (int(v) for v in input_shape)
    return normalize(scale_and_resize(images, (height, width), resize), channels, mean, std)


def crop_flip(x, offsets, flags, pad):
    """Each image's window of its own size at `offsets` (N, 2: row, column
    in 0..2*pad) in the image bordered by `pad` zeros, mirrored left-right
    where `flags` (N, 1) is 1 (None: no flip). Exact, any dtype (on uint8,
    before scaling, it moves a quarter of the bytes): two gathers of whole
    rows, the window's rows and then, transposed, its columns in their
    (mirrored) order: a few thousand indices instead of one a pixel, which
    Keras' torch `take` would each check and map."""
    n, (height, width, channels) = ops.shape(x)[0], x.shape[1:]
    x = ops.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    tall, wide = height + 2 * pad, width + 2 * pad
    offsets = ops.cast(offsets, "int32")
    first = ops.arange(n, dtype="int32")[:, None]
    rows = first * tall + offsets[:, :1] + ops.arange(height, dtype="int32")[None]  # (N, H) rows of x
    x = ops.take(ops.reshape(x, (-1, wide * channels)), ops.reshape(rows, (-1,)), axis=0)
    x = ops.transpose(ops.reshape(x, (n, height, wide, channels)), (0, 2, 1, 3))  # (N, wide, H, C)
    steps = ops.arange(width, dtype="int32")[None]
    if flags is not None:
        steps = steps + ops.cast(flags > 0.5, "int32") * (width - 1 - 2 * steps)
    columns = first * wide + offsets[:, 1:] + steps  # (N, W) columns of x, mirrored where flagged
    x = ops.take(ops.reshape(x, (-1, height * channels)), ops.reshape(columns, (-1,)), axis=0)
    return ops.transpose(ops.reshape(x, (n, width, height, channels)), (0, 2, 1, 3))


def crop(x, offsets, pad):
    """Each image's window at `offsets` in the image bordered by `pad` zeros
    (`crop_flip` without the flip)."""
    return crop_flip(x, offsets, None, pad)


def flip(x, flags):
    """Mirror left-right the images whose flag (N, 1) is 1."""
    return ops.where(ops.reshape(flags, (-1, 1, 1, 1)) > 0.5, ops.flip(x, axis=2), x)


def _affine(x, rows):
    """Each image resampled through its projective row (N, 8: a0 a1 a2 b0 b1
    b2 c0 c1, c0 = c1 = 0 here) as TensorFlow's ImageProjectiveTransformV3
    (Keras' RandomRotation and RandomTranslation) does it: output pixel
    (x, y) reads input (a0 x + a1 y + a2, b0 x + b1 y + b2), bilinearly, each
    of the four neighbours outside the image reading 0. Written as gathers
    (`keras.ops.take`), quick on every backend; keras.ops.image.affine_transform
    is 0.2 s for 256 28x28 images under torch on a CPU."""
    n, (height, width, channels) = ops.shape(x)[0], x.shape[1:]
    ys = ops.arange(height, dtype="float32")[None, :, None]
    xs = ops.arange(width, dtype="float32")[None, None, :]
    a0, a1, a2, b0, b1, b2 = (ops.reshape(rows[:, i], (-1, 1, 1)) for i in range(6))
    sx, sy = a0 * xs + a1 * ys + a2, b0 * xs + b1 * ys + b2  # (N, H, W) source coordinates
    x0, y0 = ops.floor(sx), ops.floor(sy)
    fx, fy = (sx - x0)[..., None], (sy - y0)[..., None]
    flat = ops.reshape(x, (-1, channels))
    first = ops.arange(n, dtype="int32")[:, None, None] * (height * width)

    def read(yy, xx):
        inside = (yy >= 0) & (yy <= height - 1) & (xx >= 0) & (xx <= width - 1)
        index = first + ops.cast(ops.clip(yy, 0, height - 1), "int32") * width \
            + ops.cast(ops.clip(xx, 0, width - 1), "int32")
        pixels = ops.reshape(ops.take(flat, ops.reshape(index, (-1,)), axis=0), (n, height, width, channels))
        return ops.where(inside[..., None], pixels, ops.zeros_like(pixels))

    top = (1 - fx) * read(y0, x0) + fx * read(y0, x0 + 1)
    bottom = (1 - fx) * read(y0 + 1, x0) + fx * read(y0 + 1, x0 + 1)
    return (1 - fy) * top + fy * bottom


def rotate(x, degrees):
    """Rotate each image about its centre by `degrees` (N, 1), as Keras'
    RandomRotation computes its matrix."""
    height, width = x.shape[1], x.shape[2]
    angle = degrees[:, 0] * (np.pi / 180.0)
    cx, cy = 0.5 * (width - 1), 0.5 * (height - 1)
    cos, sin = ops.cos(angle), ops.sin(angle)
    zeros = ops.zeros_like(angle)
    rows = ops.stack([cos, -sin, cx - cx * cos + cy * sin, sin, cos, cy - cx * sin - cy * cos, zeros, zeros], axis=1)
    return _affine(x, rows)


def translate(x, shifts):
    """Shift each image by `shifts` (N, 2: x, y in pixels), as Keras'
    RandomTranslation does."""
    ones, zeros = ops.ones_like(shifts[:, 0]), ops.zeros_like(shifts[:, 0])
    rows = ops.stack([ones, zeros, -shifts[:, 0], zeros, ones, -shifts[:, 1], zeros, zeros], axis=1)
    return _affine(x, rows)


def split_params(params, names):
    """The columns of `params` that `draw_params` drew for each of `names`."""
    parts, column = {}, 0
    for name in TRANSFORMS:
        if name in names:
            width = len(PARAM_COLUMNS[name])
            parts[name] = params[:, column:column + width]
            column += width
    return parts


def augment(x, params, names, pad):
    """The transforms `names` on images `x` (in [0, 1], or uint8 when only
    crop and flip), with the rows of `params` that `draw_params` drew for
    them: crop and flip in one step (`crop_flip`), then rotate, then translate."""
    parts = split_params(params, names)
    if "crop" in parts:
        x = crop_flip(x, parts["crop"], parts.get("flip"), pad)
    elif "flip" in parts:
        x = flip(x, parts["flip"])
    if "rotate" in parts:
        x = rotate(x, parts["rotate"])
    if "translate" in parts:
        x = translate(x, parts["translate"])
    return x


@keras.saving.register_keras_serializable("kerascnn")
class InputTransform(keras.layers.Layer):
    """uint8 images and their drawn parameters to the model's input: scaled,
    resized (or padded), augmented when training, normalized. Float32
    whatever the dtype policy; no weights."""

    def __init__(self, input_shape, mean, std, resize="resize", augment=(), tricks=None, **kwargs):
        from kerascnn.config.tricks import Tricks

        kwargs.pop("dtype", None)
        super().__init__(dtype="float32", **kwargs)
        self.target_shape = tuple(int(v) for v in input_shape)
        self.mean, self.std = [float(v) for v in mean], [float(v) for v in std]
        self.resize = resize
        self.augment = tuple(augment)
        self.tricks = tricks if isinstance(tricks, Tricks) else Tricks(**(tricks or {}))
        self.pad = crop_pad(self.target_shape[0])

    def call(self, images, params=None, training=False):
        """`params`: `draw_params`' columns, then those of `tricks.mix_rows`."""
        from kerascnn.data import tricks

        height, width, channels = self.target_shape
        names = self.augment if training else ()
        if names and tuple(images.shape[1:3]) == (height, width) and set(names) <= {"crop", "flip"}:
            images, names = augment(images, params, names, self.pad), ()  # on the uint8 bytes: exact
        x = scale_and_resize(images, (height, width), self.resize)
        if names:
            x = augment(x, params, names, self.pad)
        if training and self.tricks:
            x = tricks.apply(self.tricks, x, params[:, len(param_columns(self.augment)):])
        return normalize(x, channels, self.mean, self.std)

    def compute_output_shape(self, images_shape, params_shape=None):
        return (images_shape[0], *self.target_shape)

    def get_config(self):
        return {**super().get_config(), "input_shape": self.target_shape, "mean": self.mean, "std": self.std,
                "resize": self.resize, "augment": list(self.augment), "tricks": dataclasses.asdict(self.tricks)}
