"""methods.build / validate_params: config errors name the key path and the allowed values."""
from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from kdforge.data.types import DataSpec, Split
from kdforge.errors import ConfigError
from kdforge.methods import Method, MethodParams, MethodSpec, Setup, build, validate_params
from kdforge.registry import METHODS
from kdforge.teachers.live import LiveTeacher


def _setup(label_smoothing: float = 0.0) -> Setup:
    return Setup.for_data(DataSpec("toy", (3,), 2), Split(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long)),
                          label_smoothing)


def test_builds_each_method_with_validated_params() -> None:
    teacher = LiveTeacher(nn.Linear(3, 2))
    d = build(MethodSpec(name="kd", params={"temperature": 2}), nn.Linear(3, 2), teacher, _setup(0.1))
    assert type(d).__name__ == "KD"
    assert d.params.temperature == 2.0 and d.params.kd_weight == 0.9
    assert d.setup.label_smoothing == 0.1
    assert type(build(MethodSpec(name="ce"), nn.Linear(3, 2), None, _setup())).__name__ == "CE"
    assert type(build(MethodSpec(name="wsl"), nn.Linear(3, 2), teacher, _setup())).__name__ == "WSL"


def test_unknown_method_lists_allowed() -> None:
    with pytest.raises(ConfigError, match=r"method\.name: unknown method 'wls' \(did you mean 'wsl'\?\); allowed: "
                                          + re.escape(", ".join(sorted(METHODS))) + "$"):
        validate_params(MethodSpec(name="wls"))


def test_unknown_param_names_key_path_and_allowed_keys() -> None:
    with pytest.raises(ConfigError) as err:
        validate_params(MethodSpec(name="kd", params={"temperatur": 3.0}))
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("method.params.temperatur: unknown parameter of method 'kd'")
    assert "did you mean 'temperature'" in message
    assert message.endswith("allowed: temperature, ce_weight, kd_weight, count_regularization")


def test_bad_param_value_names_key_path() -> None:
    with pytest.raises(ConfigError, match=r"^method\.params\.temperature: .*greater than 0 \(got 0\)$"):
        validate_params(MethodSpec(name="wsl", params={"temperature": 0}))


def test_ce_takes_no_params() -> None:
    with pytest.raises(ConfigError, match=r"method\.params\.alpha: .*allowed: none"):
        validate_params(MethodSpec(name="ce", params={"alpha": 1.0}))


@pytest.mark.parametrize("name", ["kd", "wsl"])
def test_teacher_methods_without_teacher(name: str) -> None:
    message = f"method '{name}' needs a teacher: add a teacher section (checkpoint or recipe)"
    with pytest.raises(ConfigError, match=re.escape(message)):
        build(MethodSpec(name=name), nn.Linear(3, 2), None, _setup())


def test_a_method_declares_its_params_once_as_the_type_argument() -> None:
    from typing import get_args

    for name, cls in METHODS.items():  # each registered method's Params is its (nearest) type argument
        args = [a for b in cls.__mro__ for base in b.__dict__.get("__orig_bases__", ()) for a in get_args(base)
                if isinstance(a, type)]
        assert args and cls.Params is args[0], name

    class Own(MethodParams):
        weight: float = 1.0

    class Generic(Method[Own]):
        needs_teacher = False

    class Narrower(Own):
        weight: float = 2.0

    class Child(Generic):  # no argument: the parent's params
        pass

    assert Generic.Params is Own and Child.Params is Own and Method.Params is MethodParams
    built = Generic(nn.Linear(3, 2), None, Own(), _setup())
    assert built.params.weight == 1.0
    class Sub(Method[Narrower]):
        pass

    assert Sub.Params is Narrower
