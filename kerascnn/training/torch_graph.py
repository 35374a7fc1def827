"""kerascnn's networks run natively on torch: `NativeGraph` executes a
network's functional graph, made of the small set of Keras layers kerascnn
builds with (`LAYERS`), with `torch.nn.functional` on the Keras variables'
own tensors; `unsupported` says why a network is outside the set. The
same function as Keras' layers, to the rounding (tests/test_torch_native.py);
kerascnn.training.torch_native trains with it.
"""

import keras

LAYERS = ("InputLayer", "Conv2D", "DepthwiseConv2D", "Dense", "BatchNormalization", "Activation", "MaxPooling2D",
          "AveragePooling2D", "GlobalAveragePooling2D", "ZeroPadding2D", "Flatten", "Dropout", "Add", "Concatenate")

def unsupported(net):
    """Why `net` cannot run natively ("" when it can): the first layer
    outside the set, or a setting of one that the kernels here lack."""
    layout = keras.config.image_data_format()
    for layer in net.layers:
        kind = type(layer).__name__
        if kind not in LAYERS or type(layer).__module__.split(".")[0] != "keras":
            return f"layer {layer.name} ({kind})"
        if getattr(layer, "data_format", layout) != layout:
            return f"layer {layer.name}'s data_format {layer.data_format}"
        config = layer.get_config()
        if kind in ("Conv2D", "DepthwiseConv2D") and tuple(config.get("dilation_rate", (1, 1))) != (1, 1):
            return f"layer {layer.name}'s dilation"
        if kind == "BatchNormalization" and (layer.renorm or layer.synchronized or not _on_channels(layer, layout)):
            return f"layer {layer.name}'s settings"
        if kind == "GlobalAveragePooling2D" and config.get("keepdims"):
            return f"layer {layer.name}'s keepdims"
        if kind == "Concatenate" and layer.axis not in (-1, 3) and layout == "channels_last" \
                or kind == "Concatenate" and layer.axis != 1 and layout == "channels_first":
            return f"layer {layer.name}'s axis"
        if kind == "Dropout" and layer.noise_shape is not None:
            return f"layer {layer.name}'s noise_shape"
        if getattr(layer, "activity_regularizer", None) is not None:
            return f"layer {layer.name}'s activity regularizer"
    if len(net.inputs) != 1 or len(net.outputs) != 1:
        return "several inputs or outputs"
    return ""


def _on_channels(layer, layout):
    """Whether batch norm `layer` normalizes over the channel axis (the last, or the first after the batch)."""
    rank = len(layer.input.shape)
    axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
    channel = rank - 1 if layout == "channels_last" or rank == 2 else 1
    return [a % rank for a in axes] == [channel]


