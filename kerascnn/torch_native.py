"""kerascnn's training step on the torch backend without Keras' per-layer
Python: the same function, over the same Keras variables.

Keras' torch backend runs every layer call, op and optimizer update through
Python of its own (dtype checks, tree flattening, layout copies), which on
a small network is most of a step. kerascnn builds every network from a
small, closed set of Keras layers; `NativeGraph` runs that set with
`torch.nn.functional` directly on the Keras variables' own tensors,
channels first inside (the input permuted once, a view in channels-last
memory, instead of two copies per convolution), and `NativeStep` trains it:
the loss, its gradients by autograd, the optimizer's own update rule
(`torch._foreach_*` on the Keras optimizer's variables) and the metrics'
totals, with no host-to-device copy and no wait for the device. The
weights, the optimizer state, the random generators and the `.keras` file
stay what Keras has; tests/test_torch_native.py checks outputs and
gradients against Keras' own path on every family.

A network with a layer outside the set, an optimizer setting outside the
update rules here (clipping, EMA, accumulation, loss scaling), or
`KERASCNN_TORCH_NATIVE=0` trains through Keras' path, saying so once.
"""

import itertools
import os
import sys

import numpy as np

import keras

ENV = "KERASCNN_TORCH_NATIVE"
LAYERS = ("InputLayer", "Conv2D", "DepthwiseConv2D", "Dense", "BatchNormalization", "Activation", "MaxPooling2D",
          "AveragePooling2D", "GlobalAveragePooling2D", "ZeroPadding2D", "Flatten", "Dropout", "Add", "Concatenate")
OPTIMIZERS = ("SGD", "Adam", "AdamW", "Adagrad", "RMSprop")
_said = set()
used = None  # the last training step chosen: "native", or why Keras' own (for benchmarks and tests)


def enabled():
    """Whether the native step is wanted: on the torch backend, unless
    $KERASCNN_TORCH_NATIVE is 0/false/off."""
    return keras.backend.backend() == "torch" and os.environ.get(ENV, "1").lower() not in ("0", "false", "no", "off")


def wanted(model):
    """Whether TrainingModel `model` is to train natively: enabled, and its
    network and loss within the set (its metrics are checked once built)."""
    if not enabled():
        return False
    why = unsupported(model.net) or loss_unsupported(model)
    if why:
        _fell_back(why)
    return not why


def loss_unsupported(model):
    loss = getattr(getattr(model, "_compile_loss", None), "_user_loss", None)
    return "" if _loss_kind(loss)[0] else f"loss {type(loss).__name__}"


def _fell_back(why):
    global used
    used = why
    say_once(f"{why} has no native torch kernel here: training through Keras' own torch step "
             "(slower, the same function)")


def say_once(line):
    if line not in _said:
        _said.add(line)
        print(f"kerascnn: {line}", file=sys.stderr, flush=True)


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


def feed(batches, device=None):
    """`batches` (an inputs.TrainingBatches) as Keras' torch fit reads them
    with the least work on the training thread: a torch DataLoader handing
    over each batch as the batch thread made it, torch tensors (with a GPU
    sent there from pinned memory without waiting), instead of a generator
    of arrays that Keras converts, batch by batch, on the training thread
    (on a GPU a copy that waits for the device)."""
    import torch
    import torch.utils.data

    from keras.src.backend.torch.core import get_device

    device = torch.device(device or get_device())

    def place(batch):
        (images, params), labels = batch
        return tuple(_placed(a, device) for a in (images, params)), _placed(labels, device)

    return torch.utils.data.DataLoader(_Stream(batches.stream(place=place)), batch_size=None, collate_fn=_as_is)


def _as_is(batch):
    return batch


def _stream_class():
    import torch.utils.data

    class Stream(torch.utils.data.IterableDataset):
        """One stream of batches over every epoch. Keras' fit may take a
        batch from a first iterator to build the model symbolically, then
        start another to train: the second begins with what the first
        handed out (up to PEEK batches), as Keras' generator adapter
        replays the batches it peeked at."""

        PEEK = 2

        def __init__(self, stream):
            self.stream, self.kept, self.handed, self.iterators = stream, [], 0, 0

        def __iter__(self):
            self.iterators += 1
            if self.iterators == 1:
                return self._first()
            if self.kept is None or self.handed > self.PEEK:
                raise RuntimeError("kerascnn's training stream was restarted after its first batches")
            replay, self.kept = self.kept, None
            return itertools.chain(replay, self.stream)

        def _first(self):
            for batch in self.stream:
                self.handed += 1
                if self.kept is not None and self.handed <= self.PEEK:
                    self.kept.append(batch)
                yield batch

    return Stream


