"""Training LeNet-5 from scratch: the update rules and the `Solver`.

Every update rule has one interface: `rule(w, dw, config) -> (next_w,
config)`, the weights, their gradient and the rule's configuration (its
rate and, for Adam, its moments) in, the new weights and configuration out.
Each parameter keeps its own configuration.
"""

import time

import numpy as np

from kerascnn.config.choices import SAMPLINGS
from kerascnn.errors import KerasCNNError
from kerascnn.scratch.layers import softmax_loss


def sgd(w, dw, config=None):
    """Plain stochastic gradient descent: w - learning_rate * dw."""
    config = {"learning_rate": 1e-2, **(config or {})}
    return w - config["learning_rate"] * dw, config


def adam(w, dw, config=None):
    """Adam (Kingma and Ba, 2015) with bias-corrected first and second moments."""
    config = {"learning_rate": 1e-3, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8, "m": np.zeros_like(w),
              "v": np.zeros_like(w), "t": 0, **(config or {})}
    t = config["t"] + 1
    m = config["beta1"] * config["m"] + (1 - config["beta1"]) * dw
    v = config["beta2"] * config["v"] + (1 - config["beta2"]) * dw * dw
    m_hat, v_hat = m / (1 - config["beta1"] ** t), v / (1 - config["beta2"] ** t)
    next_w = w - config["learning_rate"] * m_hat / (np.sqrt(v_hat) + config["epsilon"])
    return next_w, {**config, "m": m, "v": v, "t": t}


UPDATE_RULES = {"sgd": sgd, "adam": adam}


class Solver:
    """Minibatch training of a model with `loss(x, y) -> (loss, grads)`.

    Args:
        model: the model (its `params` are updated in place).
        data: {"x_train", "y_train", "x_val", "y_val"} as arrays.
        update_rule: "sgd" or "adam".
        learning_rate: the rate of the first `decay_after` epochs.
        lr_decay, decay_after: after epoch `decay_after` and after every
            epoch since, the rate is multiplied by `lr_decay` (the report:
            x0.8 after 10 epochs).
        batch_size, num_epochs: as named.
        sampling: "sequential" takes the batches in the data's order every
            epoch (the report); "shuffle" reorders the data every epoch;
            "bootstrap" draws each epoch's images with replacement.
        seed: the seed of the shuffle or the draws.
        print_every: print `loss: ...  [seen/total]` every this many
            iterations (0: never); `echo` prints it.

    `train()` fills `loss_history` (every iteration's loss), `step_rows`
    (each iteration's loss and accuracy) and `history` (a row per epoch:
    the mean training loss and accuracy, the validation loss and accuracy,
    the rate and the seconds), and ends with the weights of the last epoch.
    """

    def __init__(self, model, data, *, update_rule="adam", learning_rate=1e-3, lr_decay=1.0, decay_after=0,
                 batch_size=200, num_epochs=10, sampling="sequential", seed=0, print_every=100, echo=print):
        if update_rule not in UPDATE_RULES:
            raise KerasCNNError(f"update rule must be one of {', '.join(UPDATE_RULES)}, got {update_rule!r}")
        if sampling not in SAMPLINGS:
            raise KerasCNNError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")
        if batch_size < 1 or num_epochs < 1 or not learning_rate > 0:
            raise KerasCNNError("batch size, epochs and learning rate must be positive")
        self.model, self.data = model, data
        self.update_rule, self.rule = update_rule, UPDATE_RULES[update_rule]
        self.learning_rate, self.lr_decay, self.decay_after = learning_rate, lr_decay, decay_after
        self.batch_size, self.num_epochs, self.sampling = batch_size, num_epochs, sampling
        self.rng = np.random.default_rng(seed)
        self.print_every, self.echo = print_every, echo
        self.configs = {name: {"learning_rate": learning_rate} for name in model.params}
        self.loss_history, self.step_rows, self.history = [], [], []

    def step(self, x, y):
        """One iteration: loss and gradients, then every parameter's update."""
        loss, grads = self.model.loss(x, y)
        for name, w in self.model.params.items():
            self.model.params[name], self.configs[name] = self.rule(w, grads[name], self.configs[name])
        return loss

    @property
    def iterations_per_epoch(self):
        return -(-len(self.data["x_train"]) // self.batch_size)

    def epoch_order(self):
        n = len(self.data["x_train"])
        if self.sampling == "bootstrap":
            return self.rng.integers(0, n, size=n)
        return np.arange(n) if self.sampling == "sequential" else self.rng.permutation(n)

    def train_epoch(self, epoch):
        """One pass over the training set; returns its mean loss and accuracy."""
        x, y = self.data["x_train"], self.data["y_train"]
        order, losses, correct = self.epoch_order(), [], 0
        for batch, start in enumerate(range(0, len(order), self.batch_size)):
            idx = order[start:start + self.batch_size]
            loss = self.step(x[idx], y[idx])
            hits = int((self.model.last_scores.argmax(axis=1) == y[idx]).sum())
            losses.append(loss * len(idx))
            correct += hits
            seen = start + len(idx)
            self.loss_history.append(float(loss))
            self.step_rows.append({"step": len(self.loss_history), "epoch": epoch, "batch": batch + 1,
                                   "seen": seen, "loss": float(loss), "accuracy": hits / len(idx)})
            if self.print_every and len(self.loss_history) % self.print_every == 0:
                self.echo(f"loss: {loss:>8f}  [{seen:>{len(str(len(order)))}d}/{len(order)}]")
        return sum(losses) / len(order), correct / len(order)

    def evaluate(self, x, y):
        """(mean loss, accuracy) of the model on x, y."""
        scores = self.model.predict(x)
        return float(softmax_loss(scores, y)[0]), float((scores.argmax(axis=1) == y).mean())

    def train(self):
        """Train for `num_epochs`, printing one line per epoch."""
        for epoch in range(1, self.num_epochs + 1):
            rate = self.configs[next(iter(self.configs))]["learning_rate"]
            start = time.perf_counter()
            loss, accuracy = self.train_epoch(epoch)
            seconds = time.perf_counter() - start
            row = {"epoch": epoch, "loss": loss, "accuracy": accuracy, "lr": rate, "seconds": seconds}
            if len(self.data["x_val"]):
                row["val_loss"], row["val_accuracy"] = self.evaluate(self.data["x_val"], self.data["y_val"])
            self.history.append(row)
            val = f", val accuracy {row['val_accuracy']:.4f}" if "val_accuracy" in row else ""
            self.echo(f"epoch {epoch}/{self.num_epochs}: loss {loss:.4f}, accuracy {accuracy:.4f}{val}, "
                      f"lr {rate:.3g}, {seconds:.1f} s")
            if epoch >= self.decay_after:
                for config in self.configs.values():
                    config["learning_rate"] *= self.lr_decay
        return self.history
