"""`build` / `check`: names and params are validated against the builder's signature, with key paths in errors."""
from __future__ import annotations

import pytest
from kdforge.data.types import DataSpec
from kdforge.errors import ConfigError
from kdforge.models import ModelSpec, build, check

SPEC = DataSpec("fashion_mnist", (1, 28, 28), 10)


def test_unknown_parameter_names_key_path_and_allowed() -> None:
    with pytest.raises(ConfigError) as info:
        build(ModelSpec(name="mlp", params={"widht": 3}), SPEC, key_path="student")
    assert str(info.value) == "student.params.widht: unknown parameter of model 'mlp'; allowed: hidden, dropout"


def test_model_without_parameters_says_none_allowed() -> None:
    expected = r"^model\.params\.depth: unknown parameter of model 'resnet20'; allowed: none$"
    with pytest.raises(ConfigError, match=expected):
        check(ModelSpec(name="resnet20", params={"depth": 32}))


def test_unknown_name_suggests_close_match() -> None:
    with pytest.raises(ConfigError, match=r"^teacher\.model\.name: unknown model 'resnet23'.*did you mean"):
        check(ModelSpec(name="resnet23"), "teacher.model")


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"hidden": 256}, r"student\.params\.hidden: .*Sequence \(got 256\)"),
        ({"hidden": ["256"]}, r"student\.params\.hidden\.0: .*valid integer \(got '256'\)"),
        ({"hidden": [0]}, r"student\.params\.hidden\.0: .*greater than 0"),
        ({"dropout": 1.5}, r"student\.params\.dropout: .*less than 1 \(got 1\.5\)"),
        ({"dropout": "0.1"}, r"student\.params\.dropout: .*valid number"),
    ],
)
def test_wrong_type_or_range_is_a_config_error(params: dict, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        build(ModelSpec(name="mlp", params=params), SPEC, key_path="student")


def test_cnn_needs_at_least_one_block() -> None:
    with pytest.raises(ConfigError, match=r"model\.params\.channels: .*at least 1"):
        build(ModelSpec(name="cnn", params={"channels": []}), SPEC)


def test_check_returns_validated_params() -> None:
    assert check(ModelSpec(name="cnn", params={"channels": [8, 16], "dropout": 0})) == {
        "channels": [8, 16],
        "dropout": 0.0,
    }