def _Stream(stream):
    return _stream_class()(stream)


def _placed(array, device):
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device.type == "cpu":
        return tensor
    if device.type == "cuda":
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


# ---- the forward pass -------------------------------------------------------------------------------------------

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


# ---- the training step ------------------------------------------------------------------------------------------

def optimizer_unsupported(optimizer):
    """Why the update rules here do not cover `optimizer` ("" when they do)."""
    kind = type(optimizer).__name__
    if kind not in OPTIMIZERS or not type(optimizer).__module__.startswith("keras.src.backend.torch"):
        return f"optimizer {kind}"
    if optimizer.clipnorm or optimizer.clipvalue or optimizer.global_clipnorm:
        return "gradient clipping"
    if optimizer.use_ema or optimizer.gradient_accumulation_steps or optimizer.loss_scale_factor:
        return "the optimizer's EMA, accumulation or loss scale"
    if getattr(optimizer, "amsgrad", False) or getattr(optimizer, "centered", False):
        return "amsgrad or a centered RMSprop"
    return ""


class NativeStep:
    """The training and test steps of TrainingModel `model` natively. Make
    it once the model has trained a step through Keras (its optimizer and
    metrics built)."""

    def __init__(self, model):
        import torch

        self.model, self.net = model, model.net
        self.graph = NativeGraph(self.net)
        self.device = self.net.trainable_variables[0].value.device
        self.trainable = list(model.trainable_variables)
        self.params = [v.value for v in self.trainable]
        self.regularized = [(v.value, v.regularizer) for v in self.trainable if getattr(v, "regularizer", None)]
        self.loss_kind, self.smoothing = _loss_kind(getattr(model._compile_loss, "_user_loss", None))
        self.metrics = [(m, _metric_fn(m)) for m in _flat_metrics(model)]
        self.optimizer = model.optimizer
        self.update = None if optimizer_unsupported(self.optimizer) else Update(self.optimizer, self.trainable)
        self._results = self._result_plan()
        self._forward_loss = self.forward_loss
        if model.jit_compile:  # --jit on: the forward pass and loss through torch.compile, as a plain loop would
            self._forward_loss = torch.compile(self.forward_loss, dynamic=False)

    @classmethod
    def make(cls, model, data):
        """The native step of `model`, building Keras' metrics (on the
        logits of `data`'s batch) and optimizer as Keras' first step would;
        None, saying so once, when a metric is outside the set."""
        import torch

        compiled = model._compile_metrics
        if compiled is not None and not compiled.built:
            step = cls.__new__(cls)
            step.model, step.graph = model, NativeGraph(model.net)
            step.device = model.net.trainable_variables[0].value.device
            with torch.no_grad():
                images, params, labels = step._inputs(data)
                compiled.build(labels, step.forward(images, params, training=False))
        extra = [m for m in model.metrics if m is not compiled and m is not model._loss_tracker]
        for metric in extra + [m for m in _flat_metrics(model) if _metric_fn(m) is None]:
            if metric is not None:
                _fell_back(f"metric {metric.name}")
                return None
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        global used
        used = "native"
        return cls(model)

    def _inputs(self, data):
        """The batch on the device (pinned and sent without waiting) and the images the network takes."""
        (images, params), labels = data[0], data[1]
        images, params, labels = (self._to_device(t) for t in (images, params, labels))
        if images.ndim == 1:  # indices into the training set the model holds
            images = self.model.images.value[images.long()]
        return images, params, labels

    def _to_device(self, t):
        import torch

        if not isinstance(t, torch.Tensor):
            t = torch.from_numpy(np.asarray(t))
        if t.device == self.device:
            return t
        if self.device.type == "cuda":
            t = t.pin_memory()
        return t.to(self.device, non_blocking=True)

    def forward(self, images, params, training):
        x = self.model.transform.call(images, params, training=training)
        return self.graph(x, training=training)

    def loss(self, logits, labels):
        import torch
        import torch.nn.functional as F

        logits = logits.float()
        if self.loss_kind == "sparse":
            loss = F.cross_entropy(logits, labels.long())
        else:
            targets = labels.float()
            if self.smoothing:
                targets = targets * (1.0 - self.smoothing) + self.smoothing / logits.shape[-1]
            loss = -(targets * torch.log_softmax(logits, dim=-1)).sum(-1).mean()
        for value, regularizer in self.regularized:
            loss = loss + _regularization(value, regularizer)
        return loss

    def forward_loss(self, images, params, labels):
        logits = self.forward(images, params, training=True)
        return logits, self.loss(logits, labels)

    def train_step(self, data):
        import torch

        images, params, labels = self._inputs(data)
        logits, loss = self._forward_loss(images, params, labels)
        scaled = loss if self.update is not None else self.optimizer.scale_loss(loss)  # Keras' loss scale, if any
        grads = list(torch.autograd.grad(scaled, self.params, allow_unused=True))
        with torch.no_grad():
            if self.update is not None and all(g is not None for g in grads):
                self.update(grads)
            else:
                self.optimizer.apply(grads, self.trainable)
            return self._metrics(loss, logits, labels)

    def test_step(self, data):
        import torch

        with torch.no_grad():
            images, params, labels = self._inputs(data)
            logits = self.forward(images, params, training=False)
            return self._metrics(self.loss(logits, labels), logits, labels)

    def _metrics(self, loss, logits, labels):
        """Add the batch to the loss tracker's and the metrics' totals, as
        their update_state would; their results, as get_metrics_result
        (compile_metrics' names as CompileMetrics.result gives them)."""
        n = logits.shape[0]
        tracker = self.model._loss_tracker
        tracker.total.value.add_(loss.detach().to(tracker.total.value.dtype) * n)
        tracker.count.value.add_(n)
        for metric, fn in self.metrics:
            values = fn(labels, logits)
            metric.total.value.add_(values.sum().to(metric.total.value.dtype))
            metric.count.value.add_(values.shape[0])
        return {name: total.value / count.value for name, total, count in self._results}

    def _result_plan(self):
        """(name, total, count) of each result get_metrics_result gives, in its order: the loss tracker's,
        then compile_metrics' (the metrics here are all means)."""
        plan = []
        for metric in self.model.metrics:  # make() saw to it that there are no others
            if metric is self.model._compile_metrics:
                plan += [(m.name, m.total, m.count) for m, _ in self.metrics]
            else:
                plan.append((metric.name, metric.total, metric.count))
        return plan


