"""What every source shares: registration with its options model, file checks, and normalization."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor

from kdforge.options import validate_options
from kdforge.data.types import DataBundle, DataSpec, Split, all_finite
from kdforge.errors import DataError
from kdforge.registry import DATASETS

# (spec, train, test), the validation split carved by `data.build`; or a whole DataBundle for data sets with
# their own validation split (SST-2's dev set, Planetoid's public split).
Loaded = tuple[DataSpec, Split, Split] | DataBundle


class SourceParams(BaseModel):
    """Options of a source, read from `data.params`. Sources with options subclass it; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


@dataclass(frozen=True)
class Source:
    """A registered data set. Calling it validates `data.params` and returns (spec, train, test).

    `needs_root` tells `build` whether to look for the data folder at all, so that sources made in memory
    (digits, gaussian) work on a machine without any data files.
    """

    name: str
    load: Callable[[Path | None, Any], Loaded]
    params_model: type[SourceParams]
    needs_root: bool

    def __call__(self, root: Path | None, params: dict[str, Any]) -> Loaded:
        return self.load(root, validate_options(self.params_model, params, "data.params", f"data set {self.name!r}"))


def register(
    name: str, *, params: type[SourceParams] = SourceParams, needs_root: bool = True
) -> Callable[[Callable[[Path | None, Any], Loaded]], Callable[[Path | None, Any], Loaded]]:
    """Register `load(root, params)` in DATASETS under `name`, wrapped in a Source."""

    def decorator(load: Callable[[Path | None, Any], Loaded]) -> Callable[[Path | None, Any], Loaded]:
        DATASETS.register(name)(Source(name, load, params, needs_root))
        return load

    return decorator


def require(path: Path) -> Path:
    """`path` if it is a file, else a DataError that says which file is missing and how to provide it."""
    if not path.is_file():
        raise DataError(
            f"missing data file {path}; put the file there, or point $KDFORGE_DATA / data.root at the folder "
            "that holds the data files"
        )
    return path


def finish(name: str, train: Split, test: Split, num_classes: int) -> Loaded:
    """Standardize both splits with the train split's per-channel statistics and describe the data set.

    The statistics come from the whole official train split, before `build` carves out validation, so the
    input scale of a saved model does not depend on val_fraction, subsets or seeds.
    """
    x_train, x_test = (s.x.to(torch.float32, memory_format=torch.contiguous_format, copy=True) for s in (train, test))
    for part, x in (("train", x_train), ("test", x_test)):
        if len(x) == 0:
            raise DataError(f"data set {name!r}: its {part} split is empty; check the data files")
        if not all_finite(x):
            raise DataError(f"data set {name!r}: its {part} split holds NaN or infinite input values; "
                            "fix or re-create the data files")
    mean, std = _channel_stats(x_train)
    for x in (x_train, x_test):
        x.sub_(mean).div_(std)  # in place: CIFAR-10 as float32 is 0.7 GB
    spec = DataSpec(name=name, input_shape=tuple(x_train.shape[1:]), num_classes=num_classes)
    return spec, Split(x_train, train.y.long()), Split(x_test, test.y.long())


def _channel_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and std per channel (dim 1) for samples with channels; one pair for plain vectors (a single signal)."""
    dims = (0, *range(2, x.ndim)) if x.ndim >= 3 else tuple(range(x.ndim))
    var, mean = torch.var_mean(x, dim=dims, correction=0, keepdim=True)
    return mean, var.sqrt()
