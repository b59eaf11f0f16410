"""The data checks several methods share, each one ConfigError line naming the key to change. A method calls
them from `check_data` (before any teacher or student is trained) or from its constructor."""
from __future__ import annotations

from kdforge.data.types import DataBundle, DataSpec
from kdforge.errors import ConfigError


def require_validation(data: DataBundle, minimum: int, what: str) -> None:
    """A ConfigError unless `data` has a labeled validation split, distinct from test, of `minimum` samples."""
    if data.val is None or data.val.y is None:
        raise ConfigError(f"{what} is fitted on labeled validation data, and there is none: set data.val_fraction "
                          "above 0")
    if data.val is data.test:
        raise ConfigError(f"{what} is fitted on validation data, but data.val_fraction=0 makes the test split the "
                          "validation split; set data.val_fraction above 0")
    if len(data.val) < minimum:
        raise ConfigError(f"data: the validation split has {len(data.val)} labeled samples, too few to fit {what} "
                          f"(method.params.min_val_samples={minimum}); raise data.val_fraction or data.train_subset")


def require_unlabeled(data: DataBundle, method: str) -> None:
    """A ConfigError unless `data` has an unlabeled part (a label budget)."""
    if data.unlabeled is None:
        raise ConfigError(f"method {method!r} distills on unlabeled examples, but the data has none: set "
                          "data.label_budget.labeled (e.g. 0.05) to keep only some labels")


def require_graph(spec: DataSpec, what: str, hint: str = "") -> None:
    """A ConfigError unless the data is a graph: `what` needs one (`hint`: what to use instead)."""
    if spec.kind != "graph":
        raise ConfigError(f"{what} needs graph data, got {spec.kind!r} data{hint}")