def _flat_metrics(model):
    """The metrics of model.compile(metrics=...), once built."""
    compiled = getattr(model, "_compile_metrics", None)
    return list(compiled.metrics) if compiled is not None else []


def _loss_kind(loss):
    """("sparse" | "categorical", label smoothing) for the Keras losses
    kerascnn compiles (from logits, averaged over the batch), else (None, 0)."""
    if getattr(loss, "reduction", None) != "sum_over_batch_size":
        return None, 0.0
    kwargs = getattr(loss, "_fn_kwargs", {})
    if isinstance(loss, keras.losses.SparseCategoricalCrossentropy) and kwargs.get("from_logits") \
            and kwargs.get("ignore_class") is None:
        return "sparse", 0.0
    if isinstance(loss, keras.losses.CategoricalCrossentropy) and kwargs.get("from_logits") \
            and kwargs.get("axis", -1) == -1:
        return "categorical", float(kwargs.get("label_smoothing") or 0.0)
    return None, 0.0


def _metric_fn(metric):
    """A torch function (labels, logits) -> per-sample values for the mean
    metrics kerascnn compiles ("accuracy" on integer labels, MixedAccuracy
    on one-hot or mixed ones), or None."""
    import torch

    if not isinstance(metric, keras.metrics.MeanMetricWrapper) or metric._fn_kwargs:
        return None
    name = getattr(metric._fn, "__name__", "")
    if name == "sparse_categorical_accuracy":
        return lambda labels, logits: (logits.argmax(-1) == labels.reshape(-1).long()).float()
    if name == "mixed_accuracy":  # the label's weight on the predicted class
        return lambda labels, logits: torch.gather(labels.float(), 1, logits.argmax(-1, keepdim=True))[:, 0]
    return None


def _regularization(value, regularizer):
    if isinstance(regularizer, keras.regularizers.L2):
        return regularizer.l2 * (value * value).sum()
    if isinstance(regularizer, keras.regularizers.L1):
        return regularizer.l1 * value.abs().sum()
    return regularizer(value)


