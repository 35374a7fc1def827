"""kerascnn's training step on the torch backend without Keras' per-layer
Python: the same function, over the same Keras variables.

Keras' torch backend runs every layer call, op and optimizer update through
Python of its own (dtype checks, tree flattening, layout copies), which on
a small network is most of a step. kerascnn builds every network from a
small, closed set of Keras layers; `kerascnn.training.torch_graph.NativeGraph` runs
that set with `torch.nn.functional` directly on the Keras variables' own
tensors, channels first inside (the input permuted once, a view in
channels-last memory, instead of two copies per convolution), and
`NativeStep` trains it:
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

import os
import sys

import numpy as np

import keras

from kerascnn.data.torch_feed import placed
from kerascnn.training.torch_graph import NativeGraph, unsupported

ENV = "KERASCNN_TORCH_NATIVE"
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


def _batch(model, device, data):
    """A training or test batch on `device`: (images, parameters, labels),
    the images gathered from the set TrainingModel `model` holds when the
    batch brings their indices."""
    (images, params), labels = data[0], data[1]
    images, params, labels = (placed(t, device) for t in (images, params, labels))
    if images.ndim == 1:
        images = model.images.value[images.long()]
    return images, params, labels


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
    """The training and test steps of TrainingModel `model` natively, over
    its Keras variables, optimizer and metrics; `make` builds those first."""

    def __init__(self, model, graph=None):
        import torch

        self.model, self.net = model, model.net
        self.graph = graph or NativeGraph(self.net)
        self.device = _device(model)
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

        compiled, graph = model._compile_metrics, NativeGraph(model.net)
        if compiled is not None and not compiled.built:
            with torch.no_grad():
                images, params, labels = _batch(model, _device(model), data)
                compiled.build(labels, graph(model.transform.call(images, params, training=False)))
        extra = [m for m in model.metrics if m is not compiled and m is not model._loss_tracker]
        for metric in extra + [m for m in _flat_metrics(model) if _metric_fn(m) is None]:
            if metric is not None:
                _fell_back(f"metric {metric.name}")
                return None
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        global used
        used = "native"
        return cls(model, graph)

    def _inputs(self, data):
        return _batch(self.model, self.device, data)

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


def _device(model):
    """The device `model`'s weights are on."""
    return model.net.trainable_variables[0].value.device


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
