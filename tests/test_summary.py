"""Parameter accounting by part: encoder and head, weights, biases and batch norm."""

import pytest

from kerascnn.models import build_lenet
from kerascnn.models.summary import format_parameter_table, parameter_counts


@pytest.mark.core
@pytest.mark.parametrize("kwargs, encoder_weights", [
    ({}, 2550),
    ({"kernel": 7}, 4998),
    ({"channels": (16, 32)}, 13200),
])
def test_encoder_conv_weights_match_seed_report(kwargs, encoder_weights):
    counts = parameter_counts(build_lenet(**kwargs))
    assert counts["encoder"]["weights"] == encoder_weights
    assert counts["encoder"]["biases"] == sum(build_lenet(**kwargs).get_layer(n).filters for n in ("conv1", "conv2"))
    assert counts["total"]["total"] == build_lenet(**kwargs).count_params()


@pytest.mark.core
def test_parameter_table_lists_both_parts():
    table = format_parameter_table(parameter_counts(build_lenet()))
    assert "encoder" in table and "head" in table and "2,550" in table