class Update:
    """Keras' torch update rule of `optimizer` (its `_parallel_update_step`,
    weight decay and step count), on its own variables, with the learning
    rate kept on the device (a rate variable) or worked out on the host (a
    schedule of the step): no host-to-device copy, no wait."""

    def __init__(self, optimizer, variables):
        self.optimizer = optimizer
        self.kind = type(optimizer).__name__
        self.variables = [v.value for v in variables]
        index = optimizer._get_variable_index

        def slots(name):
            held = getattr(optimizer, name, None)
            return [held[index(v)].value for v in variables] if held else None

        self.momentums, self.velocities = slots("_momentums"), slots("_velocities")
        self.accumulators = slots("_accumulators")
        if self.kind == "SGD":
            self.momentums = slots("momentums") if optimizer.momentum else None
        self.decayed = [v.value for v in variables if optimizer._use_weight_decay(v)] \
            if optimizer.weight_decay else []
        self.step = None  # the step count on the host, read once (schedules only)

    def rate(self):
        """The learning rate of this step: the rate variable's tensor, or the
        schedule's value (float32, as Keras computes it) at the host's count."""
        from keras.optimizers.schedules import LearningRateSchedule

        rate = self.optimizer._learning_rate
        if isinstance(rate, LearningRateSchedule):
            if self.step is None:
                self.step = int(self.optimizer.iterations.numpy())
            with keras.device("cpu"):
                return float(np.float32(keras.ops.convert_to_numpy(rate(self.step))))
        if isinstance(rate, keras.Variable):
            return rate.value
        return float(np.float32(rate() if callable(rate) else rate))

    def __call__(self, grads):
        import torch

        o, lr = self.optimizer, self.rate()
        variables = self.variables
        if self.decayed:  # Keras: variable - variable * wd * lr
            torch._foreach_sub_(self.decayed, torch._foreach_mul(torch._foreach_mul(self.decayed, o.weight_decay),
                                                                 lr))
        if self.kind == "SGD":
            if self.momentums is not None:
                torch._foreach_mul_(self.momentums, o.momentum)
                torch._foreach_sub_(self.momentums, torch._foreach_mul(grads, lr))
                if o.nesterov:
                    torch._foreach_sub_(variables, torch._foreach_mul(grads, lr))
                    torch._foreach_add_(variables, self.momentums, alpha=o.momentum)
                else:
                    torch._foreach_add_(variables, self.momentums)
            else:
                torch._foreach_sub_(variables, torch._foreach_mul(grads, lr))
        elif self.kind in ("Adam", "AdamW"):
            step = (o.iterations.value + 1).to(variables[0].dtype)
            alpha = lr * torch.sqrt(1 - torch.pow(o.beta_2, step)) / (1 - torch.pow(o.beta_1, step))
            torch._foreach_mul_(self.momentums, o.beta_1)
            torch._foreach_add_(self.momentums, grads, alpha=1 - o.beta_1)
            torch._foreach_mul_(self.velocities, o.beta_2)
            torch._foreach_add_(self.velocities, torch._foreach_mul(grads, grads), alpha=1 - o.beta_2)
            torch._foreach_sub_(variables, torch._foreach_div(
                torch._foreach_mul(self.momentums, alpha),
                torch._foreach_add(torch._foreach_sqrt(self.velocities), o.epsilon)))
        elif self.kind == "Adagrad":
            torch._foreach_add_(self.accumulators, torch._foreach_mul(grads, grads))
            torch._foreach_sub_(variables, torch._foreach_div(
                torch._foreach_mul(grads, lr), torch._foreach_sqrt(torch._foreach_add(self.accumulators, o.epsilon))))
        else:  # RMSprop
            torch._foreach_mul_(self.velocities, o.rho)
            torch._foreach_add_(self.velocities, torch._foreach_mul(grads, grads), alpha=1 - o.rho)
            denominators = torch._foreach_add(self.velocities, o.epsilon)
            torch._foreach_sqrt_(denominators)
            increments = torch._foreach_div(torch._foreach_mul(grads, lr), denominators)
            if o.momentum > 0:
                torch._foreach_mul_(self.momentums, o.momentum)
                torch._foreach_add_(self.momentums, increments)
                torch._foreach_sub_(variables, self.momentums)
            else:
                torch._foreach_sub_(variables, increments)
        o.iterations.value.add_(1)
        if self.step is not None:
            self.step += 1
