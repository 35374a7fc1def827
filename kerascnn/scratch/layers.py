"""LeNet-5's layers in NumPy: each forward pass keeps what its backward pass
needs, and each backward pass returns the gradient with respect to its input
(and its parameters' gradients).

Shapes: images and feature maps (N, C, H, W); convolution weights
(F, C, HH, WW) and biases (F,); affine weights (D, M) and biases (M,).

The convolution comes twice: `conv_forward`/`conv_backward` loop over the
output pixels, each step one broadcast product over (N, F, C, HH, WW), as the
report wrote it; `conv_forward_im2col`/`conv_backward_im2col` gather every
window once and make the convolution one matrix product. Both compute the
same thing (tests/test_scratch.py checks it); the second is many times faster.
"""

import numpy as np

from numpy.lib.stride_tricks import sliding_window_view


def _pad(x, pad):
    return np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad))) if pad else x


def _out_size(size, kernel, stride, pad):
    return (size + 2 * pad - kernel) // stride + 1


# --- convolution, one output pixel at a time (the report's loops)

def conv_forward(x, w, b, stride=1, pad=0):
    """x (N, C, H, W), w (F, C, HH, WW), b (F,) -> out (N, F, H', W'), a
    cross-correlation as in every deep-learning framework."""
    _, _, H, W = x.shape
    F, _, HH, WW = w.shape
    xp = _pad(x, pad)
    Ho, Wo = _out_size(H, HH, stride, pad), _out_size(W, WW, stride, pad)
    out = np.empty((x.shape[0], F, Ho, Wo), dtype=np.result_type(x, w))
    for i in range(Ho):
        for j in range(Wo):
            window = xp[:, None, :, i * stride:i * stride + HH, j * stride:j * stride + WW]  # (N, 1, C, HH, WW)
            out[:, :, i, j] = (window * w[None]).sum(axis=(2, 3, 4))  # (N, F, C, HH, WW) summed to (N, F)
    return out + b[None, :, None, None]


def conv_backward(dout, x, w, stride=1, pad=0, input_grad=True):
    """dout (N, F, H', W') -> (dx (N, C, H, W), dw (F, C, HH, WW), db (F,)):
    each output pixel sends its gradient back to the window it saw. dx is
    None without `input_grad` (the first layer's input needs none)."""
    _, _, H, W = x.shape
    _, _, HH, WW = w.shape
    xp = _pad(x, pad)
    dxp, dw = np.zeros_like(xp, dtype=np.result_type(x, dout)), np.zeros_like(w, dtype=np.result_type(w, dout))
    for i in range(dout.shape[2]):
        for j in range(dout.shape[3]):
            rows, cols = slice(i * stride, i * stride + HH), slice(j * stride, j * stride + WW)
            g = dout[:, :, i, j][:, :, None, None, None]  # (N, F, 1, 1, 1)
            dw += (xp[:, None, :, rows, cols] * g).sum(axis=0)  # (N, F, C, HH, WW) summed over N
            if input_grad:
                dxp[:, :, rows, cols] += (w[None] * g).sum(axis=1)  # summed over F
    dx = dxp[:, :, pad:pad + H, pad:pad + W] if input_grad else None
    return dx, dw, dout.sum(axis=(0, 2, 3))


# --- the same convolution as one matrix product (im2col)

def im2col(x, HH, WW, stride=1, pad=0):
    """x (N, C, H, W) -> every window as a row: (N, H', W', C * HH * WW)."""
    windows = sliding_window_view(_pad(x, pad), (HH, WW), axis=(2, 3))[:, :, ::stride, ::stride]  # (N, C, H', W', HH, WW)
    N, C, Ho, Wo = windows.shape[:4]
    return windows.transpose(0, 2, 3, 1, 4, 5).reshape(N, Ho, Wo, C * HH * WW)


def conv_forward_im2col(x, w, b, stride=1, pad=0):
    """`conv_forward` as (windows) @ (weights): same inputs, same output."""
    F = w.shape[0]
    cols = im2col(x, *w.shape[2:], stride, pad)  # (N, H', W', C*HH*WW)
    out = cols @ w.reshape(F, -1).T + b  # (N, H', W', F)
    return out.transpose(0, 3, 1, 2)


def conv_backward_im2col(dout, x, w, stride=1, pad=0, input_grad=True):
    """`conv_backward` with matrix products; the window gradients are added
    back into place one kernel offset (di, dj) at a time (col2im). dx is
    None without `input_grad` (the first layer's input needs none)."""
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    _, _, Ho, Wo = dout.shape
    d = dout.transpose(0, 2, 3, 1).reshape(-1, F)  # (N*H'*W', F)
    cols = im2col(x, HH, WW, stride, pad).reshape(-1, C * HH * WW)
    dw = (d.T @ cols).reshape(w.shape)
    if not input_grad:
        return None, dw, dout.sum(axis=(0, 2, 3))
    dcols = (w.reshape(F, -1).T @ d.T).reshape(C, HH, WW, N, Ho, Wo)
    dxp = np.zeros((C, N, H + 2 * pad, W + 2 * pad), dtype=dcols.dtype)
    for di in range(HH):
        for dj in range(WW):
            dxp[:, :, di:di + stride * Ho:stride, dj:dj + stride * Wo:stride] += dcols[:, di, dj]
    return dxp.transpose(1, 0, 2, 3)[:, :, pad:pad + H, pad:pad + W], dw, dout.sum(axis=(0, 2, 3))


# --- max pooling, ReLU, affine, softmax cross-entropy