def _same_padding(size, kernel, stride):
    """Keras' torch rule (keras.src.backend.torch.nn._compute_padding_length): (before, after)."""
    total = kernel - 1 if stride == 1 else max(0, ((size + stride - 1) // stride - 1) * stride + kernel - size)
    return total // 2, total - total // 2


def _padded(x, kernel, strides, padding, mode="constant"):
    """`x` (N, C, H, W) and the symmetric padding to pass to torch's op, as Keras pads for "same"."""
    import torch.nn.functional as F

    if padding != "same":
        return x, 0
    pads = [_same_padding(x.shape[2 + i], kernel[i], strides[i]) for i in range(2)]
    if all(a == b for a, b in pads):
        return x, [a for a, _ in pads]
    return F.pad(x, (*pads[1], *pads[0]), mode=mode), 0


def _activation(fn):
    """A torch function for Keras activation `fn` (elementwise, so any layout), or None."""
    import torch
    import torch.nn.functional as F

    from keras import activations

    table = {activations.linear: lambda x: x, activations.relu: F.relu, activations.sigmoid: torch.sigmoid,
             activations.tanh: torch.tanh, activations.relu6: F.relu6, activations.silu: F.silu,
             activations.elu: F.elu, activations.selu: F.selu}
    if fn is activations.gelu:  # Keras' activation: approximate=False
        return F.gelu
    return table.get(fn)


class NativeGraph:
    """`net`'s functional graph as torch functions over its variables'
    tensors: `graph(x, training)` takes the input as Keras does and gives
    the output as Keras does; channels first in between."""

    # The input permuted to channels first: a view, in channels-last memory, which torch's convolutions take
    # as it is ("channels_last"); "channels_first" copies it to contiguous NCHW (benchmarks/torch_step.py)
    memory_format = "channels_last"

    def __init__(self, net):
        self.net = net
        self.layout = keras.config.image_data_format()
        self.steps = []  # (function, input slots, output slot)
        slots = {}

        def slot(tensor):
            return slots.setdefault(id(tensor), len(slots))

        self.input = slot(net.inputs[0])
        nodes = [node for depth in sorted(net._nodes_by_depth, reverse=True) for node in net._nodes_by_depth[depth]
                 if type(node.operation).__name__ != "InputLayer"]
        self.folded = _foldable_padding(nodes)  # conv layer -> (top, left): its ZeroPadding2D, done by the conv
        for node in nodes:
            layer = node.operation
            inputs = [slot(t) for t in node.input_tensors]
            kernel = (lambda x, training: x) if any(layer is pad for pad, _ in self.folded.values()) \
                else self._kernel(layer)
            self.steps.append((kernel, inputs, slot(node.output_tensors[0])))
        self.output = slot(net.outputs[0])
        self.size = len(slots)

    def __call__(self, x, training=False):
        values = [None] * self.size
        if self.layout == "channels_last" and x.ndim == 4:
            x = x.permute(0, 3, 1, 2)
            x = x.contiguous() if self.memory_format == "channels_first" else x
        values[self.input] = x
        for fn, inputs, out in self.steps:
            values[out] = fn(*[values[i] for i in inputs], training=training)
        return values[self.output]

    def _kernel(self, layer):
        return getattr(self, "_" + type(layer).__name__.lower())(layer)

    # Each maker returns fn(*inputs, training) -> output, channels first; weights read at call time.

    @staticmethod
    def _cast(layer, *tensors):
        dtype = _torch_dtype(layer.compute_dtype)
        return [t if t is None or t.dtype == dtype else t.to(dtype) for t in tensors]

    def _with_activation(self, layer, fn):
        act = _activation(layer.activation)
        if act is None:  # any other Keras activation, on the Keras layout
            keras_fn = layer.activation
            return lambda *a, training: self._keras_layout(keras_fn, fn(*a, training=training))
        if layer.activation is keras.activations.linear:
            return fn
        return lambda *a, training: act(fn(*a, training=training))

    def _keras_layout(self, fn, x):
        if x.ndim != 4 or self.layout != "channels_last":
            return fn(x)
        return fn(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def _conv2d(self, layer):
        import torch.nn.functional as F

        kernel, strides, padding, groups = layer.kernel_size, layer.strides, layer.padding, layer.groups
        folded = self.folded.get(id(layer), (None, None))[1]

        def conv(x, training):
            w, b = layer.kernel.value, layer.bias.value if layer.use_bias else None
            x, w, b = self._cast(layer, x, w, b)
            x, pad = (x, folded) if folded else _padded(x, kernel, strides, padding)
            w = w.permute(3, 2, 0, 1).contiguous()  # Keras' (h, w, in, out) as torch's (out, in, h, w)
            return _bias(F.conv2d(x, w, _fused(b), strides, pad, 1, groups), b)

        return self._with_activation(layer, conv)

    def _depthwiseconv2d(self, layer):
        import torch.nn.functional as F

        kernel, strides, padding = layer.kernel_size, layer.strides, layer.padding
        folded = self.folded.get(id(layer), (None, None))[1]

        def conv(x, training):
            w, b = layer.kernel.value, layer.bias.value if layer.use_bias else None
            x, w, b = self._cast(layer, x, w, b)
            h, k, cin, mult = w.shape
            x, pad = (x, folded) if folded else _padded(x, kernel, strides, padding)
            w = w.permute(2, 3, 0, 1).reshape(cin * mult, 1, h, k)
            return _bias(F.conv2d(x, w, _fused(b), strides, pad, 1, cin), b)

        return self._with_activation(layer, conv)

    def _dense(self, layer):
        import torch.nn.functional as F

        def dense(x, training):
            w, b = layer.kernel.value, layer.bias.value if layer.use_bias else None
            x, w, b = self._cast(layer, x, w, b)
            return _bias(F.linear(x, w.t(), _fused(b)), b)

        return self._with_activation(layer, dense)

    def _activation(self, layer):
        return self._with_activation(layer, lambda x, training: self._cast(layer, x)[0])

    def _batchnormalization(self, layer):
        """Keras' formula to the rounding: the batch's mean and E[x^2] -
        mean^2 (biased) variance, (x - mean) * (rsqrt(var + eps) * gamma) +
        beta, in float32; the moving statistics as Keras updates them."""
        import torch

        def norm(x, training):
            dtype = x.dtype
            x = x.float() if dtype in (torch.float16, torch.bfloat16) else x
            moving_mean, moving_var = layer.moving_mean.value, layer.moving_variance.value
            dims, shape = [0, *range(2, x.ndim)], (-1, *[1] * (x.ndim - 2))
            if training and layer.trainable:
                mean = x.mean(dim=dims)
                var = x.square().mean(dim=dims) - mean.square()
                with torch.no_grad():
                    m = layer.momentum
                    moving_mean.copy_(moving_mean * m + mean.detach() * (1.0 - m))
                    moving_var.copy_(moving_var * m + var.detach() * (1.0 - m))
            else:
                mean, var = moving_mean.to(x.dtype), moving_var.to(x.dtype)
            scale = (var + layer.epsilon).rsqrt()
            if layer.scale:
                scale = scale * layer.gamma.value.to(x.dtype)
            out = (x - mean.reshape(shape)) * scale.reshape(shape)
            if layer.center:
                out = out + layer.beta.value.to(x.dtype).reshape(shape)
            return out.to(_torch_dtype(layer.compute_dtype))

        return norm

    def _maxpooling2d(self, layer):
        import torch.nn.functional as F

        size, strides, padding = layer.pool_size, layer.strides or layer.pool_size, layer.padding

        def pool(x, training):
            x, pad = _padded(self._cast(layer, x)[0], size, strides, padding, mode="replicate")
            return F.max_pool2d(x, size, strides, pad)

        return pool

    def _averagepooling2d(self, layer):
        import torch.nn.functional as F

        size, strides, padding = layer.pool_size, layer.strides or layer.pool_size, layer.padding

        def pool(x, training):
            x, pad = _padded(self._cast(layer, x)[0], size, strides, padding, mode="replicate")
            return F.avg_pool2d(x, size, strides, pad, count_include_pad=False)

        return pool

    def _globalaveragepooling2d(self, layer):
        return lambda x, training: self._cast(layer, x)[0].mean(dim=(2, 3))

    def _zeropadding2d(self, layer):
        import torch.nn.functional as F

        (top, bottom), (left, right) = layer.padding
        return lambda x, training: F.pad(self._cast(layer, x)[0], (left, right, top, bottom))

    def _flatten(self, layer):
        def flatten(x, training):
            x = self._cast(layer, x)[0]
            if x.ndim == 4 and self.layout == "channels_last":
                x = x.permute(0, 2, 3, 1)
            return x.reshape(x.shape[0], -1)

        return flatten

    def _dropout(self, layer):
        def dropout(x, training):
            x = self._cast(layer, x)[0]
            if not training or layer.rate == 0:
                return x
            # Keras' own draw from the layer's seed generator, on Keras' layout: the same mask
            return self._keras_layout(
                lambda t: keras.random.dropout(t, layer.rate, seed=layer.seed_generator), x)

        return dropout

    def _add(self, layer):
        def add(*xs, training):
            xs = self._cast(layer, *xs)
            out = xs[0]
            for x in xs[1:]:
                out = out + x
            return out

        return add

    def _concatenate(self, layer):
        import torch

        return lambda *xs, training: torch.cat(self._cast(layer, *xs), dim=1)


def _foldable_padding(nodes):
    """{id(conv): (padding layer, (top, left))} for each ZeroPadding2D with
    the same padding on both sides whose output only a "valid" convolution
    reads: the convolution pads (with zeros, as the layer would) instead of
    a padded copy of the activations."""
    readers = {}
    for node in nodes:
        for t in node.input_tensors:
            readers.setdefault(id(t), []).append(node.operation)
    folded = {}
    for node in nodes:
        pad = node.operation
        if type(pad).__name__ != "ZeroPadding2D":
            continue
        (top, bottom), (left, right) = pad.padding
        after = readers.get(id(node.output_tensors[0]), [])
        if top == bottom and left == right and len(after) == 1 and \
                type(after[0]).__name__ in ("Conv2D", "DepthwiseConv2D") and after[0].padding == "valid":
            folded[id(after[0])] = (pad, (top, left))
    return folded


def _fused(bias):
    """The bias to pass to torch's op: float32 ones are added inside it;
    lower-precision ones after it (`_bias`), rounded as Keras rounds them."""
    return bias if bias is None or bias.dtype.itemsize == 4 else None


def _bias(out, bias):
    if bias is None or bias.dtype.itemsize == 4:
        return out
    return out + bias.reshape(1, -1, *[1] * (out.ndim - 2))


def _torch_dtype(name):
    import torch

    return getattr(torch, name)
