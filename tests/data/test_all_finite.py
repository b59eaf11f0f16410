"""all_finite: the one check, shared by the data sources and distill(), that inputs hold no NaN or infinity."""
import pytest
import torch

from kdforge.data.types import all_finite
from kdforge.errors import ConfigError


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_one_bad_value_anywhere_is_found(bad: float) -> None:
    x = torch.randn(50, 3, 4)
    assert all_finite(x)
    for index in [(0, 0, 0), (25, 1, 2), (49, 2, 3)]:
        y = x.clone()
        y[index] = bad
        assert not all_finite(y), (bad, index)


def test_empty_and_extreme_finite_values_pass() -> None:
    assert all_finite(torch.empty(0, 3))
    assert all_finite(torch.tensor([torch.finfo(torch.float32).max, torch.finfo(torch.float32).min]))


def test_distill_refuses_nan_inputs_in_one_line() -> None:
    import kdforge

    x, y = torch.randn(20, 4), torch.randint(0, 2, (20,))
    x[7, 1] = float("nan")
    with pytest.raises(ConfigError, match="NaN or infinite input values"):
        kdforge.distill(torch.nn.Linear(4, 2), torch.nn.Linear(4, 2), (x, y), epochs=1)
