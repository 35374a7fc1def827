"""kerascnn.optimizers: every optimizer by name."""

import pytest


@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw"])
def test_optimizers_by_name(name):
    from kerascnn.optimizers import make_optimizer

    opt = make_optimizer(name, 0.01, weight_decay=1e-4)
    assert float(opt.learning_rate) == pytest.approx(0.01)
