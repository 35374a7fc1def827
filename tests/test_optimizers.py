"""kerascnn.optim.optimizers: every optimizer by name, with the settings it was given."""

import pytest

NAMES = ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw"]

# Each name's Keras class and the hyperparameters it must carry when built
# with momentum=0.8, beta1=0.85, beta2=0.99 (none of them Keras' defaults).
EXPECTED = {
    "sgd": ("SGD", {"momentum": 0.0, "nesterov": False}),
    "momentum": ("SGD", {"momentum": 0.8, "nesterov": False}),
    "nesterov": ("SGD", {"momentum": 0.8, "nesterov": True}),
    "adagrad": ("Adagrad", {}),
    "rmsprop": ("RMSprop", {"momentum": 0.0}),
    "adam": ("Adam", {"beta_1": 0.85, "beta_2": 0.99}),
    "adamw": ("AdamW", {"beta_1": 0.85, "beta_2": 0.99}),
}


@pytest.mark.parametrize("name", NAMES)
def test_optimizers_by_name(name):
    from kerascnn.optim.optimizers import make_optimizer

    opt = make_optimizer(name, 0.01, momentum=0.8, beta1=0.85, beta2=0.99, weight_decay=1e-4)
    cls, settings = EXPECTED[name]
    assert type(opt).__name__ == cls  # exactly: AdamW is a subclass of Adam
    assert float(opt.learning_rate) == pytest.approx(0.01)
    for attr, value in settings.items():
        assert getattr(opt, attr) == pytest.approx(value), attr
    assert opt.weight_decay == pytest.approx(1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_weight_decay_by_default_only_for_adamw(name):
    from kerascnn.optim.optimizers import make_optimizer

    decay = make_optimizer(name, 0.01).weight_decay
    if name == "adamw":
        assert decay == pytest.approx(0.004)  # Keras' AdamW default
    else:
        assert decay is None


def test_every_optimizer_has_a_default_rate():
    from kerascnn.config.choices import OPTIMIZERS
    from kerascnn.optim.optimizers import make_optimizer

    assert list(OPTIMIZERS) == NAMES  # FitConfig checks the name and the rate (tests/test_options.py)
    assert float(make_optimizer("sgd").learning_rate) == pytest.approx(0.1)