def max_pool_forward(x, size=2, stride=2):
    """x (N, C, H, W) -> (N, C, H', W'), the largest value of each window."""
    N, C, H, W = x.shape
    Ho, Wo = _out_size(H, size, stride, 0), _out_size(W, size, stride, 0)
    out = np.empty((N, C, Ho, Wo), dtype=x.dtype)
    for i in range(Ho):
        for j in range(Wo):
            out[:, :, i, j] = x[:, :, i * stride:i * stride + size, j * stride:j * stride + size].max(axis=(2, 3))
    return out


def max_pool_backward(dout, x, size=2, stride=2):
    """Each window's gradient goes to its largest input, the first one where
    several tie (as TensorFlow, JAX and PyTorch route it)."""
    N, C = x.shape[:2]
    dx = np.zeros_like(x, dtype=np.result_type(x, dout))
    for i in range(dout.shape[2]):
        for j in range(dout.shape[3]):
            rows, cols = slice(i * stride, i * stride + size), slice(j * stride, j * stride + size)
            first = x[:, :, rows, cols].reshape(N, C, -1).argmax(axis=2)  # (N, C)
            mask = np.arange(size * size) == first[..., None]  # (N, C, size*size), one True per window
            dx[:, :, rows, cols] += (mask * dout[:, :, i, j, None]).reshape(N, C, size, size)
    return dx


def _windows(x, size):
    """Non-overlapping size x size windows: (N, C, H, W) -> (N, C, H', W', size * size)."""
    N, C, H, W = x.shape
    Ho, Wo = H // size, W // size
    return x[:, :, :Ho * size, :Wo * size].reshape(N, C, Ho, size, Wo, size).transpose(0, 1, 2, 4, 3, 5).reshape(
        N, C, Ho, Wo, size * size)


def max_pool_forward_windows(x, size=2):
    """`max_pool_forward` with stride = size, every window at once."""
    return _windows(x, size).max(axis=4)


def max_pool_backward_windows(dout, x, size=2):
    """`max_pool_backward` with stride = size, every window at once."""
    N, C, Ho, Wo = dout.shape
    windows = _windows(x, size)
    mask = np.arange(size * size) == windows.argmax(axis=4)[..., None]
    d = (mask * dout[..., None]).reshape(N, C, Ho, Wo, size, size).transpose(0, 1, 2, 4, 3, 5)
    dx = np.zeros_like(x, dtype=d.dtype)
    dx[:, :, :Ho * size, :Wo * size] = d.reshape(N, C, Ho * size, Wo * size)
    return dx


def relu_forward(x):
    return np.maximum(x, 0)


def relu_backward(dout, x):
    return dout * (x > 0)


def affine_forward(x, w, b):
    """x (N, d1, ..., dk) flattened to (N, D) -> (N, M)."""
    return x.reshape(len(x), -1) @ w + b


def affine_backward(dout, x, w):
    """dout (N, M) -> (dx shaped like x, dw (D, M), db (M,))."""
    return (dout @ w.T).reshape(x.shape), x.reshape(len(x), -1).T @ dout, dout.sum(axis=0)


def softmax_loss(scores, y):
    """Mean cross-entropy of softmax(scores (N, K)) against labels y (N,),
    and its gradient with respect to the scores."""
    shifted = scores - scores.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    N = len(y)
    loss = -log_probs[np.arange(N), y].mean()
    dscores = np.exp(log_probs)
    dscores[np.arange(N), y] -= 1
    return loss, dscores / N


# --- the layers LeNet-5 stacks: forward(x, params) and backward(dout)

class Conv:
    """A convolution with weights `<name>.w`, `<name>.b`; `fast` picks
    im2col; `input_grad=False` skips the gradient of its input (backward
    returns None for it)."""

    def __init__(self, name, pad=0, fast=False, input_grad=True):
        self.name, self.pad, self.fast, self.input_grad = name, pad, fast, input_grad
        self.params = (f"{name}.w", f"{name}.b")

    def forward(self, x, w, b):
        self.cache = (x, w)
        return (conv_forward_im2col if self.fast else conv_forward)(x, w, b, pad=self.pad)

    def backward(self, dout):
        backward = conv_backward_im2col if self.fast else conv_backward
        dx, dw, db = backward(dout, *self.cache, pad=self.pad, input_grad=self.input_grad)
        return dx, (dw, db)


class Affine:
    """A fully connected layer (flattening its input) with `<name>.w`, `<name>.b`."""

    def __init__(self, name):
        self.name, self.params = name, (f"{name}.w", f"{name}.b")

    def forward(self, x, w, b):
        self.cache = (x, w)
        return affine_forward(x, w, b)

    def backward(self, dout):
        dx, dw, db = affine_backward(dout, *self.cache)
        return dx, (dw, db)


class ReLU:
    params = ()

    def __init__(self, name):
        self.name = name

    def forward(self, x):
        self.cache = x
        return relu_forward(x)

    def backward(self, dout):
        return relu_backward(dout, self.cache), ()


class MaxPool:
    """2x2 max pooling with stride 2; `fast` takes every window at once."""

    params = ()

    def __init__(self, name, size=2, fast=False):
        self.name, self.size, self.fast = name, size, fast

    def forward(self, x):
        self.cache = x
        if self.fast:
            return max_pool_forward_windows(x, self.size)
        return max_pool_forward(x, self.size, self.size)

    def backward(self, dout):
        if self.fast:
            return max_pool_backward_windows(dout, self.cache, self.size), ()
        return max_pool_backward(dout, self.cache, self.size, self.size), ()
